"""HKME: Human-Keypoint Mask Enhanced features (paper section "HKME", eqs. 1-2).

Input: the three frames' tokens, already projected to width D: ``(B, T, N, D)``, frames ordered
(t-1, t, t+1). Output: the enhanced key-frame feature F ``(B, N, D)``, the key frame's keypoint tokens
``(B, J, D)`` (for head H_k) and the two masks ``(B, T, N)`` (None when that mask is not built).

1. Human mask (eq. 1): a learnable human class token is appended per frame; per-frame transformer blocks
   give F_bar and T_h; Mask_h = sigmoid(F_bar T_h^T / sqrt(D)) -- the paper writes the bare product; the
   sigmoid (and the usual 1/sqrt(D) scale) makes it a mask in [0, 1] -- and F_c = F_bar * Mask_h.
2. Keypoint mask (eq. 2): J learnable keypoint tokens are appended per frame, the 3 frames are concatenated
   along tokens, spatio-temporal blocks give F_hat and T_k_hat; Map = T_k_hat F_hat^T / sqrt(D)
   ``(3J, 3N)``, softmax over the 3N tokens, summed over the 3J keypoint axis -> Mask_k ``(3N,)``, whose
   entries sum to 3J; F_f = F_hat * Mask_k.
3. Spatio-temporal aggregation: per-frame spatial blocks, per-token temporal blocks, then an MLP maps the
   3 frames (concatenated along channels) to one: F ``(B, N, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vremd.model.blocks import Mlp, TransformerStack

__all__ = ["HumanMask", "FrameBlocks", "KeypointMask", "SpatioTemporalAggregation", "HKME"]

KEY = 1  # index of the key frame t in the (t-1, t, t+1) frame axis


class HumanMask(nn.Module):
    """Eq. 1: ``(B, T, N, D)`` -> F_c ``(B, T, N, D)`` and Mask_h ``(B, T, N)`` in [0, 1]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int) -> None:
        super().__init__()
        self.human_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.human_token, std=0.02)
        self.blocks = TransformerStack(dim, heads, mlp_ratio, depth)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, N, D = feats.shape
        x = feats.flatten(0, 1)  # (B*T, N, D): frames become batch items
        x = torch.cat([self.human_token.expand(B * T, 1, D), x], dim=1)  # (B*T, 1+N, D)
        x = self.blocks(x)
        human_token, f_bar = x[:, :1], x[:, 1:]  # (B*T, 1, D), (B*T, N, D)
        mask = torch.sigmoid(f_bar @ human_token.transpose(1, 2) / math.sqrt(D))  # (B*T, N, 1) eq. 1
        f_c = f_bar * mask  # (B*T, N, D)
        return f_c.unflatten(0, (B, T)), mask.squeeze(-1).unflatten(0, (B, T))  # (B,T,N,D), (B,T,N)


class FrameBlocks(nn.Module):
    """Per-frame transformer blocks without a mask (human mask switched off): ``(B, T, N, D)`` -> same."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int) -> None:
        super().__init__()
        self.blocks = TransformerStack(dim, heads, mlp_ratio, depth)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, T, N, D = feats.shape
        x = self.blocks(feats.flatten(0, 1))  # (B*T, N, D): frames become batch items
        return x.unflatten(0, (B, T)), None


class KeypointMask(nn.Module):
    """Eq. 2: ``(B, T, N, D)`` -> F_f ``(B, T, N, D)``, Mask_k ``(B, T, N)`` or None, tokens ``(B, T, J, D)``.

    With ``apply_mask`` False the keypoint tokens and spatio-temporal blocks still run (H_k needs the
    tokens) but F_hat passes through unmasked and no mask is returned.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, depth: int, num_joints: int, num_frames: int,
        apply_mask: bool,
    ) -> None:
        super().__init__()
        self.apply_mask = apply_mask
        self.keypoint_tokens = nn.Parameter(torch.zeros(num_frames, num_joints, dim))  # per frame
        self.frame_embed = nn.Parameter(torch.zeros(num_frames, 1, dim))  # tells the frames apart
        nn.init.trunc_normal_(self.keypoint_tokens, std=0.02)
        nn.init.trunc_normal_(self.frame_embed, std=0.02)
        self.blocks = TransformerStack(dim, heads, mlp_ratio, depth)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        B, T, N, D = feats.shape
        if T != self.keypoint_tokens.shape[0]:
            raise ValueError(f"KeypointMask: built for {self.keypoint_tokens.shape[0]} frames, got {T}")
        J = self.keypoint_tokens.shape[1]
        tokens = self.keypoint_tokens.expand(B, T, J, D)
        x = torch.cat([feats, tokens], dim=2) + self.frame_embed  # (B, T, N+J, D): J tokens per frame
        x = self.blocks(x.flatten(1, 2))  # (B, T*(N+J), D): 3 frames concatenated along tokens
        x = x.unflatten(1, (T, N + J))  # (B, T, N+J, D)
        f_hat, tokens_hat = x[:, :, :N], x[:, :, N:]  # (B, T, N, D), (B, T, J, D)
        if not self.apply_mask:
            return f_hat, None, tokens_hat
        attn_map = tokens_hat.flatten(1, 2) @ f_hat.flatten(1, 2).transpose(1, 2) / math.sqrt(D)  # (B, 3J, 3N)
        mask = attn_map.softmax(dim=-1).sum(dim=1)  # (B, 3N): softmax over tokens, summed over keypoints
        mask = mask.unflatten(1, (T, N))  # (B, T, N)
        return f_hat * mask.unsqueeze(-1), mask, tokens_hat  # eq. 2: F_f = F_hat * Mask_k


class SpatioTemporalAggregation(nn.Module):
    """Spatial blocks per frame, temporal blocks per token, MLP over frames: ``(B, T, N, D)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, num_frames: int) -> None:
        super().__init__()
        self.spatial = TransformerStack(dim, heads, mlp_ratio, depth)
        self.temporal = TransformerStack(dim, heads, mlp_ratio, depth)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, dim))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        self.reduce = Mlp(num_frames * dim, int(dim * mlp_ratio), dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B, T, N, D = feats.shape
        x = self.spatial(feats.flatten(0, 1))  # (B*T, N, D): each frame on its own
        x = x.unflatten(0, (B, T)).transpose(1, 2).flatten(0, 1)  # (B*N, T, D): each token over time
        x = self.temporal(x + self.time_embed)  # (B*N, T, D)
        x = self.reduce(x.flatten(1, 2))  # (B*N, D): 3 frames concatenated along channels -> one
        return self.norm(x).unflatten(0, (B, N))  # (B, N, D)


class HKME(nn.Module):
    """Human mask -> keypoint mask -> aggregation; see the module docstring for shapes and equations."""

    def __init__(self, human: HumanMask | FrameBlocks, keypoint: KeypointMask, aggregation: SpatioTemporalAggregation):
        super().__init__()
        self.human = human
        self.keypoint = keypoint
        self.aggregation = aggregation

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``feats`` ``(B, T, N, D)`` -> dict ``feature`` ``(B, N, D)``, ``keypoint_tokens`` ``(B, J, D)``
        (key frame), ``human_mask`` / ``keypoint_mask`` ``(B, T, N)`` or None."""
        f_c, human_mask = self.human(feats)  # (B, T, N, D), (B, T, N)
        f_f, keypoint_mask, tokens = self.keypoint(f_c)  # (B, T, N, D), (B, T, N), (B, T, J, D)
        feature = self.aggregation(f_f)  # (B, N, D)
        return {
            "feature": feature,
            "keypoint_tokens": tokens[:, KEY],  # (B, J, D)
            "human_mask": human_mask,
            "keypoint_mask": keypoint_mask,
        }
