"""Heatmap heads: tokens -> ``(B, J, h, w)`` heatmaps at stride 4, (h, w) = (H/4, W/4).

- `KeypointTokenHead` (H_k): each key-frame keypoint token runs through an MLP to h*w logits, read as that
  joint's heatmap (the paper's "keypoint tokens -> MLP -> H_k (J, 64, 48)", taken literally).
- `UpsampleHead` (H_m, and the baseline head): tokens are laid back on their ``(H/p, W/p)`` grid and
  upsampled by stride-2 deconvolutions (4x4, BatchNorm, ReLU; ViTPose's classic decoder) to stride 4,
  then a 1x1 conv gives J channels. H_m takes [M, F] concatenated along channels.

Both heads start with near-zero output layers (normal, std `OUTPUT_INIT_STD`, zero bias), as ViTPose and
SimpleBaseline initialise their final conv: targets are Gaussians in [0, 1] with ~96% zero pixels, and
PyTorch's default init gives initial heatmaps of std ~0.4, ten times the targets' scale, which the
optimiser first removes by shrinking / killing the head's features (the baseline then never learned).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vremd.model.blocks import Mlp

__all__ = ["HEATMAP_STRIDE", "OUTPUT_INIT_STD", "KeypointTokenHead", "UpsampleHead"]

HEATMAP_STRIDE = 4  # heatmaps are (H/4, W/4)
OUTPUT_INIT_STD = 1e-3  # std of the heads' output-layer weights at initialisation


def _init_output_layer(layer: nn.Linear | nn.Conv2d) -> None:
    """Near-zero initial heatmaps: weights ~ N(0, OUTPUT_INIT_STD), bias 0."""
    nn.init.normal_(layer.weight, std=OUTPUT_INIT_STD)
    nn.init.zeros_(layer.bias)


class KeypointTokenHead(nn.Module):
    """H_k: keypoint tokens ``(B, J, D)`` -> heatmaps ``(B, J, h, w)`` via an MLP to h*w logits per joint."""

    def __init__(self, dim: int, mlp_ratio: float, heatmap_hw: tuple[int, int]) -> None:
        super().__init__()
        self.heatmap_hw = heatmap_hw
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), heatmap_hw[0] * heatmap_hw[1])
        _init_output_layer(self.mlp.fc2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(self.norm(tokens))  # (B, J, h*w)
        return logits.unflatten(2, self.heatmap_hw)  # (B, J, h, w)


class UpsampleHead(nn.Module):
    """Tokens ``(B, N, C)`` on grid ``grid_hw`` -> heatmaps ``(B, J, h, w)``, upsampled by ``patch / 4``."""

    def __init__(self, in_dim: int, hidden: int, num_joints: int, grid_hw: tuple[int, int], patch_size: int) -> None:
        super().__init__()
        factor = patch_size // HEATMAP_STRIDE
        steps = round(math.log2(factor)) if factor >= 1 else -1
        if steps < 0 or 2**steps * HEATMAP_STRIDE != patch_size:
            raise ValueError(f"UpsampleHead: patch_size {patch_size} must be {HEATMAP_STRIDE} times a power of 2")
        self.grid_hw = grid_hw
        self.norm = nn.LayerNorm(in_dim)
        layers: list[nn.Module] = []
        channels = in_dim
        for _ in range(steps):
            layers += [
                nn.ConvTranspose2d(channels, hidden, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
            channels = hidden
        self.upsample = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_joints, kernel_size=1)
        _init_output_layer(self.final)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, N, C = tokens.shape
        gh, gw = self.grid_hw
        if N != gh * gw:
            raise ValueError(f"UpsampleHead: {N} tokens do not fill the {gh}x{gw} grid")
        x = self.norm(tokens).transpose(1, 2).reshape(B, C, gh, gw)  # (B, C, H/p, W/p): row-major tokens
        return self.final(self.upsample(x))  # (B, J, H/4, W/4)
