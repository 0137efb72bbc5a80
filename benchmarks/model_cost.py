"""Model cost: parameters, GFLOPs and CPU step time of the `paper` model at two widths, and of the demo model.

Prints (1) for the paper profile (ViT-L/16 + VREMD modules, random init) at each width ``model.dim`` in
``--widths`` (default: 256, the old projected width, and the backbone width 1024 the paper uses): a per-module
table of parameters and forward GFLOPs for one sample (3 frames), and the CPU time of one training step of the
trainable part (everything after the frozen backbone: forward + backward from backbone tokens, batch
``--paper-batch``), then the ratios between the widths; (2) the forward+backward time of one training step
for the `demo` config and the `smoke` config on this CPU, each beside the baseline model (hkme off, bmd off) of
the same config, as a ratio.

    python benchmarks/model_cost.py [--params params.yaml] [--widths 256 1024] [--paper-batch 2] [--repeats 3]
                                    [--skip-paper] [--skip-demo]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from vremd.config import ModelConfig, load_config, smoke_config
from vremd.model.cost import ModuleCost, format_cost_table, module_flops, parameter_counts
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.losses import heatmap_mse
from vremd.model.vremd import build_model

# attention heads per width: ViT-L's 64-channel heads at 1024, the old 8 heads of 32 channels at 256
HEADS_FOR_WIDTH = {256: 8, 512: 8, 768: 12, 1024: 16}


@dataclasses.dataclass(frozen=True)
class WidthCost:
    """One width's figures: parameters and GFLOPs (whole model, VREMD modules) and the modules' CPU step."""

    dim: int
    params: int
    module_params: int
    backbone_gflops: float
    module_gflops: float
    step_ms: float


def modules_step_ms(model: torch.nn.Module, tokens: torch.Tensor, heatmap_hw: tuple[int, int], repeats: int) -> float:
    """Median ms of forward + backward (heatmap MSE) of everything after the backbone, after one warm-up."""
    B = tokens.shape[0]
    h, w = heatmap_hw
    target = torch.rand(B, model.num_slots, h, w)
    weight = torch.ones(B, model.num_slots)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        heatmap_mse(model.forward_tokens(tokens)["heatmaps"], target, weight).backward()
        times.append((time.perf_counter() - start) * 1e3)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def width_cost(cfg: ModelConfig, batch: int, repeats: int) -> WidthCost:
    """Print the per-module table of ``cfg`` (one sample) and return its figures."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    frames = torch.randn(1, 3, 3, cfg.img_height, cfg.img_width)  # one sample: 3 frames
    total, per_child = module_flops(model, frames)
    rows = [dataclasses.replace(r, flops=per_child.get(r.name, 0)) for r in parameter_counts(model)]
    print(f"\npaper model at model.dim={cfg.dim} (heads {cfg.heads}, ViT {cfg.embed_dim}x{cfg.depth}, "
          f"projection {'none' if model.input_proj is None else f'{cfg.embed_dim}->{cfg.dim}'})")
    print(format_cost_table(rows, per="sample"))
    backbone = next(r for r in rows if r.name == "backbone")
    modules = ModuleCost("VREMD modules", sum(r.params for r in rows if r is not backbone),
                         sum(r.trainable for r in rows if r is not backbone), total - backbone.flops)
    tokens = torch.randn(batch, 3, model.backbone.grid_hw[0] * model.backbone.grid_hw[1], cfg.embed_dim)
    heatmap_hw = (cfg.img_height // HEATMAP_STRIDE, cfg.img_width // HEATMAP_STRIDE)
    step = modules_step_ms(model.train(), tokens, heatmap_hw, repeats)
    print(f"VREMD modules: {modules.params / 1e6:.2f} M params, {modules.flops / 1e9:.2f} GFLOPs/sample "
          f"(backbone {backbone.flops / 1e9:.2f}); CPU step of the trainable part, batch {batch}: {step:.0f} ms")
    return WidthCost(cfg.dim, sum(r.params for r in rows), modules.params, backbone.flops / 1e9,
                     modules.flops / 1e9, step)


def paper_widths(params_path: str, widths: list[int], batch: int, repeats: int) -> None:
    """Cost of the paper profile's model at each width, then each width against the first."""
    base = dataclasses.replace(load_config(params_path, profile="paper").model, pretrained="")  # random init
    costs = [width_cost(dataclasses.replace(base, dim=d, heads=HEADS_FOR_WIDTH.get(d, base.heads)), batch, repeats)
             for d in widths]
    ref = costs[0]
    print("\n| model.dim | params (M) | VREMD modules (M) | module GFLOPs / sample | module GFLOPs / backbone "
          "| CPU step, batch %d (ms) | step vs dim=%d |" % (batch, ref.dim))
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c in costs:
        print(f"| {c.dim} | {c.params / 1e6:.1f} | {c.module_params / 1e6:.1f} | {c.module_gflops:.1f} | "
              f"{c.module_gflops / c.backbone_gflops:.2f} | {c.step_ms:.0f} | {c.step_ms / ref.step_ms:.2f} |")
    print("(1 MAC = 2 FLOPs; grid_sample, norms, softmax uncounted; the frozen backbone is not in the step)")


def step_ms(cfg: ModelConfig, batch: int, repeats: int) -> float:
    """Median milliseconds of one forward + backward (heatmap MSE) on random input, after one warm-up."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    frames = torch.randn(batch, 3, 3, cfg.img_height, cfg.img_width)
    target = torch.rand(batch, cfg.num_joints, cfg.img_height // 4, cfg.img_width // 4)
    weight = torch.ones(batch, cfg.num_joints)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = heatmap_mse(model(frames)["heatmaps"], target, weight)
        loss.backward()
        times.append((time.perf_counter() - start) * 1e3)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def step_times(name: str, cfg: ModelConfig, batch: int, repeats: int) -> None:
    """Print forward+backward ms of ``cfg`` and of its baseline (hkme off, bmd off), with the ratio."""
    full = step_ms(cfg, batch, repeats)
    base = step_ms(dataclasses.replace(cfg, hkme=False, bmd=False), batch, repeats)
    trainable = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad)
    print(f"{name}: batch {batch}, {cfg.img_height}x{cfg.img_width}, {trainable / 1e6:.2f} M trainable: "
          f"forward+backward {full:.1f} ms (VREMD) vs {base:.1f} ms (baseline), ratio {full / base:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file holding the demo and paper profiles")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024], help="model.dim values of the paper model")
    parser.add_argument("--paper-batch", type=int, default=2, help="batch of the paper model's CPU step")
    parser.add_argument("--demo-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the ViT-L models (about a minute)")
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo and smoke step times")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not args.skip_paper:
        paper_widths(args.params, args.widths, args.paper_batch, args.repeats)
    if not args.skip_demo:
        step_times("demo", load_config(args.params, profile="demo").model, args.demo_batch, args.repeats)
        smoke = smoke_config()
        step_times("smoke", smoke.model, smoke.train.batch_size, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
