"""Deformable sampling (fast vs reference) and the three motion-attention modules (DC, DA, DCA)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from vremd.model.deformable import (
    MOTION_ATTENTION,
    DeformAttnMotion,
    DeformConvMotion,
    DeformCrossAttnMotion,
    deformable_sample,
    deformable_sample_reference,
    motion_attention_class,
)
from vremd.model.sampling import point_attention, point_attention_reference, sample_maps, token_centres

# Every axis a different size: B=2, nh=3, dh=5, (h, w) = (7, 4), N=6, K=4.
B, NH, DH, H, W, N, K = 2, 3, 5, 7, 4, 6, 4


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _locations_with_edge_cases(gen: torch.Generator) -> torch.Tensor:
    """(B, nh, N, K, 2) float64 locations: inside, exactly on 0 / 1 and pixel centres/edges, and far outside."""
    loc = torch.rand(B, NH, N, K, 2, generator=gen, dtype=torch.float64) * 1.8 - 0.4  # (B, nh, N, K, 2)
    loc[0, 0, 0, 0] = torch.tensor([0.0, 0.0])
    loc[0, 0, 0, 1] = torch.tensor([1.0, 1.0])
    loc[0, 0, 0, 2] = torch.tensor([0.0, 1.0])
    loc[0, 0, 0, 3] = torch.tensor([1.0, 0.5])
    loc[0, 1, 1, 0] = torch.tensor([0.5 / W, 0.5 / H])  # centre of pixel (0, 0)
    loc[0, 1, 1, 1] = torch.tensor([(W - 0.5) / W, (H - 0.5) / H])  # centre of the last pixel
    loc[0, 1, 1, 2] = torch.tensor([-0.5 / W, 2.0 / H])  # half a pixel outside on the left
    loc[0, 1, 1, 3] = torch.tensor([(W + 1.0) / W, -1.0 / H])  # more than a pixel outside: zero
    loc[1, 2, 5] = torch.tensor([[-3.0, 0.5], [0.5, 4.0], [1.0 + 1e-9, 0.3], [-1e-9, 0.7]])
    return loc


def test_fast_matches_reference_float64_in_and_out_of_bounds():
    gen = _gen(0)
    value = torch.randn(B, NH, DH, H, W, generator=gen, dtype=torch.float64)
    loc = _locations_with_edge_cases(gen)
    fast = deformable_sample(value, loc)
    ref = deformable_sample_reference(value, loc)
    assert fast.shape == (B, NH, N, K, DH)
    assert (fast - ref).abs().max().item() <= 1e-10
    # Spot-check the conventions themselves, not just agreement: pixel centres read the pixel exactly,
    # far outside reads zero, half a pixel outside reads half the border pixel.
    assert torch.allclose(fast[0, 1, 1, 0], value[0, 1, :, 0, 0], atol=1e-12)
    assert torch.allclose(fast[0, 1, 1, 1], value[0, 1, :, H - 1, W - 1], atol=1e-12)
    assert torch.allclose(fast[0, 1, 1, 3], torch.zeros(DH, dtype=torch.float64))
    assert torch.allclose(fast[1, 2, 5, :2], torch.zeros(2, DH, dtype=torch.float64))


def test_fast_and_reference_gradients_agree():
    gen = _gen(1)
    value = torch.randn(B, NH, DH, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    loc = (torch.rand(B, NH, N, K, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    weight = torch.randn(B, NH, N, K, DH, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (deformable_sample, deformable_sample_reference):
        grads.append(torch.autograd.grad((fn(value, loc) * weight).sum(), (value, loc)))
    for fast, ref in zip(*grads):
        assert (fast - ref).abs().max().item() <= 1e-10


def test_gradcheck_value_and_locations():
    gen = _gen(2)
    value = torch.randn(2, 2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    loc = torch.rand(2, 2, 3, 2, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # some outside
    loc.requires_grad_()
    assert torch.autograd.gradcheck(deformable_sample, (value, loc), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda v: deformable_sample(v, loc.detach()), (value,))


def test_sample_maps_is_deformable_sample_with_free_point_layout():
    gen = _gen(20)
    value = torch.randn(B, NH, DH, H, W, generator=gen, dtype=torch.float64)
    loc = _locations_with_edge_cases(gen)  # (B, nh, N, K, 2)
    by_kn = sample_maps(value, loc.transpose(2, 3))  # (B, nh, dh, K, N)
    assert torch.equal(by_kn.permute(0, 1, 4, 3, 2), deformable_sample(value, loc))


def test_point_attention_matches_reference_with_gradients():
    gen = _gen(21)
    q = torch.randn(B, NH, DH, N, generator=gen, dtype=torch.float64, requires_grad=True)  # (B, nh, dh, N)
    kv = torch.randn(B, NH, 2 * DH, K, N, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(B, NH, DH, N, generator=gen, dtype=torch.float64)
    fast, ref = point_attention(q, kv), point_attention_reference(q, kv)
    assert fast.shape == (B, NH, DH, N)
    assert (fast - ref).abs().max().item() <= 1e-12
    grads_fast = torch.autograd.grad((fast * weight).sum(), (q, kv))
    grads_ref = torch.autograd.grad((ref * weight).sum(), (q, kv))
    for a, b in zip(grads_fast, grads_ref):
        assert (a - b).abs().max().item() <= 1e-12
    small_q = torch.randn(1, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    small_kv = torch.randn(1, 2, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(point_attention, (small_q, small_kv))
    with pytest.raises(ValueError, match="point_attention"):
        point_attention(q, kv[:, :, :-1])


def test_one_cell_offset_in_x_moves_one_column_on_16x12():
    """The Deformable-DETR (H, W) vs (x, y) bug: a +1 cell x offset must land on the next column, not row."""
    h, w = 16, 12
    value = torch.randn(1, 1, 4, h, w, generator=_gen(3), dtype=torch.float64)  # (B, nh, dh, h, w)
    centres = token_centres((h, w), dtype=torch.float64)  # (N, 2)
    cell = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float64)
    for step_xy, (drow, dcol) in (((1.0, 0.0), (0, 1)), ((0.0, 1.0), (1, 0))):
        loc = (centres + torch.tensor(step_xy, dtype=torch.float64) * cell).view(1, 1, h * w, 1, 2)
        sampled = deformable_sample(value, loc).view(h, w, 4)  # (h, w, dh): token n = row * w + col
        expected = value[0, 0].permute(1, 2, 0)  # (h, w, dh)
        assert torch.allclose(sampled[: h - drow, : w - dcol], expected[drow:, dcol:], atol=1e-12)
    # The module side of the convention: theta's (x, y) offset of +1 cell in x points at token n + 1.
    dca = DeformCrossAttnMotion(dim=8, heads=2, num_points=3, grid_hw=(h, w))
    with torch.no_grad():
        dca.theta.weight.zero_()
        dca.theta.bias.copy_(torch.tensor([1.0, 0.0]).repeat(2 * 3))
    x = torch.randn(1, h * w, 8, generator=_gen(4))
    _, points = dca(x, x, return_points=True)  # (1, nh, N, K, 2)
    tokens = torch.arange(h * w).view(h, w)[:, : w - 1].flatten()  # every token except the last column
    assert torch.allclose(points[0, 1, tokens, 2], token_centres((h, w))[tokens + 1], atol=1e-6)


def test_zero_offset_dca_is_value_projection_of_each_token():
    """All K points at the reference: softmax over K identical keys is uniform, so out = W_o (W_v x)."""
    dim, heads, h, w = 12, 3, 4, 5
    dca = DeformCrossAttnMotion(dim, heads, num_points=4, grid_hw=(h, w)).double()
    with torch.no_grad():
        dca.theta.weight.zero_()
        dca.theta.bias.zero_()
    x = torch.randn(2, h * w, dim, generator=_gen(5), dtype=torch.float64)
    cond = torch.randn(2, h * w, dim, generator=_gen(6), dtype=torch.float64)
    out, points = dca(x, cond, return_points=True)
    w_v = dca.kv_proj.weight[dim:]  # (D, D): rows ordered (2, nh, dh), values second
    b_v = dca.kv_proj.bias[dim:]  # (D,)
    values = x @ w_v.T + b_v  # (B, N, D)
    expected = values @ dca.out_proj.weight.T + dca.out_proj.bias  # (B, N, D)
    assert (out - expected).abs().max().item() <= 1e-12
    assert torch.allclose(points, token_centres((h, w), dtype=torch.float64)[None, None, :, None].expand_as(points))


@pytest.mark.parametrize("name", sorted(MOTION_ATTENTION))
@pytest.mark.parametrize("grid_hw", [(16, 12), (4, 3)])
def test_shapes(name, grid_hw):
    dim, heads, points = 24, 3, 5
    module = motion_attention_class(name)(dim, heads, points, grid_hw)
    n = grid_hw[0] * grid_hw[1]
    x = torch.randn(2, n, dim, generator=_gen(7))
    cond = torch.randn(2, n, dim, generator=_gen(8))
    assert module(x, cond).shape == (2, n, dim)
    out, locations = module(x, cond, return_points=True)
    assert out.shape == (2, n, dim)
    expected = (2, 1, n, 9, 2) if name == "dc" else (2, heads, n, points, 2)
    assert locations.shape == expected
    assert torch.isfinite(out).all() and torch.isfinite(locations).all()


@pytest.mark.parametrize("name", sorted(MOTION_ATTENTION))
def test_every_parameter_learns_from_a_fresh_module(name):
    """Zero-initialised offset generators block some paths at step 0; after one step all parameters get grads."""
    dim, grid_hw = 16, (4, 3)
    module = MOTION_ATTENTION[name](dim, 2, 3, grid_hw)
    x = torch.randn(2, 12, dim, generator=_gen(9))
    cond = torch.randn(2, 12, dim, generator=_gen(10))
    target = torch.randn(2, 12, dim, generator=_gen(11))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        loss = (module(x, cond) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    for pname, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"


def test_only_dca_reads_cond():
    grid_hw, dim = (4, 3), 16
    x = torch.randn(2, 12, dim, generator=_gen(12))
    cond_a = torch.randn(2, 12, dim, generator=_gen(13))
    cond_b = torch.randn(2, 12, dim, generator=_gen(14))
    for name, cls in MOTION_ATTENTION.items():
        module = cls(dim, 2, 3, grid_hw)
        if name == "dca":
            torch.nn.init.normal_(module.theta.weight, std=0.1)
        changed = not torch.allclose(module(x, cond_a), module(x, cond_b))
        assert changed == (name == "dca"), name


def test_dc_points_are_where_deform_conv_samples():
    """DC's returned tap locations, read by deformable_sample, reproduce torchvision's (dy, dx) offsets."""
    dim, (h, w) = 3, (5, 4)
    dc = DeformConvMotion(dim, 1, 1, (h, w)).double()
    torch.nn.init.normal_(dc.offset_conv.weight, std=0.3, generator=_gen(15))
    x = torch.randn(2, h * w, dim, generator=_gen(16), dtype=torch.float64)
    _, points = dc(x, x, return_points=True)  # (B, 1, N, 9, 2)
    x_map = x.transpose(1, 2).reshape(2, dim, h, w)  # (B, D, h, w)
    offset = dc.offset_conv(x_map)[:, :18]  # (B, 18, h, w)
    selector = torch.zeros(9, dim, dim, 9, dtype=torch.float64)  # output block t copies tap t, channel-wise
    for tap in range(9):
        selector[tap, :, :, tap] = torch.eye(dim, dtype=torch.float64)
    taps = deform_conv2d(x_map, offset, selector.reshape(9 * dim, dim, 3, 3), padding=1)  # (B, 9D, h, w)
    taps = taps.view(2, 9, dim, h * w).permute(0, 3, 1, 2)  # (B, N, 9, D)
    sampled = deformable_sample(x_map[:, None], points)[:, 0]  # (B, N, 9, D)
    assert (sampled - taps).abs().max().item() <= 1e-10


def test_unknown_name_lists_valid_keys():
    with pytest.raises(ValueError, match=r"'dcn'.*\['da', 'dc', 'dca'\]"):
        motion_attention_class("dcn")
    assert motion_attention_class("dca") is DeformCrossAttnMotion
    assert MOTION_ATTENTION["da"] is DeformAttnMotion


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        DeformCrossAttnMotion(10, 3, 4, (4, 3))
    module = DeformAttnMotion(8, 2, 2, (4, 3))
    with pytest.raises(ValueError, match=r"DeformAttnMotion: x must be \(B, N=12, D=8\)"):
        module(torch.randn(1, 13, 8), torch.randn(1, 13, 8))
    with pytest.raises(ValueError, match="disagree"):
        deformable_sample(torch.randn(2, 3, 4, 5, 6), torch.rand(2, 2, 7, 1, 2))


def test_dca_reference_points_come_from_z():
    """Eq. 3's p_z: the token grid for a fresh module, then the grid plus rho(z), per head, in cells."""
    dim, heads, h, w = 12, 3, 4, 5
    dca = DeformCrossAttnMotion(dim, heads, num_points=2, grid_hw=(h, w)).double()
    x = torch.randn(2, h * w, dim, generator=_gen(20), dtype=torch.float64)
    cond = torch.randn(2, h * w, dim, generator=_gen(21), dtype=torch.float64)
    with torch.no_grad():
        dca.theta.bias.zero_()  # no offsets: every point sits at its reference p_z
    _, fresh = dca(x, cond, return_points=True)  # (B, nh, N, K, 2)
    centres = token_centres((h, w), dtype=torch.float64)  # (N, 2)
    assert torch.equal(fresh, centres[None, None, :, None].expand_as(fresh))  # starts at the token grid
    with torch.no_grad():
        torch.nn.init.normal_(dca.reference.weight, std=0.3)
    _, moved = dca(x, cond, return_points=True)
    z = dca.z_proj(cond)  # (B, N, D)
    shift = (z @ dca.reference.weight.T + dca.reference.bias).view(2, h * w, heads, 2).permute(0, 2, 1, 3)  # cells
    expected = centres + shift * torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float64)  # (B, nh, N, 2)
    torch.testing.assert_close(moved, expected[:, :, :, None].expand_as(moved))
    _, other = dca(x, torch.randn_like(cond), return_points=True)
    assert not torch.allclose(other, moved)  # a different F moves p_z


class _DtypeLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the dtypes of every grid_sampler call."""

    def __init__(self):
        super().__init__()
        self.grid_sampler: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "grid_sampler" in func.__name__:
            self.grid_sampler += [a.dtype for a in args[:2]]
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["dca", "da"])
def test_sampling_runs_in_float32_under_bf16_autocast(name):
    """Locations and grid_sample in float32 under autocast; forward and gradients stay close to float32."""
    dim, heads, grid_hw = 32, 4, (8, 6)
    torch.manual_seed(0)
    module = MOTION_ATTENTION[name](dim, heads, 4, grid_hw)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))  # offsets, p_z and weights away from their initial values
    x = torch.randn(2, 48, dim, generator=_gen(22), requires_grad=True)
    cond = torch.randn(2, 48, dim, generator=_gen(23), requires_grad=True)
    out32, points32 = module(x, cond, return_points=True)
    grads32 = torch.autograd.grad(out32.square().sum(), [x, cond] + list(module.parameters()), allow_unused=True)
    log = _DtypeLog()
    with torch.autocast("cpu", dtype=torch.bfloat16), log:
        out, points = module(x, cond, return_points=True)
        loss = out.float().square().sum()
    grads = torch.autograd.grad(loss, [x, cond] + list(module.parameters()), allow_unused=True)
    assert log.grid_sampler and set(log.grid_sampler) == {torch.float32}
    assert points.dtype == torch.float32
    assert out.dtype == torch.bfloat16  # out_proj is a bf16 matmul under autocast, as any other linear
    assert (points - points32).abs().max() < 0.01  # only q (a bf16 linear) enters the location path rounded
    assert (out.float() - out32).abs().max() < 0.05 * out32.abs().max()
    for g, g32 in zip(grads, grads32):  # relative error of the whole gradient, bf16 matmuls included
        if g32 is None:  # DA does not read cond
            assert g is None
            continue
        assert g.dtype == g32.dtype and torch.isfinite(g).all()
        assert (g - g32).norm() <= 0.1 * g32.norm()


def test_point_attention_autograd_under_autocast_matches_float32_reference():
    q = torch.randn(B, NH, DH, N, generator=_gen(24)).to(torch.bfloat16).requires_grad_()
    kv = torch.randn(B, NH, 2 * DH, K, N, generator=_gen(25)).to(torch.bfloat16).requires_grad_()
    q32 = q.detach().float().requires_grad_()
    kv32 = kv.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = point_attention(q, kv)  # bf16 inputs, autocast on
        grad_out = torch.randn(out.shape, generator=_gen(26))
        (out * grad_out).sum().backward()
    ref = point_attention_reference(q32, kv32)  # plain autograd in float32
    (ref * grad_out).sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # computed in float32 from the same values
    assert q.grad.dtype == torch.bfloat16 and kv.grad.dtype == torch.bfloat16  # cast back to the inputs' dtype
    torch.testing.assert_close(q.grad, q32.grad.to(torch.bfloat16))
    torch.testing.assert_close(kv.grad, kv32.grad.to(torch.bfloat16))
