"""Ray Train (Train V2) driver: wrap `loop.run_training` in a `TorchTrainer`, resume runs by name.

The config crosses to the workers as `config_to_dict(cfg)` and is rebuilt on the worker's first
line. Checkpoints go to `<storage_path>/<run_name>/checkpoint_epoch_NNNN`; re-running the same
run name resumes from the newest one (Train V2 restores a run whose name and storage path match),
and a worker that dies mid-epoch is restarted from it up to `train.max_failures` times.
`train.num_workers = 0` runs the same loop in this process, with the same checkpoint layout.
Every checkpoint records the run's `RunIdentity` (data, code, lock file and weights hashes, and the torch
thread count, decided once on the driver): a run folder trained on other inputs is never resumed or returned
(`check_resumable`), and that check runs before an MLflow run is opened or a folder written.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from vremd.atomic import atomic_write_text
from vremd.config import Config, config_from_dict, config_to_dict, flatten
from vremd.data.posetrack import SPLITS
from vremd.eval.posetrack_ap import MEAN_METRIC, METRIC_NAMES
from vremd.train.identity import RunIdentity, run_identity
from vremd.model.checkpoint import CheckpointError
from vremd.train.checkpoints import load_state
from vremd.eval.tables import write_tables
from vremd.train.loop import PREDICTIONS_DIR, LocalSession, RunPaths, run_training
from vremd.train.plots import plot_training_curve, pose_overlays
from vremd.train.checkpoints import checkpoint_dir_name, latest_checkpoint
from vremd.train.runs import FitResult, check_resumable, fit_result
from vremd.train.tracking import Tracker, run_tags

__all__ = ["TrainingWorkerError", "TrainOutcome", "fit", "train_and_track", "train_worker", "RaySession", "init_ray",
           "cpus_per_worker", "training_threads", "open_tracking", "close_tracking"]

WORKER_ERROR_FILE = "worker_error.txt"  # in the run folder: the traceback of the last failed worker


class TrainingWorkerError(RuntimeError):
    """A Ray Train worker raised; the message is the worker's own last line, its traceback is in a file."""


class RaySession:
    """The loop's view of a Ray Train worker: rank, device, checkpoint restore and report."""

    def __init__(self, run_dir: Path) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.run_dir = Path(run_dir)

    def latest_state(self) -> dict[str, Any] | None:
        """The newest state: Ray's recorded checkpoint, or a newer complete one in the run folder.

        A driver killed after a checkpoint reached the run folder but before Ray recorded it would
        otherwise restart from an older epoch and overwrite that checkpoint.
        """
        states = []
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                states.append(load_state(directory))
        on_disk = latest_checkpoint(self.run_dir)
        if on_disk is not None:
            try:
                states.append(load_state(on_disk))
            except CheckpointError:  # an interrupted copy: Ray's recorded one is the newest whole state
                pass
        return max(states, key=lambda state: int(state["epoch"]), default=None)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)  # to the worker's device; DDP when world_size > 1

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None, epoch: int) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name(epoch))


def init_ray(address: str | None) -> None:
    """Join the Ray cluster at `address`, or start a private local Ray when it is None, empty or "local".

    Never `ray.init()` with no address: that joins whatever cluster a past `ray start` recorded on
    this machine, and hangs if that cluster is gone.
    """
    if address and address != "local":
        ray.init(address=address)
    else:  # ERROR level: Ray's no-dashboard state-API warnings would drown the epoch lines
        ray.init(address="local", include_dashboard=False, logging_config=ray.LoggingConfig(log_level="ERROR"))


_RAY_DIR = str(Path(ray.__file__).parent)


class _RayInfoFilter(logging.Filter):
    """Drops INFO (and lower) records logged from Ray's own source files; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(_RAY_DIR)


def quiet_ray_console() -> None:
    """Hide Ray's per-report INFO lines on this worker's console (Ray's session log files keep them).

    Ray Train V2 logs "Reporting training result ..." (a logger named by its file path, so
    `LoggingConfig.log_level`, which filters `ray.train.*` names, misses it) and "Checkpoint successfully
    created ..." on every worker at every report; Ray forwards the worker's console to the driver's.
    """
    for handler in [*logging.getLogger().handlers, *logging.getLogger("ray.train").handlers]:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_RayInfoFilter())


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point of one worker: rebuild the config, then run the shared loop."""
    if not loop_config.get("ray_logs", False):
        quiet_ray_console()
    cfg = config_from_dict(loop_config["config"])
    paths = RunPaths(**loop_config["paths"])
    # DDP's bucket views of depthwise-conv grads: a performance note, printed on every rank each epoch
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    run_training(cfg, paths, RaySession(Path(paths.run_dir)), loop_config["identity"],
                 progress=loop_config.get("progress", False))


def cpus_per_worker(node_cpus: list[float], num_workers: int) -> float:
    """The most whole CPUs each of `num_workers` workers can have so that all of them fit on the nodes.

    A worker runs on one node, so a share of the cluster total can be unschedulable: two 8-CPU nodes and
    one worker give 8, not 16; three workers give 4 (two fit on each node), not 5 (one per node).
    """
    workers = max(1, num_workers)
    for share in range(int(max(node_cpus, default=1.0)), 0, -1):
        if sum(int(cpus // share) for cpus in node_cpus) >= workers:
            return float(share)
    return 1.0  # fewer CPUs than workers: Ray waits for capacity, as it would for any request


def training_threads(cfg: Config, in_process_threads: int | None = None) -> int:
    """The torch CPU threads the training of `cfg` runs its math on, part of its `RunIdentity`.

    In-process (`train.num_workers` 0): `in_process_threads` (a Tune trial's CPUs) or this process's count.
    Ray Train workers: one with a GPU each, else the CPUs each worker gets (`cpus_per_worker` over the
    cluster's live nodes: needs `ray.init` beforehand). `fit` makes the training use exactly this count.
    """
    if cfg.train.num_workers == 0:
        return max(1, int(in_process_threads if in_process_threads is not None else torch.get_num_threads()))
    if cfg.train.use_gpu:
        return 1
    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(cpus_per_worker(nodes, cfg.train.num_workers)))


def _worker_error(error: ray.train.TrainingFailedError, run_dir: Path) -> TrainingWorkerError:
    """One line from a failed Ray Train run: the first failing rank's exception; Ray's report goes to a file."""
    failures = getattr(error, "worker_failures", None) or {}  # rank -> the worker's exception
    log = atomic_write_text(run_dir / WORKER_ERROR_FILE, f"{error}\n")  # holds the worker's traceback
    if not failures:
        return TrainingWorkerError(f"Ray Train: {str(error).strip().splitlines()[-1]} (details in {log})")
    rank = min(failures)
    message = str(failures[rank]).strip().splitlines()
    return TrainingWorkerError(f"worker rank {rank}: {type(failures[rank]).__name__}: "
                               f"{message[0] if message else ''} (traceback in {log})")


def fit(cfg: Config, paths: RunPaths, storage_path: Path, run_name: str, progress: bool = False,
        identity: RunIdentity | None = None, ray_logs: bool = False) -> FitResult:
    """Train (or resume) the run `<storage_path>/<run_name>`; return its final checkpoint and history.

    `paths.run_dir` is ignored and replaced by that folder. `identity` defaults to the one of `paths`'
    index and GT with the code imported here and `training_threads(cfg)`; the training runs on its thread
    count. Needs `ray.init` beforehand unless `cfg.train.num_workers == 0`.
    `ray_logs` keeps Ray Train's per-epoch INFO lines on the console (hidden by default).
    """
    run_dir = Path(storage_path).resolve() / run_name
    paths = dataclasses.replace(paths, run_dir=str(run_dir))
    identity = identity or run_identity(cfg, Path(paths.index_dir), Path(paths.gt_dir),
                                        threads=training_threads(cfg))
    state = check_resumable(cfg, run_dir, identity)
    if state is None or int(state["epoch"]) < cfg.train.epochs:
        if cfg.train.num_workers == 0:
            device = torch.device("cuda" if cfg.train.use_gpu and torch.cuda.is_available() else "cpu")
            run_training(cfg, paths, LocalSession(run_dir, cfg.train.checkpoint_keep, device), identity.as_dict(),
                         progress)
        else:
            trainer = TorchTrainer(
                train_worker,
                train_loop_config={"config": config_to_dict(cfg), "paths": dataclasses.asdict(paths),
                                   "identity": identity.as_dict(), "progress": progress, "ray_logs": ray_logs},
                scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                             resources_per_worker={"CPU": float(identity.threads)}),
                run_config=RunConfig(
                    name=run_name, storage_path=str(Path(storage_path).resolve()),
                    checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoint_keep),
                    failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                    logging_config=LoggingConfig(log_level="CRITICAL"),  # a worker error: one line, not 5 tracebacks
                ),
            )
            try:
                trainer.fit()
            except ray.train.TrainingFailedError as exc:
                raise _worker_error(exc, run_dir) from None
    return fit_result(run_dir)


@dataclass(frozen=True)
class TrainOutcome:
    """A finished training: the fit result, the MLflow run id (None if untracked) and any tracking failure."""

    fit: FitResult
    mlflow_run_id: str | None
    tracking_failure: str | None


def train_and_track(cfg: Config, paths: RunPaths, storage_path: Path, run_name: str, tracking_uri: str,
                    repo_dir: Path, dataset_dir: Path, params_path: Path | None = None,
                    progress: bool = False, identity: RunIdentity | None = None,
                    ray_logs: bool = False) -> TrainOutcome:
    """Open (or reopen, on resume) the MLflow run, fit, then log the run's tables, figures and predictions.

    The MLflow run id is kept in `<run_dir>/mlflow_run_id`, so resuming a run name continues its MLflow run
    (`open_tracking`: a run trained further under other settings gets a new one). Its tags record the data,
    code and weights hashes of `identity` (default: computed from `paths`). A run folder that may not be
    resumed is refused (`check_resumable`) before its MLflow run is reopened or anything is written.
    """
    identity = identity or run_identity(cfg, Path(paths.index_dir), Path(paths.gt_dir),
                                        threads=training_threads(cfg))
    state = check_resumable(cfg, Path(storage_path).resolve() / run_name, identity)
    tracker, paths = open_tracking(cfg, paths, storage_path, run_name, tracking_uri, repo_dir, identity, state)
    try:
        result = fit(cfg, paths, storage_path, run_name, progress, identity, ray_logs)
    except BaseException:
        tracker.finish("FAILED")
        raise
    return close_tracking(tracker, cfg, result, Path(paths.gt_dir), dataset_dir, params_path)


def open_tracking(cfg: Config, paths: RunPaths, storage_path: Path, run_name: str, tracking_uri: str, repo_dir: Path,
                  identity: RunIdentity, state: dict[str, Any] | None = None) -> tuple[Tracker, RunPaths]:
    """Open (or reopen by `<run_dir>/mlflow_run_id`) the run's MLflow run; `paths` with its URI and run id.

    Call it after `check_resumable` has accepted the run folder; `state` is the newest state it returned. A
    run trained further under other params (more `train.epochs`) gets a new MLflow run that continues the
    recorded one (`Tracker.start`), with the epochs already trained (`state`'s history) logged to it.
    """
    run_dir = Path(storage_path).resolve() / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = run_tags(cfg, repo_dir, Path(paths.index_dir), identity)
    tracker = Tracker.start_or_resume(run_dir / "mlflow_run_id", tracking_uri, cfg.tracking.experiment, run_name,
                                      flatten(cfg), tags)
    if tracker.continues is not None and state is not None:  # its curve starts at epoch 1, as its model does
        for entry in state["history"]:
            tracker.log_epoch(entry)
    sizes = {split: pq.read_metadata(Path(paths.index_dir) / f"{split}.parquet").num_rows for split in SPLITS}
    tracker.log_dataset(cfg.data.source, tags["dvc_data_hash"], Path(paths.index_dir), sizes)  # kept once per run
    return tracker, dataclasses.replace(paths, tracking_uri=tracking_uri if tracker.active else "",
                                        mlflow_run_id=tracker.run_id or "")


def close_tracking(tracker: Tracker, cfg: Config, result: FitResult, gt_dir: Path, dataset_dir: Path,
                   params_path: Path | None = None) -> TrainOutcome:
    """Log a finished fit's tables, figures and predictions to its MLflow run and finish that run."""
    _log_artifacts(tracker, cfg, result, gt_dir, dataset_dir, params_path)
    tracker.finish("FINISHED")
    return TrainOutcome(result, tracker.run_id, tracker.failure)


def _log_artifacts(tracker: Tracker, cfg: Config, result: FitResult, gt_dir: Path, dataset_dir: Path,
                   params_path: Path | None) -> None:
    """Per-joint tables + AP bar chart, training curve, pose overlays, final predictions, params.yaml."""
    if not tracker.active:
        return
    last_ap = next((h for h in reversed(result.history) if MEAN_METRIC in h), None)
    with tempfile.TemporaryDirectory(prefix="vremd-artifacts-") as tmp:
        tmp = Path(tmp)
        if last_ap is not None:
            ours = {col: last_ap[name] for col, name in METRIC_NAMES.items()}
            write_tables(tmp / "tables", ours, None, stem="per_joint", title=f"Per-joint AP ({cfg.data.source} val)")
        plot_training_curve(result.history, tmp / "figures" / "training_curve.png")
        pred_dir = result.checkpoint_dir / PREDICTIONS_DIR
        if pred_dir.is_dir():
            pose_overlays(gt_dir, pred_dir, dataset_dir, tmp / "overlays", count=4)
            tracker.log_artifact(pred_dir, "predictions")
        for sub in ("tables", "figures", "overlays"):
            if (tmp / sub).is_dir():
                tracker.log_artifact(tmp / sub, sub)
    if params_path is not None and Path(params_path).is_file():
        tracker.log_artifact(Path(params_path))
