"""One training worker's loop over plain objects: config, paths, and a `Session` that says who this
worker is, where the latest checkpoint is and how to report an epoch.

`ray_train.py` runs `run_training` inside Ray Train workers with a Ray-backed session; the in-process
runner (`num_workers=0`) uses `LocalSession`, which persists checkpoints itself. Randomness: the model
is initialised from `cfg.train.seed` (identical on every rank, DDP would broadcast it anyway), the
torch generator is reseeded from (seed, rank, epoch) at each epoch start and the dataset's
augmentation from (seed, epoch, index), so a resumed run continues exactly where it stopped. The epoch
reaches the dataset inside each sampled key `(epoch, index)`, not as dataset state: persistent
DataLoader worker processes hold their own copy of the dataset and would never see a `set_epoch`.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from vremd.config import Config, TrainConfig, config_to_dict
from vremd.data.dataset import PoseTrackCrops
from vremd.eval.posetrack_ap import MEAN_METRIC
from vremd.eval.predictions import describe_unpredicted
from vremd.model.heads import HEATMAP_STRIDE
from vremd.train.losses import heatmap_mse
from vremd.model.vremd import autocast, build_model
from vremd.train.checkpoints import LocalCheckpointStore, load_state, rng_state, save_state, set_rng_state
from vremd.train.tracking import Tracker
from vremd.train.validate import UNPREDICTED_TAG, Validation, ap_metrics, validate

__all__ = ["RunPaths", "Session", "LocalSession", "EpochSampler", "train_loader", "train_step", "run_training",
           "derive_seed", "RunState", "start_run", "optimise", "end_epoch", "THREADS_TAG"]

PREDICTIONS_DIR = "predictions"  # inside a checkpoint: the val predictions of that epoch
THREADS_TAG = "torch_threads"  # MLflow tag: intra-op threads of rank 0's loop (docs/determinism.md)


@dataclass(frozen=True)
class RunPaths:
    """Absolute locations a worker reads and writes (workers may run in another working directory)."""

    index_dir: str  # data/index with train.parquet / val.parquet
    gt_dir: str  # GT json folder of the val split (data/raw/<source>/annotations/val)
    run_dir: str  # this run's folder under the storage path (scratch and local checkpoints)
    tracking_uri: str = ""  # absolute MLflow URI; "" = no tracking
    mlflow_run_id: str = ""  # the run the driver created; rank 0 logs epoch metrics into it


class Session(Protocol):
    """What the loop needs from its runner (Ray Train or in-process)."""

    rank: int
    world_size: int
    device: torch.device

    def latest_state(self) -> dict[str, Any] | None: ...
    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None, epoch: int) -> None: ...


class LocalSession:
    """In-process runner: rank 0 of 1, checkpoints published to `<run_dir>/checkpoint_epoch_NNNN`."""

    def __init__(self, run_dir: Path, keep: int, device: torch.device) -> None:
        self.rank, self.world_size, self.device = 0, 1, device
        self.store = LocalCheckpointStore(run_dir, keep)

    def latest_state(self) -> dict[str, Any] | None:
        latest = self.store.latest()
        return load_state(latest) if latest is not None else None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None, epoch: int) -> None:
        if checkpoint_dir is not None:
            self.store.publish(checkpoint_dir, epoch)


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from `seed` and e.g. (rank, epoch), stable across processes and runs."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's share of a per-epoch permutation of `n` samples, optionally capped at `max_samples`.

    Yields `(epoch, index)` keys: the dataset draws the augmentation of `index` for that epoch. The
    permutation depends only on (seed, epoch); ranks take strided slices padded to equal length,
    so every DDP rank runs the same number of batches.
    """

    def __init__(self, n: int, max_samples: int, seed: int, rank: int, world_size: int) -> None:
        self.n, self.seed, self.rank, self.world_size, self.epoch = n, seed, rank, world_size, 0
        total = min(n, max_samples) if max_samples > 0 else n
        self.per_rank = math.ceil(total / world_size) if n else 0
        self.total = total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, 1_000_003, self.epoch))
        order = torch.randperm(self.n, generator=g)[: self.total].tolist()
        order += order[: self.per_rank * self.world_size - len(order)]  # pad so ranks split evenly
        return iter([(self.epoch, i) for i in order[self.rank :: self.world_size]])

    def __len__(self) -> int:
        return self.per_rank


def train_loader(train_set: PoseTrackCrops, t: TrainConfig, rank: int, world_size: int,
                 pin_memory: bool = False) -> tuple[DataLoader, EpochSampler]:
    """The training DataLoader of one rank and its sampler (call `sampler.set_epoch` before each epoch)."""
    sampler = EpochSampler(len(train_set), t.max_train_samples, t.seed, rank, world_size)
    per_worker_batch = max(1, t.batch_size // world_size)  # batch_size is the global batch
    loader = DataLoader(train_set, batch_size=per_worker_batch, sampler=sampler, num_workers=t.loader_workers,
                        persistent_workers=t.loader_workers > 0, pin_memory=pin_memory)
    return loader, sampler


def _train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, grad_clip: float,
                 trainable: list[nn.Parameter], device: torch.device, progress: bool, epoch: int) -> tuple[float, int]:
    """One pass over `loader`; return (sum of sample-weighted losses, samples seen) on this rank."""
    model.train()
    loss_sum, seen = 0.0, 0
    for batch in tqdm(loader, desc=f"epoch {epoch + 1}", disable=not progress, leave=False):
        loss_sum += train_step(model, batch, optimizer, grad_clip, trainable, device) * len(batch["frames"])
        seen += len(batch["frames"])
    return loss_sum, seen


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, grad_clip: float,
               trainable: list[nn.Parameter], device: torch.device) -> float:
    """One optimizer step on a loader batch (bf16 autocast on CUDA); return its loss."""
    frames = batch["frames"].to(device)  # (B, T, 3, H, W)
    target = batch["heatmaps"].to(device)  # (B, J, h, w)
    weight = batch["target_weight"].to(device)  # (B, J)
    with autocast(device):
        pred = model(frames)["heatmaps"]  # (B, J, h, w)
    return optimise(pred, target, weight, optimizer, trainable, grad_clip)


def optimise(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, optimizer: torch.optim.Optimizer,
             trainable: list[nn.Parameter], grad_clip: float) -> float:
    """One optimiser step on the heatmap MSE of `pred` (B, J, h, w) against `target` (B, J, h, w), `weight` (B, J)."""
    loss = heatmap_mse(pred.float(), target, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    return float(loss.detach())


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum `values` over DDP ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _should_validate(cfg: Config, epoch: int) -> bool:
    last = epoch + 1 == cfg.train.epochs
    return last or (cfg.train.val_every > 0 and (epoch + 1) % cfg.train.val_every == 0)


def run_training(cfg: Config, paths: RunPaths, session: Session, identity: dict[str, str],
                 progress: bool = False) -> list[dict[str, float]]:
    """Train for `cfg.train.epochs` (resuming from the session's latest checkpoint); return the metric history.

    Only rank 0 validates, writes checkpoints (with `identity`, the run's data/code/weights hashes) and
    logs to MLflow; every rank reports each epoch. The math runs on `identity["threads"]` torch threads.
    """
    t = cfg.train
    torch.set_num_threads(int(identity["threads"]))  # the count the run's identity (and name) promise
    run = start_run(cfg, session, paths)
    train_set = PoseTrackCrops(Path(paths.index_dir) / "train.parquet", cfg.augment, cfg.model.num_joints, t.seed,
                               heatmap_stride=HEATMAP_STRIDE)
    loader, sampler = train_loader(train_set, t, session.rank, session.world_size,
                                   pin_memory=session.device.type == "cuda")
    for epoch in range(run.start_epoch, t.epochs):
        torch.manual_seed(derive_seed(t.seed, session.rank, epoch))
        sampler.set_epoch(epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        loss_sum, seen = _train_epoch(run.model, loader, run.optimizer, t.grad_clip, run.trainable, session.device,
                                      progress and session.rank == 0, epoch)
        end_epoch(cfg, paths, session, run, identity, epoch, lr, loss_sum, seen, time.perf_counter() - start, progress)
    return run.history


@dataclass
class RunState:
    """One run's model, optimiser and LR schedule, restored from its session's latest checkpoint if any."""

    model: nn.Module  # on the session's device (DDP-wrapped when distributed)
    bare: nn.Module  # unwrapped, for evaluation and saving
    trainable: list[nn.Parameter]  # the frozen backbone stays out
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_epoch: int
    history: list[dict[str, float]]
    tracker: Tracker | None  # rank 0's MLflow run, None when untracked


def start_run(cfg: Config, session: Session, paths: RunPaths | None = None) -> RunState:
    """Build the model from `cfg.train.seed` (identical on every rank) and restore the session's latest state."""
    t = cfg.train
    if session.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = build_model(cfg.model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.lr_step_epochs), gamma=t.lr_gamma)
    start_epoch, history = 0, []
    state = session.latest_state()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        set_rng_state(state["rng"])
    model = session.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model
    tracker = None
    if session.rank == 0 and paths is not None and paths.tracking_uri:
        tracker = Tracker(paths.tracking_uri, paths.mlflow_run_id or None)
        # CPU numerics depend on the thread count: 1 and 2 threads train different weights
        tracker.set_tag(THREADS_TAG, str(torch.get_num_threads()))
    return RunState(model, bare, trainable, optimizer, scheduler, start_epoch, history, tracker)


def end_epoch(cfg: Config, paths: RunPaths, session: Session, run: RunState, identity: dict[str, str], epoch: int,
              lr: float, loss_sum: float, seen: int, elapsed: float, progress: bool = False) -> None:
    """Close `epoch` of `run`: step the LR, average the loss over ranks, and on rank 0 validate (when due),
    checkpoint (with `identity`, the run's data/code/weights hashes), log to MLflow and print; every rank reports.
    """
    run.scheduler.step()
    loss_sum, seen = _all_sum([loss_sum, float(seen)], session.device)  # over all ranks
    metrics = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "lr": lr, "samples_per_s": seen / max(elapsed, 1e-9)}
    with tempfile.TemporaryDirectory(prefix="vremd-ckpt-") as tmp:
        checkpoint_dir = None
        if session.rank == 0:
            if _should_validate(cfg, epoch):
                validation = _validate(cfg, paths, run.bare, session.device, Path(tmp) / PREDICTIONS_DIR, progress)
                metrics.update(ap_metrics(validation))
                _report_unpredicted(validation, run.tracker)
            run.history.append(metrics)
            save_state(tmp, {
                "model": run.bare.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "epoch": epoch + 1, "rng": rng_state(),
                "config": config_to_dict(cfg), "identity": dict(identity), "history": run.history,
            })
            checkpoint_dir = Path(tmp)
            if run.tracker is not None:
                run.tracker.log_epoch(metrics)  # step = epoch + 1
            print(_epoch_line(metrics, cfg.train.epochs), flush=True)
        else:
            run.history.append(metrics)
        session.report(metrics, checkpoint_dir, epoch + 1)


def _epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """One progress line per epoch: `epoch 3/8: loss 0.00412, lr 2e-03, 31.2 samples/s, val mean AP 10.6`."""
    line = (f"epoch {metrics['epoch']}/{epochs}: loss {metrics['loss']:.5f}, lr {metrics['lr']:.0e}, "
            f"{metrics['samples_per_s']:.1f} samples/s")
    return line + (f", val mean AP {metrics[MEAN_METRIC]:.1f}" if MEAN_METRIC in metrics else "")


def _report_unpredicted(validation: Validation, tracker: Tracker | None) -> None:
    """Name the GT persons that got no prediction (stdout and an MLflow tag): never silent, each costs recall."""
    if not validation.unpredicted:
        return
    named = describe_unpredicted(validation.unpredicted)
    print(named, flush=True)
    if tracker is not None:
        tracker.set_tag(UNPREDICTED_TAG, named)


def _validate(cfg: Config, paths: RunPaths, model: nn.Module, device: torch.device, pred_dir: Path,
              progress: bool) -> Validation:
    """Per-joint AP of `model` on the val index, predictions written to `pred_dir`."""
    index_path = Path(paths.index_dir) / "val.parquet"
    val_set = PoseTrackCrops(index_path, None, cfg.model.num_joints,
                             sigma_px=cfg.augment.sigma_px, heatmap_stride=HEATMAP_STRIDE)
    return validate(model, val_set, pd.read_parquet(index_path), Path(paths.gt_dir), pred_dir,
                    batch_size=max(1, cfg.train.batch_size), device=device, stride=HEATMAP_STRIDE,
                    flip_test=cfg.train.flip_test, protocol=cfg.eval.protocol, progress=progress,
                    detect=cfg.detect, joint_slots=cfg.model.annotated_joints)
