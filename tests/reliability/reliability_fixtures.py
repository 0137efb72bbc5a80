"""Helpers shared by the reliability tests: a ready MLflow store and stage subprocesses (params files and data:
tests/conftest.py's `write_params` and `smoke_data`)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import tempfile
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def _mlflow_template() -> Path:
    """An empty, fully migrated MLflow SQLite store, created once per test session."""
    from mlflow.tracking import MlflowClient

    path = Path(tempfile.mkdtemp(prefix="vremd-mlflow-template-")) / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates the tables
    return path


def copy_mlflow_db(root: Path) -> Path:
    """Put a ready MLflow store at `root/mlflow.db` (saves each training subprocess the schema migration)."""
    target = Path(root) / "mlflow.db"
    shutil.copy(_mlflow_template(), target)
    return target


def stage_env(**extra: str) -> dict[str, str]:
    """Environment of a stage subprocess: no telemetry, no progress bars, never someone else's Ray cluster.

    RAY_ADDRESS=local: `ray.init()` without an address would join the cluster a `ray start` on this
    machine last recorded in /tmp/ray/ray_current_cluster (and hang if that one is dead).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_ADDRESS="local", RAY_USAGE_STATS_ENABLED="0", DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    env.update(extra)
    return env


def train_argv(root: Path, params: Path, run_name: str = "fault") -> list[str]:
    """The `pipeline/train.py` command a test runs (from `root`, which holds raw/ and index/)."""
    return [sys.executable, str(REPO / "pipeline" / "train.py"), "--params", str(params), "--index", "index",
            "--raw", "raw", "--out", "models", "--curve", "metrics/train_curve.csv", "--storage", "ray_results",
            "--run-name", run_name, "--no-progress"]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None, timeout_s: float, what: str,
             poll_s: float = 0.01) -> None:
    """Poll `condition` until true; fail if `proc` exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            log = Path(proc.args[proc.args.index("--params") + 1]).parent / "train.log" if "--params" in proc.args else None
            out = proc.stdout.read() if proc.stdout else (log.read_text() if log and log.is_file() else "")
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{out[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a subprocess started with `start_new_session=True` and everything in its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
