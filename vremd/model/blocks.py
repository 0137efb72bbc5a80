"""Transformer building blocks shared by HKME and BMD: an MLP, self-attention blocks and cross attention.

All blocks are pre-norm (LayerNorm before attention / MLP, residual around each) and use
``F.scaled_dot_product_attention``, which ``torch.utils.flop_counter`` counts.

Masks act as keys and values: self attention takes an optional ``key_bias`` ``(B, L)``, the log of a
per-token mask m in [0, 1], added to every query's logits for that key. The attention weights become
``m_j exp(s_ij) / sum_l m_l exp(s_il)``: a token with mask 0 contributes nothing as a key or value, and a
LayerNorm in front of the block cannot undo that (it can undo a per-token scale of the features, which is
why scaling the tokens alone does not mask them). `mask_log` turns a mask's log into such a bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MASK_LOG_FLOOR", "Mlp", "SelfAttention", "CrossAttention", "TransformerBlock", "TransformerStack",
           "mask_log"]

# lowest key bias: exp(-1e4) is exactly 0 in float32 and bfloat16 (a masked key gets weight 0), yet a row whose
# keys are all masked stays finite (softmax of equal logits) instead of the NaN of an all -inf row
MASK_LOG_FLOOR = -1e4


def mask_log(log_mask: torch.Tensor) -> torch.Tensor:
    """Key bias from a mask's natural log ``(B, L)`` (any value <= 0, -inf allowed): floored at `MASK_LOG_FLOOR`."""
    return log_mask.clamp_min(MASK_LOG_FLOOR)


class Mlp(nn.Module):
    """Two linear layers with a GELU between: ``(..., in_dim) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim if out_dim is not None else in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    B, L, D = x.shape
    return x.reshape(B, L, heads, D // heads).transpose(1, 2)  # (B, nh, L, dh)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, nh, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, nh * dh)  # (B, L, D)


def _check_heads(dim: int, heads: int) -> None:
    if heads < 1 or dim % heads != 0:
        raise ValueError(f"attention: dim {dim} must be a positive multiple of heads {heads}")


class SelfAttention(nn.Module):
    """Multi-head self attention over a token sequence: ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, L, D)``; ``key_bias`` ``(B, L)`` added to the logits of every query for that key (or None)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, L, D)
        bias = None if key_bias is None else key_bias[:, None, None, :].to(q.dtype)  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(
            _split_heads(q, self.heads), _split_heads(k, self.heads), _split_heads(v, self.heads), attn_mask=bias
        )  # (B, nh, L, dh)
        return self.proj(_merge_heads(out))


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a context: ``(B, Lq, D), (B, Lc, D) -> (B, Lq, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)  # 2 x (B, Lc, D)
        out = F.scaled_dot_product_attention(
            _split_heads(self.q(query), self.heads), _split_heads(k, self.heads), _split_heads(v, self.heads)
        )  # (B, nh, Lq, dh)
        return self.proj(_merge_heads(out))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``; ``(B, L, D)``.

    With ``key_bias`` ``(B, L)`` the attention is masked as described in the module docstring.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    """``depth`` transformer blocks applied in order to ``(B, L, D)`` tokens, each with the same ``key_bias``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"TransformerStack: depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_bias)
        return x
