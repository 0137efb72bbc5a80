"""The two ViT-pose checkpoint layouts users can get, read safely and mapped to one (the official ViTPose).

- **official ViTPose** (ViTAE-Transformer/ViTPose, OneDrive links): ``backbone.patch_embed.proj``,
  ``backbone.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``backbone.last_norm``, and a
  ``backbone.pos_embed`` of ``1 + Np`` rows whose class row its forward adds to every patch row.
- **MMPose 1.x / mmpretrain** (``td-hm_ViTPose-*`` at a direct URL): mmpretrain's ``VisionTransformer``
  with ``with_cls_token=False``: ``backbone.patch_embed.projection``,
  ``backbone.layers.N.{ln1,attn.qkv,attn.proj,ln2,ffn.layers.0.0,ffn.layers.1}``, final ``backbone.ln1``,
  and a ``backbone.pos_embed`` of ``Np`` rows added as is (a ``1 + Np`` table has its first row dropped
  by mmpretrain's load hook, so it is dropped here too).

`to_official_layout` renames an mmpretrain state dict into the official layout with a zero class row,
so one converter (`backbone.convert_vitpose_state_dict`) serves both and the forward is mmpretrain's.

mmengine saves ``{"meta": ..., "state_dict": ...}`` where ``meta["dataset_meta"]`` holds numpy arrays and
scalars (sigmas, colours). `vremd.model.weights.read_weights` keeps ``torch.load(weights_only=True)`` and allowlists the
numpy reconstructors and numeric dtypes such metadata needs (numpy 1.x and 2.x names), nothing that can run code.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

__all__ = [
    "MMPRETRAIN",
    "NUMPY_METADATA_GLOBALS",
    "OFFICIAL",
    "checkpoint_size",
    "detect_layout",
    "to_official_layout",
]

OFFICIAL, MMPRETRAIN = "official ViTPose", "MMPose/mmpretrain"

_NUMERIC_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                   "float16", "float32", "float64")
# numpy objects that pickled numpy arrays / scalars reference (numpy 2.x and 1.x module names): array and
# scalar reconstructors, ndarray, dtype and the numeric dtype classes. Data only: none of them runs code.
NUMPY_METADATA_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    *(type(np.dtype(name)) for name in _NUMERIC_DTYPES),
    (np._core.multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (np._core.multiarray.scalar, "numpy._core.multiarray.scalar"),
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
]

_MMPRETRAIN_RENAMES = (  # (pattern on the key after "backbone.", official name)
    (re.compile(r"^patch_embed\.projection\.(.+)$"), r"patch_embed.proj.\1"),
    (re.compile(r"^layers\.(\d+)\.ln1\.(.+)$"), r"blocks.\1.norm1.\2"),
    (re.compile(r"^layers\.(\d+)\.ln2\.(.+)$"), r"blocks.\1.norm2.\2"),
    (re.compile(r"^layers\.(\d+)\.attn\.(qkv|proj)\.(.+)$"), r"blocks.\1.attn.\2.\3"),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.0\.0\.(.+)$"), r"blocks.\1.mlp.fc1.\2"),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.1\.(.+)$"), r"blocks.\1.mlp.fc2.\2"),
    (re.compile(r"^ln1\.(.+)$"), r"last_norm.\1"),
)
_BLOCK_INDEX = re.compile(r"^backbone\.(?:blocks|layers)\.(\d+)\.")


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """`OFFICIAL` or `MMPRETRAIN` from the patch-embedding key; ValueError when neither is present."""
    keys = {k.removeprefix("module.") for k in sd}
    if "backbone.patch_embed.projection.weight" in keys:
        return MMPRETRAIN
    if "backbone.patch_embed.proj.weight" in keys:
        return OFFICIAL
    raise ValueError(
        "no backbone.patch_embed.proj.weight (official ViTPose) or backbone.patch_embed.projection.weight "
        "(MMPose/mmpretrain) key: not a ViTPose checkpoint"
    )


def checkpoint_size(sd: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(embed_dim, depth)`` of a ViT checkpoint in either layout (module prefix already stripped)."""
    proj = sd.get("backbone.patch_embed.proj.weight", sd.get("backbone.patch_embed.projection.weight"))
    if proj is None:
        raise ValueError("no patch-embedding weight: cannot tell the checkpoint's width")
    indices = [int(m.group(1)) for k in sd if (m := _BLOCK_INDEX.match(k))]
    return int(proj.shape[0]), (max(indices) + 1 if indices else 0)


def _official_pos_embed(pos: torch.Tensor, num_patches: int | None) -> torch.Tensor:
    """mmpretrain ``(1, Np, D)`` (or ``(1, 1 + Np, D)``, first row unused) -> official ``(1, 1 + Np, D)``, zero class row."""
    if pos.dim() != 3 or pos.shape[0] != 1:
        raise ValueError(f"backbone.pos_embed: expected (1, Np, D), found {tuple(pos.shape)}")
    if num_patches is not None and pos.shape[1] == num_patches + 1:
        pos = pos[:, 1:]  # mmpretrain drops an unused class row when with_cls_token=False
    return torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)  # (1, 1 + Np, D): class row adds 0


def to_official_layout(sd: dict[str, torch.Tensor], num_patches: int | None = None) -> dict[str, torch.Tensor]:
    """Rename an MMPose/mmpretrain ViTPose state dict to the official layout; pure function.

    ``num_patches`` is the model's token count: a table of exactly one row more loses its first row, as
    mmpretrain's loader does. ``head.*`` (the MMPose heatmap head) is dropped; other keys are kept as they
    are, so a strict load reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.startswith("head.") or key.startswith("data_preprocessor."):
            continue
        if key == "backbone.pos_embed":
            out[key] = _official_pos_embed(value, num_patches)
            continue
        if key.startswith("backbone."):
            rest = key.removeprefix("backbone.")
            for pattern, replacement in _MMPRETRAIN_RENAMES:
                if pattern.match(rest):
                    key = "backbone." + pattern.sub(replacement, rest)
                    break
        out[key] = value
    return out
