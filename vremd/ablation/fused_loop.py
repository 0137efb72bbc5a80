"""Fused trials: several rows' models train side by side on one frozen-backbone pass per batch.

Each row is the run its ordinary trial would be: its own folder `<runs_dir>/<run_name>`, LocalSession
checkpoints (the same files, config and identity), MLflow run and validation, all through
`vremd.train.loop`'s public pieces (`start_run`, `optimise`, `end_epoch`). What is shared is the batch
stream and the backbone forward:

- every row's model is built by `start_run` exactly as in its own trial (torch seeded from
  `train.seed`, the backbone built first), then checked to hold the same frozen backbone weights as
  the first row's, and points at that one backbone;
- one `EpochSampler` / DataLoader per epoch, reseeded as `run_training` does, so the batches and their
  augmentation (keyed by (seed, epoch, index)) are the ordinary trial's;
- per batch: tokens = backbone(frames) once (no autograd: frozen); then each row in turn runs
  `forward_tokens(tokens)`, its loss and its optimiser step, with its own torch RNG stream, saved and
  restored around its step, so a row draws the random numbers it would draw alone.

So each row's losses equal its ordinary trial's (tests/ablation/test_fused.py, to float tolerance).
Resume: a row continues from its own newest complete checkpoint; rows at different epochs (one
interrupted between two rows' checkpoint writes, or a finished twin adopted) take part from their own
next epoch on. `samples_per_s` of a fused row is the group's throughput (all rows per wall second).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from vremd.config import Config
from vremd.data.dataset import PoseTrackCrops
from vremd.errors import InputError
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import autocast
from vremd.train.loop import (LocalSession, RunPaths, RunState, derive_seed, end_epoch, optimise, start_run,
                              train_loader)
from vremd.train.identity import RunIdentity
from vremd.train.runs import FitResult, check_resumable, fit_result

__all__ = ["FusedRow", "FusedTrainingError", "run_fused_training", "fit_fused"]


class FusedTrainingError(InputError):
    """Rows that cannot share a backbone pass (different backbones, data or schedules)."""


@dataclass(frozen=True)
class FusedRow:
    """One row of a fused group: its config, paths (`run_dir` = its own training folder) and identity."""

    cfg: Config
    paths: RunPaths
    identity: dict[str, str]


class _RowRng:
    """A row's torch random stream (CPU, and the device's on CUDA), swapped in around the row's step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.state = self._get()

    def _get(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def __enter__(self) -> None:
        torch.set_rng_state(self.state[0])
        if self.state[1] is not None:
            torch.cuda.set_rng_state(self.state[1], self.device)

    def __exit__(self, *exc) -> None:
        self.state = self._get()


def _shared_keys(cfg: Config) -> tuple:
    return cfg.train, cfg.augment, cfg.data, cfg.crops, cfg.model.freeze_backbone


def _share_backbone(rows: Sequence[FusedRow], runs: Sequence[RunState]) -> torch.nn.Module:
    """Check that every row holds the first row's frozen backbone (weights equal) and point all at it."""
    first = rows[0].cfg
    if not first.model.freeze_backbone:
        raise FusedTrainingError("fused trials need model.freeze_backbone = true: a trained backbone is per row")
    reference = runs[0].bare.backbone
    ref_state = reference.state_dict()
    for row, run in zip(rows[1:], runs[1:]):
        if _shared_keys(row.cfg) != _shared_keys(first) or row.identity != rows[0].identity:
            raise FusedTrainingError(f"{row.paths.run_dir}: data, augmentation, schedule or identity differ from "
                                     f"{rows[0].paths.run_dir}'s; these rows cannot share batches")
        state = run.bare.backbone.state_dict()
        if state.keys() != ref_state.keys() or any(not torch.equal(state[k], ref_state[k]) for k in ref_state):
            raise FusedTrainingError(f"{row.paths.run_dir}: its backbone weights differ from "
                                     f"{rows[0].paths.run_dir}'s; these rows cannot share one backbone pass")
        run.bare.backbone = reference  # one copy in memory; the state_dict (and checkpoint) is unchanged
    return reference


def run_fused_training(rows: Sequence[FusedRow], device: torch.device,
                       progress: bool = False) -> list[list[dict[str, float]]]:
    """Train every row for `cfg.train.epochs` (each resuming from its own newest checkpoint); their histories."""
    torch.set_num_threads(int(rows[0].identity["threads"]))  # a group shares its identity: as each row alone
    sessions = [LocalSession(Path(r.paths.run_dir), r.cfg.train.checkpoint_keep, device) for r in rows]
    runs = [start_run(r.cfg, s, r.paths) for r, s in zip(rows, sessions)]
    backbone = _share_backbone(rows, runs)
    cfg, t = rows[0].cfg, rows[0].cfg.train
    train_set = PoseTrackCrops(Path(rows[0].paths.index_dir) / "train.parquet", cfg.augment, cfg.model.num_joints,
                               t.seed, heatmap_stride=HEATMAP_STRIDE)
    loader, sampler = train_loader(train_set, t, 0, 1, pin_memory=device.type == "cuda")
    for epoch in range(min((run.start_epoch for run in runs), default=t.epochs), t.epochs):
        active = [i for i, run in enumerate(runs) if run.start_epoch <= epoch]  # a row ahead waits for the others
        torch.manual_seed(derive_seed(t.seed, 0, epoch))  # as run_training, rank 0 of 1
        sampler.set_epoch(epoch)
        lrs = {i: runs[i].optimizer.param_groups[0]["lr"] for i in active}
        for i in active:
            runs[i].model.train()
        batches = iter(loader)  # draws the loader's base seed from the generator, as the ordinary loop does
        rngs = {i: _RowRng(device) for i in active}  # each row continues from the same state
        losses, seen, start = {i: 0.0 for i in active}, 0, time.perf_counter()
        for batch in tqdm(batches, desc=f"epoch {epoch + 1} ({len(active)} rows)", disable=not progress, leave=False):
            frames = batch["frames"].to(device)  # (B, T, 3, H, W)
            target = batch["heatmaps"].to(device)  # (B, J, h, w)
            weight = batch["target_weight"].to(device)  # (B, J)
            with autocast(device):
                tokens = backbone(frames)  # (B, T, N, E): frozen, no autograd; once for every row
            for i in active:
                with rngs[i]:
                    with autocast(device):
                        pred = runs[i].model.forward_tokens(tokens)["heatmaps"]  # (B, J, h, w)
                    losses[i] += optimise(pred, target, weight, runs[i].optimizer, runs[i].trainable,
                                          t.grad_clip) * len(frames)
            seen += len(frames)
        elapsed = time.perf_counter() - start
        for i in active:
            with rngs[i]:  # the checkpoint records the row's own generator state
                end_epoch(rows[i].cfg, rows[i].paths, sessions[i], runs[i], rows[i].identity, epoch, lrs[i],
                          losses[i], seen, elapsed, progress)
    return [run.history for run in runs]


def fit_fused(rows: Sequence[FusedRow], progress: bool = False) -> list[FitResult]:
    """Train the rows not yet finished fused (each checked against its folder's checkpoints first, as `fit`
    does: another configuration or identity there is refused); every row's final checkpoint and history."""
    todo = []
    for row in rows:
        state = check_resumable(row.cfg, Path(row.paths.run_dir), RunIdentity(**row.identity))
        if state is None or int(state["epoch"]) < row.cfg.train.epochs:
            todo.append(row)
    if todo:
        t = todo[0].cfg.train
        device = torch.device("cuda" if t.use_gpu and torch.cuda.is_available() else "cpu")
        run_fused_training(todo, device, progress)
    return [fit_result(Path(row.paths.run_dir)) for row in rows]
