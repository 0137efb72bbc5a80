"""Rows that repeat across tables train once: a trial takes another table's finished, identical training.

Table 4's `VREMD`, table 5's `both masks` and table 6's `DCA+BS` are the same configuration, so
their trainings at the same seed are the same run. A trial's training folder is named
`<row>-<training id>` (`TrialSpec.training_id`: seed plus a hash of every key that changes training
and of the `RunIdentity`: data, code and pretrained weights),
and before training, `adopt_finished_twin` looks for a finished folder with that id under any
`*-runs/` folder of the same Tune storage. If one exists, and this trial has no checkpoint of its own,
its final checkpoint is hard-linked (copied where links fail) into this trial's folder; `fit` then
finds the run complete and trains nothing. The configuration and identity stored in that checkpoint are
compared key by key (`check_resumable`), so a hash collision or an edited folder is never adopted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vremd.config import Config
from vremd.model.checkpoint import CheckpointError
from vremd.train.identity import RunIdentity
from vremd.train.checkpoints import latest_checkpoint
from vremd.train.runs import RunMismatchError, check_resumable

__all__ = ["AdoptedTraining", "adopt_finished_twin"]


@dataclass(frozen=True)
class AdoptedTraining:
    """A finished training taken from another table: where it came from and its per-epoch history."""

    source: Path  # the other table's training folder
    history: list[dict[str, Any]]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # checkpoints can be GBs at paper size: share the bytes
    except OSError:
        shutil.copy2(src, dst)


def _finished_state(cfg: Config, identity: RunIdentity, run_dir: Path) -> dict[str, Any] | None:
    """The state of `run_dir`'s newest checkpoint if it is `cfg` on `identity` trained for all epochs, else None."""
    try:
        state = check_resumable(cfg, run_dir, identity)
    except (RunMismatchError, CheckpointError, OSError):
        return None
    return state if state is not None and int(state["epoch"]) == cfg.train.epochs else None


def adopt_finished_twin(cfg: Config, identity: RunIdentity, runs_dir: Path, run_name: str,
                        training_id: str) -> AdoptedTraining | None:
    """Link a finished twin's final checkpoint into `<runs_dir>/<run_name>`; None when there is none.

    A trial that already has a checkpoint of its own keeps it (it resumes or is finished). The link
    is made in a hidden folder and renamed into place, so an interrupted adoption leaves no
    half-checkpoint that `latest_checkpoint` could pick up.
    """
    runs_dir, own = Path(runs_dir), Path(runs_dir) / run_name
    if latest_checkpoint(own) is not None:
        return None
    for twin in sorted(runs_dir.parent.glob(f"*-runs/*-{training_id}")):
        if twin.resolve() == own.resolve() or not twin.is_dir():
            continue
        state = _finished_state(cfg, identity, twin)
        if state is None:
            continue
        final = latest_checkpoint(twin)
        staging = own / f".adopting-{final.name}"
        shutil.rmtree(staging, ignore_errors=True)
        own.mkdir(parents=True, exist_ok=True)
        shutil.copytree(final, staging, copy_function=_link_or_copy)
        os.replace(staging, own / final.name)
        return AdoptedTraining(twin, list(state["history"]))
    return None
