"""BMD: Bidirectional Motion Disentanglement (paper section "BMD").

Motions are differences of the key frame's neighbours' tokens: M_f = F_{t+1} - F_t (forward) and
M_b = F_{t-1} - F_t (backward), ``(B, N, D)`` each. Each direction runs through its own stack of Adaptive
Deformable Cross (ADC) blocks; an ADC block has two branches on the motion tokens -- a deformable motion
attention conditioned on the feature F (`deformable.MOTION_ATTENTION`: dc, da or dca) and a cross
attention of the motion queries over F -- whose outputs are concatenated and merged by an MLP (residual).
After the last block a fusion MLP merges the two directions into the motion feature M ``(B, N, D)``.
The ADC blocks take F as the paper's constraint: HKME's enhanced feature, or without HKME (table 4(b)) the
key frame's backbone tokens.

Table 6(a) replaces the ADC block with the deformable conv: `DeformConvBlock` is a residual DC layer on the
motion tokens (plus the same per-token MLP as an ADC block) with no branch that reads F.

Without bidirectional separation (the table 6 ablation) the two motions are not kept apart: they are
concatenated along channels and linearly mixed into one entangled motion, ``Linear([M_f, M_b])``, which
runs through a single ADC stream with no fusion layer. This keeps all the motion information and removes
only the separation itself.
"""

from __future__ import annotations

import torch
from torch import nn

from vremd.frames import KEY, NEXT, NUM_FRAMES, PREV
from vremd.model.blocks import CrossAttention, Mlp
from vremd.model.deformable import DeformConvMotion

__all__ = ["ADCBlock", "DeformConvBlock", "ADCStream", "BMD", "EntangledBMD"]


class ADCBlock(nn.Module):
    """One ADC block: motion ``(B, N, D)``, feature F ``(B, N, D)`` -> motion ``(B, N, D)`` (+ points)."""

    def __init__(self, dim: int, mlp_ratio: float, motion_attention: nn.Module, heads: int) -> None:
        super().__init__()
        self.norm_motion = nn.LayerNorm(dim)
        self.norm_feature = nn.LayerNorm(dim)
        self.motion_attention = motion_attention  # deformable branch: F decides where to sample
        self.cross_attention = CrossAttention(dim, heads)  # motion queries over F
        self.merge = Mlp(2 * dim, int(dim * mlp_ratio), dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, motion: torch.Tensor, feature: torch.Tensor, return_points: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, f = self.norm_motion(motion), self.norm_feature(feature)  # (B, N, D) each
        points = None
        if return_points:
            deform, points = self.motion_attention(x, f, return_points=True)  # (B,N,D), (B,nh,N,K,2)
        else:
            deform = self.motion_attention(x, f)  # (B, N, D)
        cross = self.cross_attention(x, f)  # (B, N, D)
        motion = motion + self.merge(torch.cat([deform, cross], dim=-1))  # (B, N, 2D) -> (B, N, D)
        motion = motion + self.mlp(self.norm_mlp(motion))
        return motion, points


class DeformConvBlock(nn.Module):
    """Table 6(a): DC in place of the ADC block; motion ``(B, N, D)`` -> motion ``(B, N, D)`` (+ points), F unused."""

    def __init__(self, dim: int, mlp_ratio: float, conv: DeformConvMotion) -> None:
        super().__init__()
        self.norm_motion = nn.LayerNorm(dim)
        self.conv = conv
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, motion: torch.Tensor, feature: torch.Tensor, return_points: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        del feature  # the deformable conv sees the motion alone (the interface of `ADCBlock`)
        points = None
        if return_points:
            update, points = self.conv(self.norm_motion(motion), return_points=True)  # (B,N,D), (B,1,N,9,2)
        else:
            update = self.conv(self.norm_motion(motion))  # (B, N, D)
        motion = motion + update
        motion = motion + self.mlp(self.norm_mlp(motion))
        return motion, points


class ADCStream(nn.Module):
    """ADC blocks applied in order to one motion direction; returns the last block's sampling points."""

    def __init__(self, blocks: list[ADCBlock] | list[DeformConvBlock]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("ADCStream: needs at least one ADC block (model.adc_blocks >= 1)")
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, motion: torch.Tensor, feature: torch.Tensor, return_points: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        points = None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            motion, points = block(motion, feature, return_points=return_points and last)
        return motion, points


def _motions(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if feats.dim() != 4 or feats.shape[1] != NUM_FRAMES:
        raise ValueError(f"BMD: expected tokens (B, T={NUM_FRAMES}, N, D), got shape {tuple(feats.shape)}")
    forward_motion = feats[:, NEXT] - feats[:, KEY]  # M_f (B, N, D)
    backward_motion = feats[:, PREV] - feats[:, KEY]  # M_b (B, N, D)
    return forward_motion, backward_motion


class BMD(nn.Module):
    """Bidirectional motion: tokens ``(B, 3, N, D)``, feature F ``(B, N, D)`` -> M ``(B, N, D)``.

    ``sampling_points`` (``return_points``) are the forward stream's last block's ``(B, nh, N, K, 2)``
    locations, (x, y) normalised to [0, 1].
    """

    def __init__(self, dim: int, mlp_ratio: float, forward_stream: ADCStream, backward_stream: ADCStream) -> None:
        super().__init__()
        self.forward_stream = forward_stream
        self.backward_stream = backward_stream
        self.fusion = Mlp(2 * dim, int(dim * mlp_ratio), dim)

    def forward(
        self, feats: torch.Tensor, feature: torch.Tensor, return_points: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward_motion, backward_motion = _motions(feats)  # (B, N, D) each
        forward_motion, points = self.forward_stream(forward_motion, feature, return_points)
        backward_motion, _ = self.backward_stream(backward_motion, feature)
        motion = self.fusion(torch.cat([forward_motion, backward_motion], dim=-1))  # (B, N, 2D) -> (B, N, D)
        return motion, points


class EntangledBMD(nn.Module):
    """No bidirectional separation: ``Linear([M_f, M_b])`` through one ADC stream, no fusion; as `BMD`."""

    def __init__(self, dim: int, stream: ADCStream) -> None:
        super().__init__()
        self.mix = nn.Linear(2 * dim, dim)
        self.stream = stream

    def forward(
        self, feats: torch.Tensor, feature: torch.Tensor, return_points: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward_motion, backward_motion = _motions(feats)  # (B, N, D) each
        motion = self.mix(torch.cat([forward_motion, backward_motion], dim=-1))  # (B, N, 2D) -> (B, N, D)
        return self.stream(motion, feature, return_points)
