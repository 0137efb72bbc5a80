"""The two kernels of deformable attention: bilinear sampling at fractional points, attention over them.

Coordinate convention, used by every caller: a location is ``(x, y)`` normalised to ``[0, 1]`` over the
map, so pixel (column ``i``, row ``j``) has its centre at ``((i + 0.5) / w, (j + 0.5) / h)``. This is
``F.grid_sample``'s ``align_corners=False`` convention once ``[0, 1]`` is mapped to ``[-1, 1]``. Samples
falling partly or wholly outside the map see zeros there (zero padding).

``deformable_sample`` is the fast path (one ``grid_sample`` call, via ``sample_maps``);
``deformable_sample_reference`` is the slow, explicit four-corner gather that the tests and
``benchmarks/deformable.py`` compare it against. Likewise ``point_attention`` (softmax over the K sampled
keys, hand-written backward that keeps every gradient contiguous) stands beside ``point_attention_reference``.

Autocast: callers build locations and sample inside `float32_region` (autocast off, as Deformable-DETR runs
its sampling in float32); ``point_attention`` runs its custom autograd function in float32 whatever the
input dtypes and the autocast state, and returns float32.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

__all__ = [
    "float32_region",
    "deformable_sample",
    "deformable_sample_reference",
    "point_attention",
    "point_attention_reference",
    "sample_maps",
    "token_centres",
]


def float32_region(like: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off for ``like``'s device type: ops inside run in the dtype of their inputs (cast them to float32).

    A device without autocast (the meta device of the config check) has nothing to switch off.
    """
    if not torch.amp.is_autocast_available(like.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, enabled=False)


def _check_shapes(value: torch.Tensor, locations: torch.Tensor) -> None:
    if value.dim() != 5:
        raise ValueError(f"deformable_sample: value must be (B, nh, dh, h, w), got shape {tuple(value.shape)}")
    if locations.dim() != 5 or locations.shape[-1] != 2:
        raise ValueError(
            f"deformable_sample: locations must be (B, nh, N, K, 2), got shape {tuple(locations.shape)}"
        )
    if locations.shape[:2] != value.shape[:2]:
        raise ValueError(
            "deformable_sample: value and locations disagree on (B, nh): "
            f"{tuple(value.shape[:2])} vs {tuple(locations.shape[:2])}"
        )


def sample_maps(value: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """Sample per-head maps at a ``(P, Q)`` array of points per head; grid_sample's native layout.

    The layout-free core of :func:`deformable_sample`: callers choose what ``P`` and ``Q`` are. The motion
    attentions pass ``(K, N)`` so that the output's innermost axis is the N tokens, which keeps the
    elementwise attention maths that follows contiguous and vectorised.

    Args:
        value: ``(B, nh, C, h, w)`` per-head feature maps.
        locations: ``(B, nh, P, Q, 2)`` points, ``(x, y)`` normalised to ``[0, 1]``, any value allowed.

    Returns:
        ``(B, nh, C, P, Q)`` bilinear samples (zero padding, ``align_corners=False``).
    """
    _check_shapes(value, locations)
    B, nh, C, h, w = value.shape
    _, _, P, Q, _ = locations.shape
    maps = value.flatten(0, 1)  # (B*nh, C, h, w): heads become batch items
    grid = locations.flatten(0, 1) * 2.0 - 1.0  # (B*nh, P, Q, 2): [0, 1] -> grid_sample's [-1, 1], still (x, y)
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(B, nh, C, P, Q)  # (B, nh, C, P, Q): the P x Q points are the output "image"


def deformable_sample(value: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample every head's map at its own points in one ``grid_sample`` call.

    Args:
        value: ``(B, nh, dh, h, w)`` per-head feature maps.
        locations: ``(B, nh, N, K, 2)`` sampling points, ``(x, y)`` normalised to ``[0, 1]`` (pixel centres at
            ``(i + 0.5) / w``); points outside ``[0, 1]`` blend with zero padding.

    Returns:
        ``(B, nh, N, K, dh)`` sampled features (a permuted view, not copied).
    """
    return sample_maps(value, locations).permute(0, 1, 3, 4, 2)  # (B, nh, N, K, dh)


def deformable_sample_reference(value: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """Slow, explicit bilinear gather with the same semantics as :func:`deformable_sample`.

    Loops over batch items, heads and the four neighbouring pixels of each point; a corner outside the map
    contributes zero (``grid_sample`` zero padding, ``align_corners=False``). Differentiable in both inputs.
    """
    _check_shapes(value, locations)
    B, nh, dh, h, w = value.shape
    _, _, N, K, _ = locations.shape
    out = value.new_zeros(B, nh, N, K, dh)
    for b in range(B):
        for head in range(nh):
            feat = value[b, head]  # (dh, h, w)
            px = locations[b, head, ..., 0] * w - 0.5  # (N, K) x in pixels, 0 = centre of column 0
            py = locations[b, head, ..., 1] * h - 0.5  # (N, K) y in pixels, 0 = centre of row 0
            x0 = torch.floor(px)
            y0 = torch.floor(py)
            acc = value.new_zeros(N, K, dh)
            for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                weight = (1 - (px - cx).abs()) * (1 - (py - cy).abs())  # (N, K) bilinear weight of this corner
                inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)  # (N, K)
                col = cx.clamp(0, w - 1).long()
                row = cy.clamp(0, h - 1).long()
                corner = feat[:, row, col].permute(1, 2, 0)  # (N, K, dh) features at this corner
                acc = acc + corner * (weight * inside)[..., None]
            out[b, head] = acc
    return out


def token_centres(grid_hw: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Return the ``(N, 2)`` centres of an ``(h, w)`` token grid, ``(x, y)`` in ``[0, 1]``, row-major order."""
    h, w = grid_hw
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h  # (h,)
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w  # (w,)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([grid_x, grid_y], dim=-1).reshape(h * w, 2)  # (N, 2): token n = row * w + col


class _PointAttention(torch.autograd.Function):
    """Softmax attention over K sampled points, with a backward whose gradients come out contiguous.

    Autograd's own backward of the same maths yields a permuted gradient for the sampled keys, which
    ``grid_sample``'s backward then copies (about 6% of a DCA step at paper size); writing the four
    products out by hand keeps every tensor in the ``(B, nh, C, K, N)`` layout.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, kv: torch.Tensor, scale: float) -> torch.Tensor:
        dh = q.shape[2]
        keys, values = kv[:, :, :dh], kv[:, :, dh:]  # (B, nh, dh, K, N) each
        attn = ((q * keys).sum(2, keepdim=True) * scale).softmax(dim=3)  # (B, nh, 1, K, N): over the K points
        ctx.save_for_backward(q, kv, attn)
        ctx.scale = scale
        return (values * attn).sum(3)  # (B, nh, dh, N)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, kv, attn = ctx.saved_tensors
        dh = q.shape[2]
        keys, values = kv[:, :, :dh], kv[:, :, dh:]  # (B, nh, dh, K, N) each
        grad = grad_out.to(kv.dtype).contiguous().unsqueeze(3)  # (B, nh, dh, 1, N) in the forward's dtype
        grad_kv = torch.empty_like(kv)  # (B, nh, 2dh, K, N): written in two halves, no concatenation
        torch.mul(grad, attn, out=grad_kv[:, :, dh:])  # d out / d values
        grad_attn = (grad * values).sum(2, keepdim=True)  # (B, nh, 1, K, N)
        grad_logits = attn * (grad_attn - (grad_attn * attn).sum(3, keepdim=True)) * ctx.scale  # softmax'
        torch.mul(q, grad_logits, out=grad_kv[:, :, :dh])  # d out / d keys
        grad_q = (keys * grad_logits).sum(3, keepdim=True)  # (B, nh, dh, 1, N)
        return grad_q, grad_kv, None


def point_attention(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Attention of each query over its own K sampled keys and values (softmax over K, scaled by 1/sqrt(dh)).

    Args:
        q: ``(B, nh, dh, N)`` queries per head.
        kv: ``(B, nh, 2dh, K, N)`` sampled keys (first dh channels) and values (last dh), as from
            :func:`sample_maps` with K-major locations.

    Returns:
        ``(B, nh, dh, N)`` attended values, in the wider of float32 and the inputs' dtypes (float32 for bf16
        inputs): the forward and the hand-written backward both run with autocast off in that dtype.
    """
    if kv.dim() != 5 or q.dim() != 4 or kv.shape[2] != 2 * q.shape[2] or q.shape[:2] != kv.shape[:2]:
        raise ValueError(
            f"point_attention: expected q (B, nh, dh, N) and kv (B, nh, 2dh, K, N), "
            f"got {tuple(q.shape)} and {tuple(kv.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(q.dtype, kv.dtype), torch.float32)
    with float32_region(q):  # autograd casts the float32 gradients back to the inputs' dtypes
        return _PointAttention.apply(q.to(dtype).unsqueeze(3).contiguous(), kv.to(dtype), q.shape[2] ** -0.5)


def point_attention_reference(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Plain-autograd :func:`point_attention`: the same maths written in the obvious way."""
    dh = q.shape[2]
    keys, values = kv.split(dh, dim=2)  # (B, nh, dh, K, N) each
    logits = torch.einsum("bhcn,bhckn->bhkn", q, keys) / dh**0.5  # (B, nh, K, N)
    attn = logits.softmax(dim=2)  # over the K points
    return torch.einsum("bhkn,bhckn->bhcn", attn, values)  # (B, nh, dh, N)
