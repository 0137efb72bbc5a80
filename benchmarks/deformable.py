"""Benchmark: DCA's cost as a multiple of dense cross-attention (forward+backward), and sampling error.

For each size (``demo`` from params.yaml: dim, heads, grid = img / patch, batch = train.batch_size; ``paper``:
dim 256, heads 8, grid 16x12, batch 32) and K in (4, 8) it times forward + backward, the median of repeats
with the variants interleaved (on CPU the clock is this process's CPU time, which other jobs on a shared machine
disturb less than wall time, though not at all; on CUDA it is wall time after synchronising):

- ``dense``: ``F.scaled_dot_product_attention`` of every query over every token (q from the motion tokens,
  k, v from the features, output projection): the baseline of the ratio;
- ``dca``: :class:`vremd.model.deformable.DeformCrossAttnMotion` (one ``grid_sample`` for all heads);
- ``dca-loop``: the same module sampling with a Python loop over heads (one ``grid_sample`` per head);
- ``da`` and ``dc``: the other two motion attentions, for the cost side of paper table 6.

It also prints the max |fast - reference| of ``deformable_sample`` in float32 at each size. The figure
``dca/dense`` is a cost multiple (lower is better); the target is <= 2x at paper size (K=4).

    python -m benchmarks.deformable                      # CPU, 1 thread
    python -m benchmarks.deformable --device cuda --repeats 50
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vremd.config import load_config
from vremd.model.deformable import DeformAttnMotion, DeformConvMotion, DeformCrossAttnMotion
from vremd.model.sampling import deformable_sample, deformable_sample_reference

from benchmarks.result import Result, write_results
from benchmarks.timing import Timing, interleaved

TARGET_COST = 2.0  # DCA at most 2x dense attention at paper size, K=4


@dataclass(frozen=True)
class Size:
    name: str
    batch: int
    dim: int
    heads: int
    grid_hw: tuple[int, int]


class DenseCrossAttention(nn.Module):
    """Baseline: every motion query attends over all N feature tokens (SDPA), same projections as DCA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q_proj(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, nh, N, dh)
        k, v = self.kv_proj(cond).view(B, N, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, nh, N, dh) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, dh)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class LoopedDCA(nn.Module):
    """DCA whose sampling loops over heads in Python (one grid_sample per head): the naive GPU variant."""

    def __init__(self, dca: DeformCrossAttnMotion) -> None:
        super().__init__()
        self.dca = dca

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        q, locations = self.dca.queries_and_locations(x, cond)  # (B, N, D), (B, nh, K, N, 2)
        kv = self.dca.key_value_maps(x)  # (B, nh, 2dh, h, w)
        per_head = [
            F.grid_sample(kv[:, i], locations[:, i] * 2 - 1, mode="bilinear", align_corners=False)  # (B, 2dh, K, N)
            for i in range(kv.shape[1])
        ]
        return self.dca.attend(q, torch.stack(per_head, dim=1))  # (B, N, D)


def _clock(device: torch.device) -> float:
    """Seconds: this process's CPU time on CPU (robust to other jobs on a shared machine), else wall time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def time_fwd_bwd(
    variants: dict[str, nn.Module], x: torch.Tensor, cond: torch.Tensor, warmup: int, repeats: int
) -> dict[str, Timing]:
    """Seconds of one forward + backward per variant, variants interleaved repeat by repeat."""

    def step(module: nn.Module) -> None:
        module(x, cond).square().mean().backward()  # grads into the module and both inputs
        module.zero_grad(set_to_none=True)
        x.grad = cond.grad = None

    return interleaved({name: (lambda m=m: step(m)) for name, m in variants.items()}, repeats, warmup,
                       clock=lambda: _clock(x.device))


def sampling_error(size: Size, num_points: int, device: torch.device, gen: torch.Generator) -> float:
    """Max |deformable_sample - reference| in float32, locations partly outside [0, 1]."""
    h, w = size.grid_hw
    dh, n = size.dim // size.heads, h * w
    value = torch.randn(size.batch, size.heads, dh, h, w, generator=gen).to(device)  # (B, nh, dh, h, w)
    loc = (torch.rand(size.batch, size.heads, n, num_points, 2, generator=gen) * 1.4 - 0.2).to(device)
    return (deformable_sample(value, loc) - deformable_sample_reference(value, loc)).abs().max().item()


def sizes_from_params(params: str) -> list[Size]:
    """The demo profile's sizes (grid = image / patch) and the paper's DCA sizes."""
    demo = load_config(params, profile="demo")
    model = demo.model
    demo_grid = (model.img_height // model.patch_size, model.img_width // model.patch_size)
    return [
        Size("demo", demo.train.batch_size, model.dim, model.heads, demo_grid),
        Size("paper", 32, 256, 8, (16, 12)),
    ]


def run(size: Size, num_points: int, device: torch.device, warmup: int, repeats: int) -> dict[str, Timing]:
    """Seconds per batch (fwd + bwd) of each variant at one size and K."""
    gen = torch.Generator().manual_seed(0)
    h, w = size.grid_hw
    x = torch.randn(size.batch, h * w, size.dim, generator=gen).to(device).requires_grad_()
    cond = torch.randn(size.batch, h * w, size.dim, generator=gen).to(device).requires_grad_()
    dca = DeformCrossAttnMotion(size.dim, size.heads, num_points, size.grid_hw).to(device)
    looped = LoopedDCA(dca)
    with torch.no_grad():  # the looped variant must compute the same thing
        assert torch.allclose(dca(x, cond), looped(x, cond), atol=1e-5), "looped DCA disagrees with DCA"
    variants = {
        "dense": DenseCrossAttention(size.dim, size.heads),
        "dca": dca,
        "dca-loop": looped,
        "da": DeformAttnMotion(size.dim, size.heads, num_points, size.grid_hw),
        "dc": DeformConvMotion(size.dim, size.heads, num_points, size.grid_hw),
    }
    return time_fwd_bwd({name: m.to(device) for name, m in variants.items()}, x, cond, warmup, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--params", default="params.yaml", help="params file for the demo sizes")
    parser.add_argument("--points", type=int, nargs="+", default=[4, 8], help="K values (default 4 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = "wall time" if device.type == "cuda" else "process CPU time"
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} warmup={args.warmup} "
          f"repeats={args.repeats} (median ms per batch, forward+backward, {clock}, variants interleaved)")
    print("size   B   D    nh grid   K  dense_ms  dca_ms  dca/dense  loop_ms  loop/dense  da_ms  dc_ms  "
          "max|fast-ref|")
    results = []
    command = "python -m benchmarks.deformable" + (f" --device {args.device}" if args.device != "cpu" else "")
    for size in sizes_from_params(args.params):
        for k in args.points:
            t = run(size, k, device, args.warmup, args.repeats)
            ms = {name: timing.median * 1e3 for name, timing in t.items()}
            err = sampling_error(size, k, device, torch.Generator().manual_seed(1))
            grid = f"{size.grid_hw[0]}x{size.grid_hw[1]}"
            print(f"{size.name:6s} {size.batch:<3d} {size.dim:<4d} {size.heads:<2d} {grid:6s} {k:<2d} "
                  f"{ms['dense']:8.2f} {ms['dca']:7.2f} {ms['dca'] / ms['dense']:9.2f}x "
                  f"{ms['dca-loop']:8.2f} {ms['dca-loop'] / ms['dense']:9.2f}x "
                  f"{ms['da']:6.2f} {ms['dc']:6.2f}  {err:.2e}", flush=True)
            if k == 4:
                target = {"target": TARGET_COST, "op": "<="} if size.name == "paper" else {}
                results.append(Result(
                    f"deformable.{size.name}", f"DCA forward+backward, {size.name} size ({grid} grid, D={size.dim}, "
                    f"{size.heads} heads, batch {size.batch}, K=4), {device.type}",
                    "dense cross-attention (SDPA, same projections)", ms["dca"] / ms["dense"], "x cost", command,
                    details=f"ms: DCA {t['dca'].text(1e3, 'ms')}, dense {t['dense'].text(1e3, 'ms')}; "
                            f"max |fast - reference| sampling {err:.1e}",
                    extra={name: {"median_ms": timing.median * 1e3, "min_ms": timing.min * 1e3}
                           for name, timing in t.items()}, **target))
    if args.json:
        write_results(args.json, results)
    return 1 if any(r.passed is False for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
