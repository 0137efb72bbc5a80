"""Motion attention for BMD's ADC blocks: deformable conv (DC), deformable attention (DA) and DCA.

All three share one interface, chosen by ``model.motion_attention`` through :data:`MOTION_ATTENTION`:
``cls(dim, heads, num_points, grid_hw)`` and ``forward(x (B, N, D), cond (B, N, D), return_points=False)``,
where ``x`` holds motion tokens (e.g. M_f = F_{t+1} - F_t) and ``cond`` the features F. Tokens are the
row-major flattening of an ``(h, w) = grid_hw`` grid. Offsets are in grid cells, ``(x, y)`` order; sampling
locations are ``(x, y)`` normalised to ``[0, 1]`` with token ``(col, row)`` centred at
``((col + 0.5) / w, (row + 0.5) / h)`` (see :mod:`vremd.model.sampling`).

Bilinear sampling and the linear projections commute, so every class projects the N tokens first and samples
the projected maps (K times fewer matmul rows than projecting N*K samples). The only difference is a
projection bias outside the map, which zero padding scales down with the sample instead of adding in full.

Under autocast (bf16 / fp16) the sampling locations, ``grid_sample`` and the attention over the sampled points
run in float32, as Deformable-DETR's ``MSDeformAttnFunction`` does: a bf16 location has 8 bits of mantissa,
i.e. steps of 1/128 of the map near its far edge, which moves a sample by up to a tenth of a cell.

In table 6(a) the deformable conv (DC) replaces the whole ADC block (`vremd.model.bmd.DeformConvBlock`);
DA and DCA are the deformable branch inside an ADC block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from vremd.model.sampling import (
    deformable_sample,
    deformable_sample_reference,
    float32_region,
    point_attention,
    sample_maps,
    token_centres,
)

__all__ = [
    "MOTION_ATTENTION",
    "DeformConvMotion",
    "DeformAttnMotion",
    "DeformCrossAttnMotion",
    "motion_attention_class",
    "deformable_sample",
    "deformable_sample_reference",
]


def _check_sizes(name: str, dim: int, heads: int, num_points: int, grid_hw: tuple[int, int]) -> None:
    if dim % heads != 0:
        raise ValueError(f"{name}: dim={dim} must be divisible by heads={heads}")
    if num_points < 1:
        raise ValueError(f"{name}: num_points must be >= 1, got {num_points}")
    if len(grid_hw) != 2 or min(grid_hw) < 1:
        raise ValueError(f"{name}: grid_hw must be (h, w) with positive sizes, got {grid_hw}")


def _check_tokens(name: str, x: torch.Tensor, cond: torch.Tensor, dim: int, grid_hw: tuple[int, int]) -> None:
    h, w = grid_hw
    if x.dim() != 3 or x.shape[1] != h * w or x.shape[2] != dim:
        raise ValueError(f"{name}: x must be (B, N={h * w}, D={dim}) for grid {grid_hw}, got {tuple(x.shape)}")
    if cond.shape != x.shape:
        raise ValueError(f"{name}: cond must match x {tuple(x.shape)}, got {tuple(cond.shape)}")


def _grid_offset_bias(heads: int, num_points: int) -> torch.Tensor:
    """Deformable-DETR's initial offsets: head h looks along angle 2*pi*h/nh, point k sits k+1 cells out.

    Returns ``(nh, K, 2)`` offsets in grid cells, ``(x, y)`` order; the direction is scaled so its larger
    component is one cell.
    """
    angles = torch.arange(heads, dtype=torch.float64) * (2.0 * math.pi / heads)  # (nh,)
    directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (nh, 2) (x, y)
    directions = directions / directions.abs().max(dim=-1, keepdim=True).values  # (nh, 2) on the unit square
    radii = torch.arange(1, num_points + 1, dtype=torch.float64)  # (K,)
    return (directions[:, None, :] * radii[None, :, None]).float()  # (nh, K, 2)


def _cells_to_locations(offsets_xy: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Turn offsets ``(..., N, 2)`` in grid cells around each token into ``[0, 1]`` locations, (x, y).

    Built in the offsets' dtype and device on every call (a few tiny ops), so float64 tests stay exact.
    """
    h, w = grid_hw
    centres = token_centres(grid_hw, device=offsets_xy.device, dtype=offsets_xy.dtype)  # (N, 2)
    cell_xy = offsets_xy.new_tensor([1.0 / w, 1.0 / h])  # (2,): one cell in normalised units, (x, y)
    return centres + offsets_xy * cell_xy  # (..., N, 2)


class DeformCrossAttnMotion(nn.Module):
    """Deformable cross attention (DCA, paper eqs. 3-4): F decides where each motion query samples.

    q = W_q x, z = W_z F; offsets dp = theta(psi([q, z])) with psi a depthwise 3x3 conv + GELU on the token
    grid and theta a linear offset generator; reference points p_z = token centre + rho(z), one per token and
    head, with rho a linear map of z initialised to zero (a fresh module's p_z is the token grid); each query
    attends (softmax over K, scaled by 1/sqrt(dh)) over its K points p = p_z + dp, with keys W_k x_bar and
    values W_v x_bar where x_bar = bilinear(x, p). ``kv_proj`` holds W_k then W_v: output channels are
    ordered (2, nh, dh).
    Sampling is ``grid_sample`` over all heads at once; the attention is :func:`point_attention`.
    """

    def __init__(self, dim: int, heads: int, num_points: int, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        _check_sizes("DeformCrossAttnMotion", dim, heads, num_points, grid_hw)
        self.dim, self.heads, self.num_points, self.grid_hw = dim, heads, num_points, tuple(grid_hw)
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.z_proj = nn.Linear(dim, dim)
        self.psi = nn.Conv2d(2 * dim, 2 * dim, kernel_size=3, padding=1, groups=2 * dim)  # depthwise, as in DAT
        self.theta = nn.Linear(2 * dim, heads * num_points * 2)  # per token: (nh, K, 2) offsets
        self.reference = nn.Linear(dim, heads * 2)  # rho: per token, (nh, 2) shift of p_z from its grid centre
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.reference.weight)  # p_z starts at the token grid and moves as z asks
        nn.init.zeros_(self.reference.bias)
        nn.init.zeros_(self.theta.weight)  # a fresh module samples at fixed points around each token
        with torch.no_grad():
            self.theta.bias.copy_(_grid_offset_bias(heads, num_points).flatten())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, return_points: bool = False):
        """Attend from motion tokens ``x`` (B, N, D) over K points per query placed using features ``cond``.

        Returns ``(B, N, D)``; with ``return_points`` also the sampling locations ``(B, nh, N, K, 2)``,
        ``(x, y)`` normalised to ``[0, 1]`` (may leave the map; outside samples read zeros).
        """
        _check_tokens("DeformCrossAttnMotion", x, cond, self.dim, self.grid_hw)
        q, locations = self.queries_and_locations(x, cond)  # (B, N, D), (B, nh, K, N, 2) float32
        kv_maps = self.key_value_maps(x)  # (B, nh, 2dh, h, w)
        with float32_region(x):  # sampling and attention in float32 under autocast
            sampled = sample_maps(kv_maps.to(locations.dtype), locations)  # (B, nh, 2dh, K, N): W_k x_bar, W_v x_bar
        out = self.attend(q, sampled)  # (B, N, D)
        return (out, locations.transpose(2, 3)) if return_points else out  # points (B, nh, N, K, 2)

    def queries_and_locations(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3: queries q = W_q x (B, N, D) and locations p_z + theta(psi([q, z])), p_z = centre + rho(z).

        Locations are ``(B, nh, K, N, 2)`` (K before N: the layout the attention maths wants), (x, y) in [0, 1],
        always float32 (computed with autocast off).
        """
        B, N, D = x.shape
        h, w = self.grid_hw
        q = self.q_proj(x)  # (B, N, D), autocast's dtype: it is also the attention's query
        with float32_region(x):  # z, psi, theta and p_z: the whole location path in float32
            dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 in exact tests
            z = self.z_proj(cond.to(dtype))  # (B, N, D)
            qz = torch.cat([q.to(dtype), z], dim=-1).transpose(1, 2).reshape(B, 2 * D, h, w)  # (B, 2D, h, w): grid
            hidden = F.gelu(self.psi(qz)).flatten(2).transpose(1, 2)  # (B, N, 2D)
            offsets = self.theta(hidden).view(B, N, self.heads, self.num_points, 2)  # (B, N, nh, K, 2) cells, (x, y)
            reference = self.reference(z).view(B, N, self.heads, 1, 2)  # (B, N, nh, 1, 2): p_z - centre, cells
            cells = (reference + offsets).permute(0, 2, 3, 1, 4)  # (B, nh, K, N, 2): p_z + dp around each centre
            return q, _cells_to_locations(cells, self.grid_hw)  # (B, nh, K, N, 2)

    def key_value_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head key and value maps on the token grid, ``(B, nh, 2dh, h, w)``: W_k x then W_v x per head."""
        B, N, D = x.shape
        h, w = self.grid_hw
        kv = self.kv_proj(x).view(B, h, w, 2, self.heads, self.head_dim)  # (B, h, w, 2, nh, dh)
        return kv.permute(0, 4, 3, 5, 1, 2).reshape(B, self.heads, 2 * self.head_dim, h, w)  # (B, nh, 2dh, h, w)

    def attend(self, q: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """Eq. 4: each query's softmax attention over its K sampled keys and values, then W_o.

        Args:
            q: ``(B, N, D)`` queries. sampled: ``(B, nh, 2dh, K, N)`` sampled keys and values.
        Returns: ``(B, N, D)``.
        """
        B, N, D = q.shape
        q_heads = q.view(B, N, self.heads, self.head_dim).permute(0, 2, 3, 1)  # (B, nh, dh, N)
        out = point_attention(q_heads, sampled)  # (B, nh, dh, N), float32 under autocast
        return self.out_proj(out.reshape(B, D, N).transpose(1, 2))  # (B, N, D): heads concatenated


class DeformAttnMotion(nn.Module):
    """Plain deformable attention (DA, Deformable-DETR style): offsets and weights from the query alone.

    One linear on ``x`` predicts, per head and point, an ``(x, y)`` offset in grid cells and an attention
    logit (softmax over K); values W_v x are sampled at p_ref + dp and summed. ``cond`` is not used.
    """

    def __init__(self, dim: int, heads: int, num_points: int, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        _check_sizes("DeformAttnMotion", dim, heads, num_points, grid_hw)
        self.dim, self.heads, self.num_points, self.grid_hw = dim, heads, num_points, tuple(grid_hw)
        self.head_dim = dim // heads
        self.sampling = nn.Linear(dim, heads * num_points * 3)  # per (head, point): dx, dy, logit
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.sampling.weight)  # fixed points, uniform weights at initialisation
        with torch.no_grad():
            bias = torch.zeros(heads, num_points, 3)
            bias[..., :2] = _grid_offset_bias(heads, num_points)
            self.sampling.bias.copy_(bias.flatten())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, return_points: bool = False):
        """Deformable attention of motion tokens ``x`` (B, N, D) on themselves; ``cond`` is ignored.

        Returns ``(B, N, D)``; with ``return_points`` also locations ``(B, nh, N, K, 2)``, (x, y) in [0, 1].
        """
        _check_tokens("DeformAttnMotion", x, cond, self.dim, self.grid_hw)
        B, N, D = x.shape
        h, w = self.grid_hw
        nh, dh, K = self.heads, self.head_dim, self.num_points
        v = self.v_proj(x).transpose(1, 2).reshape(B, nh, dh, h, w)  # (B, nh, dh, h, w): per-head maps
        with float32_region(x):  # locations, sampling and weights in float32 under autocast
            dtype = torch.promote_types(x.dtype, torch.float32)
            pred = self.sampling(x.to(dtype)).view(B, N, nh, K, 3).permute(0, 2, 3, 1, 4)  # (B, nh, K, N, 3)
            locations = _cells_to_locations(pred[..., :2], self.grid_hw)  # (B, nh, K, N, 2) in [0, 1]
            attn = pred[..., 2].softmax(dim=2)  # (B, nh, K, N): softmax over the K points
            sampled = sample_maps(v.to(dtype), locations)  # (B, nh, dh, K, N)
            out = (sampled * attn.unsqueeze(2)).sum(dim=3)  # (B, nh, dh, N)
        out = self.out_proj(out.reshape(B, D, N).transpose(1, 2))  # (B, N, D): heads concatenated
        return (out, locations.transpose(2, 3)) if return_points else out  # points (B, nh, N, K, 2)


class DeformConvMotion(nn.Module):
    """Modulated deformable 3x3 convolution (DC, DCNv2) on the motion map, projected back to D channels.

    Table 6(a) puts it in place of the whole ADC block (`vremd.model.bmd.DeformConvBlock`): no F enters.

    A 3x3 conv on ``x`` predicts, per output token and kernel tap, an offset (grid cells) and a sigmoid
    modulation; ``torchvision.ops.deform_conv2d`` applies the D -> D kernel. ``heads`` and ``num_points``
    only satisfy the shared interface (checked, otherwise unused); ``cond`` is not used. ``return_points``
    gives the 9 tap locations per query as ``(B, 1, N, 9, 2)``: nh = 1, K = 9, taps row-major (ky, kx).
    """

    taps = 9  # 3x3 kernel

    def __init__(self, dim: int, heads: int, num_points: int, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        _check_sizes("DeformConvMotion", dim, heads, num_points, grid_hw)
        self.dim, self.grid_hw = dim, tuple(grid_hw)
        self.offset_conv = nn.Conv2d(dim, 3 * self.taps, kernel_size=3, padding=1)  # 18 offsets + 9 masks
        nn.init.zeros_(self.offset_conv.weight)  # starts as a plain 3x3 conv (DCNv2 initialisation)
        nn.init.zeros_(self.offset_conv.bias)
        conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)  # borrow Conv2d's default initialisation
        self.weight = nn.Parameter(conv.weight.detach().clone())  # (D, D, 3, 3)
        self.bias = nn.Parameter(conv.bias.detach().clone())  # (D,)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, return_points: bool = False):
        """Deformable 3x3 conv over motion tokens ``x`` (B, N, D); ``cond`` is ignored. Returns ``(B, N, D)``."""
        _check_tokens("DeformConvMotion", x, x if cond is None else cond, self.dim, self.grid_hw)
        B, N, D = x.shape
        h, w = self.grid_hw
        x_map = x.transpose(1, 2).reshape(B, D, h, w)  # (B, D, h, w): tokens back on their grid
        pred = self.offset_conv(x_map)  # (B, 27, h, w)
        offset_yx = pred[:, : 2 * self.taps]  # (B, 18, h, w): per tap (dy, dx), torchvision's order
        mask = pred[:, 2 * self.taps :].sigmoid()  # (B, 9, h, w) DCNv2 modulation in (0, 1)
        y = deform_conv2d(x_map, offset_yx, self.weight, self.bias, padding=1, mask=mask)  # (B, D, h, w)
        out = self.out_proj(y.flatten(2).transpose(1, 2))  # (B, N, D)
        if not return_points:
            return out
        dyx = offset_yx.view(B, self.taps, 2, N)  # (B, 9, 2, N): (dy, dx) per tap and token
        dxy = dyx.flip(2).permute(0, 3, 1, 2)  # (B, N, 9, 2): now (dx, dy)
        ky, kx = torch.meshgrid(torch.arange(3.0) - 1, torch.arange(3.0) - 1, indexing="ij")  # (3, 3) each
        tap_xy = torch.stack([kx, ky], dim=-1).reshape(self.taps, 2).to(dxy)  # (9, 2) tap positions in cells
        locations = _cells_to_locations((tap_xy + dxy).transpose(1, 2), self.grid_hw)  # (B, 9, N, 2) in [0, 1]
        return out, locations.transpose(1, 2).unsqueeze(1)  # (B, 1, N, 9, 2): one "head"


MOTION_ATTENTION: dict[str, type[nn.Module]] = {
    "dc": DeformConvMotion,
    "da": DeformAttnMotion,
    "dca": DeformCrossAttnMotion,
}


def motion_attention_class(name: str) -> type[nn.Module]:
    """Return the motion-attention class for ``model.motion_attention`` (``dc``, ``da`` or ``dca``)."""
    try:
        return MOTION_ATTENTION[name]
    except KeyError:
        raise ValueError(
            f"model.motion_attention: unknown value {name!r}, expected one of {sorted(MOTION_ATTENTION)}"
        ) from None
