"""The rules of a run folder, without Ray: where its checkpoints go, which is the newest, whether it may resume.

`<storage_path>/<run_name>/checkpoint_epoch_NNNN` holds one epoch's state (`vremd.train.checkpoints`). A run
folder is resumed (or returned, when finished) only if its newest state was trained with the same
result-changing config (`identity.training_keys`) and the same `RunIdentity`; otherwise `RunMismatchError`.
The Ray driver (`ray_train.py`), the in-process fused trainer and the ablation's twin reuse all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vremd.config import Config, config_to_dict
from vremd.errors import InputError
from vremd.model.checkpoint import CheckpointError
from vremd.train.checkpoints import latest_checkpoint, load_state
from vremd.train.identity import RunIdentity, identity_differences, training_keys

__all__ = ["RunMismatchError", "FitResult", "check_resumable", "fit_result"]


class RunMismatchError(InputError):
    """A run folder holds checkpoints of another configuration, data, code or weights; the message lists what differs."""


@dataclass(frozen=True)
class FitResult:
    """What a finished run left: its folder, final checkpoint folder, loaded state and history."""

    run_dir: Path
    checkpoint_dir: Path
    state: dict[str, Any]
    history: list[dict[str, float]]


def check_resumable(cfg: Config, run_dir: Path, identity: RunIdentity) -> dict[str, Any] | None:
    """The latest state in `run_dir` if any; raise `RunMismatchError` if it was trained with another config,
    other data, code, lock file, thread count or pretrained weights (`identity`). It only reads: callers run it
    before they reopen the run's MLflow run or write to its folder.

    Only `train.epochs` (and when to validate) may differ: a run can be extended, never shortened.
    """
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    state = load_state(latest, mmap=True)  # checked before and again in `fit`: tensors are not read here
    extendable = {"train.epochs", "train.val_every", "train.flip_test"}
    ours, theirs = training_keys(config_to_dict(cfg)), training_keys(state["config"])
    diff = [f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in sorted(ours.keys() | theirs.keys())
            if ours.get(k) != theirs.get(k) and k not in extendable]
    diff += identity_differences(state.get("identity"), identity)
    if diff:
        shown = ", ".join(diff[:8])
        raise RunMismatchError(
            f"{run_dir}: holds checkpoints of a different configuration or inputs ({shown}); "
            "choose another run name or delete that folder to start afresh"
        )
    if int(state["epoch"]) > cfg.train.epochs:
        raise RunMismatchError(f"{latest}: already trained {state['epoch']} epochs, more than train.epochs = "
                               f"{cfg.train.epochs}; choose another run name")
    return state


def fit_result(run_dir: Path) -> FitResult:
    """The `FitResult` of a run folder whose training finished: its newest complete checkpoint."""
    final = latest_checkpoint(run_dir)
    if final is None:
        raise CheckpointError(f"{run_dir}: training finished without writing a checkpoint")
    state = load_state(final)
    return FitResult(run_dir=run_dir, checkpoint_dir=final, state=state, history=list(state["history"]))
