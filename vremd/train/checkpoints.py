"""Training checkpoints on disk: one `state.pt` per checkpoint directory, written atomically.

A checkpoint holds the model, optimizer and scheduler states, the finished epoch, the RNG states,
the config (as `config_to_dict`) and the per-epoch metric history. Files are written to a temp name
and renamed, so a failed write (disk full, no permission) raises `CheckpointWriteError` and leaves
the previous checkpoint intact. Loading uses `weights_only=True`: states hold only tensors and
plain Python values; an unusable file raises `vremd.model.checkpoint.CheckpointError` naming it.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vremd.model.checkpoint import CheckpointWriteError, read_weights

__all__ = [
    "STATE_FILE", "CheckpointWriteError", "atomic_torch_save", "save_state",
    "load_state", "rng_state", "set_rng_state", "checkpoint_dir_name", "latest_checkpoint", "LocalCheckpointStore",
]

STATE_FILE = "state.pt"


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """`torch.save(obj)` to a temp file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch wraps some write errors in RuntimeError
        raise CheckpointWriteError(
            f"{path}: cannot write checkpoint ({exc}); the previous checkpoint is kept"
        ) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the folder itself is unusable: nothing was left there
            pass
    return path


def save_state(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` as `<directory>/state.pt` atomically; return the file path."""
    return atomic_torch_save(state, Path(directory) / STATE_FILE)


def load_state(directory: Path, mmap: bool = False) -> dict[str, Any]:
    """Read `<directory>/state.pt` (weights only; tensors memory-mapped with `mmap`); `CheckpointError` when it is
    missing or unreadable."""
    return read_weights(Path(directory) / STATE_FILE, mmap=mmap)


def checkpoint_dir_name(epoch: int) -> str:
    """The folder name of epoch `epoch`'s checkpoint in a run folder: `checkpoint_epoch_NNNN`."""
    return f"checkpoint_epoch_{epoch:04d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest `checkpoint_*` folder in `run_dir` that holds a complete state file, or None."""
    found = sorted(p for p in Path(run_dir).glob("checkpoint_*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """The process-wide torch / numpy / python RNG states as plain values (weights-only loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class LocalCheckpointStore:
    """Checkpoint directories `checkpoint_epoch_NNNN` under one run folder (the in-process runner).

    Ray Train persists checkpoints itself; this store gives `num_workers=0` runs the same
    behaviour: atomic directory publish, keep the newest `keep`, resume from the latest.
    """

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.run_dir = Path(run_dir)
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        """The newest complete checkpoint directory, or None."""
        return latest_checkpoint(self.run_dir)

    def publish(self, source_dir: Path, epoch: int) -> Path:
        """Copy `source_dir` in as the checkpoint of `epoch` (atomic rename), drop old ones."""
        final = self.run_dir / checkpoint_dir_name(epoch)
        staging = self.run_dir / f".staging_{final.name}_{os.getpid()}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source_dir, staging)
            # copytree gives it the mode of the private temp folder it came from (0700): take the run folder's,
            # made under the umask, so that whoever may read the run may read its checkpoints
            os.chmod(staging, stat.S_IMODE(self.run_dir.stat().st_mode))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointWriteError(
                f"{final}: cannot publish checkpoint ({exc}); the previous checkpoint is kept"
            ) from exc
        for old in sorted(self.run_dir.glob("checkpoint_epoch_*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final
