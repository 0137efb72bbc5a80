"""Ray Train's per-report INFO lines are dropped from a worker's console handlers, nothing else is.

The records are built as Ray's own loggers build them (`pathname` inside the ray package, one logger named
by its file path, as ray/train/v2/_internal/execution/context.py does), and go through real handlers.
"""

import io
import logging
from pathlib import Path

import ray

from vremd.train.ray_train import quiet_ray_console

RAY_FILE = str(Path(ray.__file__).parent / "train" / "v2" / "_internal" / "execution" / "context.py")


def _record(name: str, level: int, pathname: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, msg, None, None)


def test_ray_info_lines_leave_the_console_but_not_the_log_file(tmp_path):
    root = logging.getLogger()
    console, log_file = logging.StreamHandler(io.StringIO()), logging.FileHandler(tmp_path / "session.log")
    root.addHandler(console)
    root.addHandler(log_file)
    try:
        quiet_ray_console()
        records = [
            _record(RAY_FILE, logging.INFO, RAY_FILE, "Reporting training result 1: TrainingReport(...)"),
            _record("ray.train.v2._internal.execution.storage", logging.INFO, RAY_FILE,
                    "Checkpoint successfully created at: Checkpoint(...)"),
            _record(RAY_FILE, logging.WARNING, RAY_FILE, "a Ray warning"),
            _record("vremd", logging.INFO, "/work/vremd/train/loop.py", "epoch 1: loss 0.1"),
        ]
        for record in records:
            for handler in (console, log_file):
                if handler.filter(record):
                    handler.emit(record)
        log_file.flush()
        shown = console.stream.getvalue()
        assert "Reporting training result" not in shown and "Checkpoint successfully created" not in shown
        assert "a Ray warning" in shown and "epoch 1: loss 0.1" in shown
        kept = (tmp_path / "session.log").read_text()
        assert "Reporting training result" in kept and "Checkpoint successfully created" in kept
    finally:
        for handler in root.handlers:  # leave the other tests' handlers (pytest's own) as they were
            handler.filters = [f for f in handler.filters if type(f).__name__ != "_RayInfoFilter"]
        root.removeHandler(console)
        root.removeHandler(log_file)
        log_file.close()
