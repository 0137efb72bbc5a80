"""Reading weights files safely and reporting why a state dict does not fit a model.

Every checkpoint in the project (models/final.pt, training's state.pt, a ViTPose .pth) is read by
`read_weights`: ``torch.load(weights_only=True)`` on the CPU, numpy metadata allowlisted (mmengine writes it),
and any failure turned into one `CheckpointError` naming the file. `state_dict_problems` is the one strict-load
report: misshapen, missing and unexpected keys, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vremd.errors import InputError
from vremd.model.checkpoint_layouts import NUMPY_METADATA_GLOBALS

__all__ = ["CheckpointError", "read_weights", "state_dict_problems"]

SHOWN_KEYS = 8  # keys listed per kind of problem; the rest are counted


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable or does not fit its model; the message names the file and keys."""


def read_weights(path: str | Path, mmap: bool = False) -> Any:
    """What `path` holds, read with ``torch.load(weights_only=True)`` onto the CPU (memory-mapped with `mmap`).

    Raises `CheckpointError` naming the file when it is missing, truncated, foreign, or a pickle that would
    run code (refused by ``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(NUMPY_METADATA_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several unrelated types for a non-checkpoint file
        raise CheckpointError(f"{path}: unreadable checkpoint, not a weights-only torch file "
                              f"({type(exc).__name__})") from None


def state_dict_problems(model: nn.Module, sd: Mapping[str, torch.Tensor], optional_prefix: str = "") -> list[str]:
    """Misshapen, missing and unexpected keys of `sd` against `model` (keys under `optional_prefix` may be
    missing); empty when a strict load would succeed."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not (optional_prefix and k.startswith(optional_prefix))]
    unexpected = [k for k in sd if k not in own]
    misshapen = [f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                 for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    out = []
    for name, keys in (("misshapen", misshapen), ("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            out.append(f"{len(keys)} {name} keys: " + ", ".join(keys[:SHOWN_KEYS]) + more)
    return out
