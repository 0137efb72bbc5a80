"""HKME: Human-Keypoint Mask Enhanced features (paper section "HKME", eqs. 1-2).

Input: the three frames' backbone tokens (projected to width D only when ``model.dim`` differs from the
backbone width): ``(B, T, N, D)``, frames ordered (t-1, t, t+1). Output: the enhanced key-frame feature F
``(B, N, D)`` (when the aggregation stage exists), the key frame's keypoint tokens ``(B, J, D)`` (for head
H_k, when the keypoint stage exists) and the two masks ``(B, T, N)`` (None when that mask is not built).

1. Human mask (eq. 1): a learnable human class token per frame (T_h is ``(3, 1, D)``) is appended to that
   frame's tokens; per-frame transformer blocks give F_bar and T_h; Mask_h = sigmoid(F_bar T_h^T / sqrt(D))
   and F_c = F_bar * Mask_h. Eq. 1's product F_bar T_h^T is kept as the mask's logit; it is bounded by the
   sigmoid (with the usual 1/sqrt(D)) because a mask must be >= 0 to weight attention (below) and a
   signed factor would flip features instead of suppressing them.
2. Keypoint mask (eq. 2): J learnable keypoint tokens per frame (J = the dataset's annotated joints) are
   appended, the 3 frames are concatenated along tokens, spatio-temporal blocks give F_hat and T_k_hat;
   Map = T_k_hat F_hat^T / sqrt(D) ``(3J, 3N)``, softmax over the 3N tokens, summed over the 3J keypoint
   axis -> Mask_k ``(3N,)`` (eq. 2's bare sum: its entries add up to 3J); F_f = F_hat * Mask_k.
3. Spatio-temporal aggregation: per-frame spatial blocks, per-token temporal blocks, then an MLP maps the
   3 frames (concatenated along channels) to one: F ``(B, N, D)``.

Where the masks act: the products F_bar * Mask_h and F_hat * Mask_k are kept as in eqs. 1-2, but a
per-token scale alone does not mask anything downstream: the next block's pre-norm LayerNorm undoes it. So
each mask also weights its tokens as keys and values of the attention that follows
(`vremd.model.blocks`, ``key_bias`` = log mask): Mask_h in the keypoint stage's blocks and in Mask_k's
softmax (keypoint mass only goes to tokens the human mask keeps); Mask_k (or Mask_h when the keypoint stage
is off) in the aggregation's spatial and temporal blocks. A token with mask 0 then contributes nothing to
any other token's output (tests/model/test_hkme.py checks exactly that).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vremd.frames import KEY, NUM_FRAMES
from vremd.model.blocks import Mlp, TransformerStack, mask_log

__all__ = ["HumanMask", "KeypointMask", "SpatioTemporalAggregation", "HKME"]


class HumanMask(nn.Module):
    """Eq. 1: ``(B, T, N, D)`` -> F_c ``(B, T, N, D)`` and log Mask_h ``(B, T, N)`` (Mask_h in [0, 1])."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, num_frames: int = NUM_FRAMES) -> None:
        super().__init__()
        self.human_token = nn.Parameter(torch.zeros(num_frames, 1, dim))  # T_h: one per frame, (3, 1, D)
        nn.init.trunc_normal_(self.human_token, std=0.02)
        self.blocks = TransformerStack(dim, heads, mlp_ratio, depth)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, N, D = feats.shape
        if T != self.human_token.shape[0]:
            raise ValueError(f"HumanMask: built for {self.human_token.shape[0]} frames, got {T}")
        x = torch.cat([self.human_token.expand(B, T, 1, D), feats], dim=2)  # (B, T, 1+N, D): frame t gets T_h[t]
        x = self.blocks(x.flatten(0, 1))  # (B*T, 1+N, D): frames become batch items (intra-frame blocks)
        human_token, f_bar = x[:, :1], x[:, 1:]  # (B*T, 1, D), (B*T, N, D)
        logits = (f_bar @ human_token.transpose(1, 2)).squeeze(-1) / math.sqrt(D)  # (B*T, N): eq. 1's product
        log_mask = F.logsigmoid(logits)  # (B*T, N): log Mask_h, bounded mask in [0, 1]
        f_c = f_bar * log_mask.exp().unsqueeze(-1)  # (B*T, N, D): F_c = F_bar * Mask_h
        return f_c.unflatten(0, (B, T)), log_mask.unflatten(0, (B, T))  # (B, T, N, D), (B, T, N)


class KeypointMask(nn.Module):
    """Eq. 2: F_c ``(B, T, N, D)`` (+ log Mask_h) -> F_f ``(B, T, N, D)``, log Mask_k ``(B, T, N)``, tokens ``(B, T, J, D)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, num_joints: int,
                 num_frames: int = NUM_FRAMES) -> None:
        super().__init__()
        self.keypoint_tokens = nn.Parameter(torch.zeros(num_frames, num_joints, dim))  # T_k: (3, J, D)
        self.frame_embed = nn.Parameter(torch.zeros(num_frames, 1, dim))  # tells the frames apart
        nn.init.trunc_normal_(self.keypoint_tokens, std=0.02)
        nn.init.trunc_normal_(self.frame_embed, std=0.02)
        self.blocks = TransformerStack(dim, heads, mlp_ratio, depth)

    def forward(
        self, feats: torch.Tensor, human_log_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``human_log_mask`` ``(B, T, N)`` (or None): the feature tokens' key bias; keypoint tokens are never masked."""
        B, T, N, D = feats.shape
        if T != self.keypoint_tokens.shape[0]:
            raise ValueError(f"KeypointMask: built for {self.keypoint_tokens.shape[0]} frames, got {T}")
        J = self.keypoint_tokens.shape[1]
        tokens = self.keypoint_tokens.expand(B, T, J, D)
        x = torch.cat([feats, tokens], dim=2) + self.frame_embed  # (B, T, N+J, D): J tokens per frame
        key_bias = None
        if human_log_mask is not None:
            human_bias = mask_log(human_log_mask)  # (B, T, N)
            key_bias = torch.cat([human_bias, human_bias.new_zeros(B, T, J)], dim=2).flatten(1)  # (B, T*(N+J))
        x = self.blocks(x.flatten(1, 2), key_bias)  # (B, T*(N+J), D): 3 frames concatenated along tokens
        x = x.unflatten(1, (T, N + J))  # (B, T, N+J, D)
        f_hat, tokens_hat = x[:, :, :N], x[:, :, N:]  # (B, T, N, D), (B, T, J, D)
        attn_map = tokens_hat.flatten(1, 2) @ f_hat.flatten(1, 2).transpose(1, 2) / math.sqrt(D)  # (B, 3J, 3N): Map
        if human_log_mask is not None:
            attn_map = attn_map + mask_log(human_log_mask.flatten(1)).unsqueeze(1)  # softmax over kept tokens only
        log_mask = attn_map.log_softmax(dim=-1).logsumexp(dim=1)  # (B, 3N): log of eq. 2's sum over 3J softmaxes
        log_mask = log_mask.unflatten(1, (T, N))  # (B, T, N)
        return f_hat * log_mask.exp().unsqueeze(-1), log_mask, tokens_hat  # eq. 2: F_f = F_hat * Mask_k


class SpatioTemporalAggregation(nn.Module):
    """Spatial blocks per frame, temporal blocks per token, MLP over frames: ``(B, T, N, D)`` -> ``(B, N, D)``.

    ``log_mask`` ``(B, T, N)`` (or None) is the key bias of both the spatial and the temporal attention.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int, num_frames: int = NUM_FRAMES) -> None:
        super().__init__()
        self.spatial = TransformerStack(dim, heads, mlp_ratio, depth)
        self.temporal = TransformerStack(dim, heads, mlp_ratio, depth)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, dim))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        self.reduce = Mlp(num_frames * dim, int(dim * mlp_ratio), dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: torch.Tensor, log_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, N, D = feats.shape
        bias = None if log_mask is None else mask_log(log_mask)  # (B, T, N)
        spatial_bias = None if bias is None else bias.flatten(0, 1)  # (B*T, N)
        x = self.spatial(feats.flatten(0, 1), spatial_bias)  # (B*T, N, D): each frame on its own
        x = x.unflatten(0, (B, T)).transpose(1, 2).flatten(0, 1)  # (B*N, T, D): each token over time
        temporal_bias = None if bias is None else bias.transpose(1, 2).flatten(0, 1)  # (B*N, T)
        x = self.temporal(x + self.time_embed, temporal_bias)  # (B*N, T, D)
        x = self.reduce(x.flatten(1, 2))  # (B*N, D): 3 frames concatenated along channels -> one
        return self.norm(x).unflatten(0, (B, N))  # (B, N, D)


class HKME(nn.Module):
    """Human mask -> keypoint mask -> aggregation, each stage optional (tables 4 and 5 switch them).

    Table 5(a) keeps only the aggregation ("only the spatio-temporal Transformers network"); without BMD
    (table 4(a)) nothing takes F, so there is no aggregation stage and HKME acts through H_k alone.
    """

    def __init__(self, human: HumanMask | None, keypoint: KeypointMask | None,
                 aggregation: SpatioTemporalAggregation | None):
        super().__init__()
        if keypoint is None and aggregation is None:
            raise ValueError("HKME: needs the keypoint stage (for H_k) or the aggregation stage (for F)")
        self.human = human
        self.keypoint = keypoint
        self.aggregation = aggregation

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``feats`` ``(B, T, N, D)`` -> dict ``feature`` ``(B, N, D)`` or None, ``keypoint_tokens`` ``(B, J, D)``
        (key frame) or None, ``human_mask`` / ``keypoint_mask`` ``(B, T, N)`` or None."""
        x, human_log, keypoint_log, tokens = feats, None, None, None
        if self.human is not None:
            x, human_log = self.human(x)  # F_c (B, T, N, D), log Mask_h (B, T, N)
        if self.keypoint is not None:
            x, keypoint_log, tokens = self.keypoint(x, human_log)  # F_f, log Mask_k (B, T, N), (B, T, J, D)
        feature = None
        if self.aggregation is not None:
            feature = self.aggregation(x, keypoint_log if keypoint_log is not None else human_log)  # (B, N, D)
        return {
            "feature": feature,
            "keypoint_tokens": None if tokens is None else tokens[:, KEY],  # (B, J, D)
            "human_mask": None if human_log is None else human_log.exp(),
            "keypoint_mask": None if keypoint_log is None else keypoint_log.exp(),
        }
