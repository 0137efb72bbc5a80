"""Refuse, before any work starts, settings the model cannot honour; each message names the key.

The architecture fixes some numbers: heatmaps come out at stride `HEATMAP_STRIDE` of the input (no config
key: callers pass the constant), and the input is the crop (`crops.height/width` = `model.img_height/width`,
checked where the config is built, `vremd.config.check_cross_fields`). Sizes the model cannot take would
otherwise fail deep in a forward pass with an error naming no key. `check_model_config` builds the model on the
meta device (shapes only, no memory, well under a second even for ViT-L) and runs one forward pass.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from vremd.config import Config, ConfigError
from vremd.frames import NUM_FRAMES
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import build_model

__all__ = ["check_model_config", "model_config_problems"]


def model_config_problems(cfg: Config) -> list[str]:
    """What in `cfg` the model cannot honour, one `key: why` string per problem (empty when all is well)."""
    m, problems = cfg.model, []
    if m.img_height % m.patch_size or m.img_width % m.patch_size:
        problems.append(f"model.img_height/model.img_width: {m.img_height}x{m.img_width} is not a multiple of "
                        f"model.patch_size {m.patch_size}")
    upsampling = m.patch_size // HEATMAP_STRIDE  # the head's stride-2 deconvolutions bring tokens to stride 4
    if upsampling < 1 or upsampling & (upsampling - 1) or m.patch_size % HEATMAP_STRIDE:
        problems.append(f"model.patch_size: must be {HEATMAP_STRIDE} times a power of 2, found {m.patch_size}")
    for width, heads in (("embed_dim", "num_heads"), ("dim", "heads")):
        if getattr(m, heads) < 1 or getattr(m, width) % getattr(m, heads):
            problems.append(f"model.{width}: {getattr(m, width)} is not a multiple of model.{heads} "
                            f"{getattr(m, heads)}")
    if problems:
        return problems
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # init functions warn that meta tensors hold no values
            model = build_model(dataclasses.replace(m, pretrained=""))  # the weights file is checked where it loads
            heatmaps = model(torch.zeros(1, NUM_FRAMES, 3, m.img_height, m.img_width))["heatmaps"]  # (1, J, h, w)
    except (ValueError, AssertionError, RuntimeError) as exc:
        return [f"model: these settings do not build a working VREMD: {str(exc).splitlines()[0]}"]
    expected = (1, m.num_joints, m.img_height // HEATMAP_STRIDE, m.img_width // HEATMAP_STRIDE)
    if tuple(heatmaps.shape) != expected:  # pragma: no cover - a bug in the model, not in the config
        problems.append(f"model: heatmaps {tuple(heatmaps.shape)}, expected {expected}")
    return problems


def check_model_config(cfg: Config, source: str = "config") -> None:
    """Raise `ConfigError` listing every problem of `model_config_problems`, prefixed by `source`."""
    problems = model_config_problems(cfg)
    if problems:
        raise ConfigError(f"{source}: the model cannot honour " + "; ".join(problems))
