"""Model cost: parameters, GFLOPs and CPU step time of the `paper` model at two widths, and of the demo model.

Prints (1) for the paper profile (ViT-L/16 + VREMD modules, random init) at each width ``model.dim`` in
``--widths`` (default: 256, the old projected width, and the backbone width 1024 the paper uses): a per-module
table of parameters and forward GFLOPs for one sample (3 frames), and the CPU time of one training step of the
trainable part (everything after the frozen backbone: forward + backward from backbone tokens, batch
``--paper-batch``), then the ratios between the widths; (2) the forward+backward time of one training step
for the `demo` config and the `smoke` config on this CPU, each beside the baseline model (hkme off, bmd off) of
the same config, as a ratio. Step times are interleaved across the compared models (median and min).
Both ratios are cost multiples reported without a target.

    python -m benchmarks.model_cost [--params params.yaml] [--widths 256 1024] [--paper-batch 2] [--repeats 3]
                                    [--skip-paper] [--skip-demo] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from vremd.config import ModelConfig, load_config, smoke_config
from vremd.ablation.cost import ModuleCost, format_cost_table, module_flops, parameter_counts
from vremd.model.heads import HEATMAP_STRIDE
from vremd.train.losses import heatmap_mse
from vremd.model.vremd import build_model

from benchmarks.result import Result, write_results
from benchmarks.timing import Timing, interleaved

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
    step: Timing


def modules_step(model: torch.nn.Module, tokens: torch.Tensor, heatmap_hw: tuple[int, int]):
    """A callable: one forward + backward (heatmap MSE) of everything after the backbone."""
    B = tokens.shape[0]
    h, w = heatmap_hw
    target = torch.rand(B, model.num_slots, h, w)
    weight = torch.ones(B, model.num_slots)

    def step() -> None:
        heatmap_mse(model.forward_tokens(tokens)["heatmaps"], target, weight).backward()
        model.zero_grad(set_to_none=True)

    return step


def width_table(cfg: ModelConfig, model: torch.nn.Module) -> tuple[ModuleCost, ModuleCost, int]:
    """Print the per-module table of ``cfg`` (one sample); return (backbone, VREMD modules, total params)."""
    frames = torch.randn(1, 3, 3, cfg.img_height, cfg.img_width)  # one sample: 3 frames
    total, per_child = module_flops(model.eval(), frames)
    rows = [dataclasses.replace(r, flops=per_child.get(r.name, 0)) for r in parameter_counts(model)]
    print(f"\npaper model at model.dim={cfg.dim} (heads {cfg.heads}, ViT {cfg.embed_dim}x{cfg.depth}, "
          f"projection {'none' if model.input_proj is None else f'{cfg.embed_dim}->{cfg.dim}'})")
    print(format_cost_table(rows, per="sample"))
    backbone = next(r for r in rows if r.name == "backbone")
    modules = ModuleCost("VREMD modules", sum(r.params for r in rows if r is not backbone),
                         sum(r.trainable for r in rows if r is not backbone), total - backbone.flops)
    return backbone, modules, sum(r.params for r in rows)


def paper_widths(params_path: str, widths: list[int], batch: int, repeats: int) -> list[WidthCost]:
    """Cost of the paper profile's model at each width (steps interleaved), then each width against the first."""
    base = dataclasses.replace(load_config(params_path, profile="paper").model, pretrained="")  # random init
    cfgs = [dataclasses.replace(base, dim=d, heads=HEADS_FOR_WIDTH.get(d, base.heads)) for d in widths]
    tables, steps = [], {}
    for cfg in cfgs:
        torch.manual_seed(0)
        model = build_model(cfg)
        tables.append(width_table(cfg, model))
        tokens = torch.randn(batch, 3, model.backbone.grid_hw[0] * model.backbone.grid_hw[1], cfg.embed_dim)
        heatmap_hw = (cfg.img_height // HEATMAP_STRIDE, cfg.img_width // HEATMAP_STRIDE)
        steps[cfg.dim] = modules_step(model.train(), tokens, heatmap_hw)
    timings = interleaved(steps, repeats, warmup=1)
    costs = [WidthCost(cfg.dim, total, modules.params, backbone.flops / 1e9, modules.flops / 1e9, timings[cfg.dim])
             for cfg, (backbone, modules, total) in zip(cfgs, tables)]
    ref = costs[0]
    print("\n| model.dim | params (M) | VREMD modules (M) | module GFLOPs / sample | module GFLOPs / backbone "
          "| CPU step, batch %d (ms) | step vs dim=%d |" % (batch, ref.dim))
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c in costs:
        print(f"| {c.dim} | {c.params / 1e6:.1f} | {c.module_params / 1e6:.1f} | {c.module_gflops:.1f} | "
              f"{c.module_gflops / c.backbone_gflops:.2f} | {c.step.median * 1e3:.0f} | "
              f"{c.step.median / ref.step.median:.2f} |")
    print("(1 MAC = 2 FLOPs; grid_sample, norms, softmax uncounted; the frozen backbone is not in the step)")
    return costs


def model_step(cfg: ModelConfig, batch: int):
    """A callable: one forward + backward (heatmap MSE) of the whole model on random input."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    frames = torch.randn(batch, 3, 3, cfg.img_height, cfg.img_width)
    target = torch.rand(batch, cfg.num_joints, cfg.img_height // 4, cfg.img_width // 4)
    weight = torch.ones(batch, cfg.num_joints)

    def step() -> None:
        heatmap_mse(model(frames)["heatmaps"], target, weight).backward()
        model.zero_grad(set_to_none=True)

    return step


def step_times(name: str, cfg: ModelConfig, batch: int, repeats: int) -> dict[str, Timing]:
    """Print forward+backward time of ``cfg`` and of its baseline (hkme off, bmd off), interleaved, with the ratio."""
    t = interleaved({"vremd": model_step(cfg, batch),
                     "baseline": model_step(dataclasses.replace(cfg, hkme=False, bmd=False), batch)},
                    repeats, warmup=1)
    trainable = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad)
    print(f"{name}: batch {batch}, {cfg.img_height}x{cfg.img_width}, {trainable / 1e6:.2f} M trainable: "
          f"forward+backward {t['vremd'].text(1e3, 'ms')} (VREMD) vs {t['baseline'].text(1e3, 'ms')} (baseline), "
          f"ratio {t['vremd'].median / t['baseline'].median:.2f}")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file holding the demo and paper profiles")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024], help="model.dim values of the paper model")
    parser.add_argument("--paper-batch", type=int, default=2, help="batch of the paper model's CPU step")
    parser.add_argument("--demo-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the ViT-L models (about a minute)")
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo and smoke step times")
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    command, results = "python -m benchmarks.model_cost", []
    if not args.skip_paper:
        costs = paper_widths(args.params, args.widths, args.paper_batch, args.repeats)
        ref, top = costs[0], costs[-1]
        results.append(Result(
            "model_cost.width", f"paper model's trainable part (after the frozen ViT-L), CPU step at model.dim "
            f"{top.dim}, batch {args.paper_batch}", f"the same modules at model.dim {ref.dim}",
            top.step.median / ref.step.median, "x cost", command,
            details=f"backbone {ref.params / 1e6 - ref.module_params / 1e6:.1f} M params, {ref.backbone_gflops:.1f} "
                    f"GFLOPs/sample; VREMD modules at dim {ref.dim}: {ref.module_params / 1e6:.1f} M, "
                    f"{ref.module_gflops:.1f} GFLOPs; at dim {top.dim}: {top.module_params / 1e6:.1f} M, "
                    f"{top.module_gflops:.1f} GFLOPs; step ms {ref.step.text(1e3, 'ms')} vs {top.step.text(1e3, 'ms')}"))
    if not args.skip_demo:
        demo = load_config(args.params, profile="demo").model
        t = step_times("demo", demo, args.demo_batch, args.repeats)
        results.append(Result(
            "model_cost.demo", f"demo model forward+backward, batch {args.demo_batch}, CPU",
            "the demo's baseline model (hkme and bmd off)", t["vremd"].median / t["baseline"].median, "x cost",
            command, details=f"VREMD {t['vremd'].text(1e3, 'ms')}, baseline {t['baseline'].text(1e3, 'ms')}"))
        smoke = smoke_config()
        step_times("smoke", smoke.model, smoke.train.batch_size, args.repeats)
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
