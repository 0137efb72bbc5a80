"""Model cost: parameters and GFLOPs per sample of the `paper` model, and CPU training-step time.

Prints (1) a per-module table of the paper config (ViT-L/16 + VREMD modules, random init) with parameters
and forward GFLOPs for one sample (3 frames), the backbone and the VREMD modules separately; (2) the
forward+backward time of one training step for the `demo` config (batch 32) and the `smoke` config on this
CPU, each beside the baseline model (hkme off, bmd off) of the same config, as a ratio.

    python benchmarks/model_cost.py [--params params.yaml] [--demo-batch 32] [--repeats 3] [--skip-paper]
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
from vremd.model.losses import heatmap_mse
from vremd.model.vremd import build_model


def paper_cost(params_path: str) -> None:
    """Print the per-module parameter / GFLOPs table of the paper profile's model (one sample)."""
    cfg = dataclasses.replace(load_config(params_path, profile="paper").model, pretrained="")  # random init
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    frames = torch.randn(1, 3, 3, cfg.img_height, cfg.img_width)  # one sample: 3 frames
    start = time.perf_counter()
    total, per_child = module_flops(model, frames)
    seconds = time.perf_counter() - start
    rows = [dataclasses.replace(r, flops=per_child.get(r.name, 0)) for r in parameter_counts(model)]
    print(f"paper model ({cfg.img_height}x{cfg.img_width}, ViT {cfg.embed_dim}x{cfg.depth}, dim {cfg.dim}), "
          f"forward of 1 sample on CPU took {seconds:.1f} s")
    print(format_cost_table(rows, per="sample"))
    backbone = next(r for r in rows if r.name == "backbone")
    rest = ModuleCost("VREMD modules", sum(r.params for r in rows if r is not backbone),
                      sum(r.trainable for r in rows if r is not backbone), total - backbone.flops)
    print(f"backbone:      {backbone.params / 1e6:8.2f} M params, {backbone.flops / 1e9:8.2f} GFLOPs/sample "
          f"({backbone.flops / 3e9:.2f} per frame)")
    print(f"VREMD modules: {rest.params / 1e6:8.2f} M params, {rest.flops / 1e9:8.2f} GFLOPs/sample")
    print(f"ratio VREMD modules / backbone: params {rest.params / backbone.params:.3f}, "
          f"GFLOPs {rest.flops / backbone.flops:.3f}  (1 MAC = 2 FLOPs; grid_sample, norms, softmax uncounted)")


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
    parser.add_argument("--demo-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the ViT-L FLOP count (a few seconds)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not args.skip_paper:
        paper_cost(args.params)
    step_times("demo", load_config(args.params, profile="demo").model, args.demo_batch, args.repeats)
    smoke = smoke_config()
    step_times("smoke", smoke.model, smoke.train.batch_size, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
