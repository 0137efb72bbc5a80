"""Concurrent writers against one tracking store: does every metric arrive, and how fast?

`concurrent_writers(uri, writers=8, epochs=20, metrics_per_epoch=10)` starts `writers` processes that,
released together, each open a run through `Tracker` (the path training and Tune trials use) and log
`epochs` batches of `metrics_per_epoch` metrics, one batch per step as the training loop does. Then it
reads every metric history back and counts what arrived, value by value. Used by
tests/tracking_server/test_tracking_server.py and benchmarks/tracking_stores.py.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

__all__ = ["LoadResult", "concurrent_writers", "expected_value"]


@dataclass(frozen=True)
class LoadResult:
    """What `concurrent_writers` logged and found: counts, wall time of the logging, each writer's failure."""

    expected: int  # metric values the writers logged
    found: int  # values read back with the expected (step, value)
    seconds: float  # from the writers' release, their runs open, to the last writer's end
    failures: tuple[str, ...]  # `Tracker.failure` of the writers that gave up
    retries: int  # transient store errors the writers' `Tracker`s retried past

    @property
    def metrics_per_s(self) -> float:
        return self.expected / self.seconds


def expected_value(writer: int, epoch: int, metric: int) -> float:
    """The value writer `writer` logs for metric `m<metric>` at step `epoch` (distinct per triple)."""
    return writer * 1e6 + epoch * 1e3 + metric


def _writer(uri: str, experiment: str, writer: int, epochs: int, metrics_per_epoch: int, barrier, out) -> None:
    from vremd.train.tracking import Tracker

    barrier.wait()  # all start their runs together (a new store's schema is created by the first)
    tracker = Tracker.start(uri, experiment, f"writer{writer}", {"writer": writer}, {"load_test": "true"})
    barrier.wait()  # and log together: the clock measures concurrent logging only
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        tracker.log_metrics({f"m{m}": expected_value(writer, epoch, m) for m in range(metrics_per_epoch)}, step=epoch)
    tracker.finish()
    out.put((writer, tracker.run_id, tracker.failure, start, time.perf_counter(), tracker.retries))


def concurrent_writers(uri: str, writers: int = 8, epochs: int = 20, metrics_per_epoch: int = 10,
                       experiment: str = "vremd-load", timeout_s: float = 300) -> LoadResult:
    """Run the writers against `uri` (a sqlite:// or http:// tracking URI) and count what arrived."""
    from mlflow.tracking import MlflowClient

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited MLflow clients or sockets
    barrier, out = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, experiment, w, epochs, metrics_per_epoch, barrier, out))
             for w in range(writers)]
    for p in procs:
        p.start()
    try:
        reports = [out.get(timeout=timeout_s) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    client = MlflowClient(tracking_uri=uri)
    found = 0
    for writer, run_id, *_ in reports:
        if run_id is None:
            continue
        for m in range(metrics_per_epoch):
            history = {(h.step, h.value) for h in client.get_metric_history(run_id, f"m{m}")}
            found += sum((e, expected_value(writer, e, m)) in history for e in range(1, epochs + 1))
    seconds = max(r[4] for r in reports) - min(r[3] for r in reports)
    return LoadResult(writers * epochs * metrics_per_epoch, found, seconds,
                      tuple(r[2] for r in reports if r[2] is not None), sum(r[5] for r in reports))
