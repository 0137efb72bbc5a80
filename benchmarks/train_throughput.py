"""Training throughput (samples/s) of the demo- and paper-sized VREMD, one optimizer step at a time.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 3] [--cases demo,paper]

Each case builds the profile's model from params.yaml (no pretrained file: random weights, the same
cost), feeds random 3-frame batches with Gaussian-target-shaped heatmaps, and times full training
steps (forward, heatmap MSE, backward, gradient clipping, AdamW) after one warm-up step, exactly as
`vremd/train/loop.py` runs them: bf16 autocast on CUDA, fp32 on CPU, frozen backbone out of the
optimizer. FLOPs per training sample come from `vremd.model.cost.module_flops` (forward, batch 1):
3x the forward FLOPs of trainable parts (forward + backward) + 1x the frozen backbone's forward.
On CUDA the achieved TFLOP/s is printed against the H100 dense bf16 peak (989 TFLOP/s).
The printed ratio is paper-size over demo-size seconds per sample, measured in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext

import torch

from vremd.config import load_config
from vremd.model.cost import module_flops
from vremd.model.losses import heatmap_mse
from vremd.model.vremd import build_model

H100_BF16_DENSE_TFLOPS = 989.0
DEFAULT_BATCH = {"cpu": {"demo": 16, "paper": 2}, "cuda": {"demo": 64, "paper": 32}}


def training_flops_per_sample(model: torch.nn.Module, cfg) -> int:
    """3x forward FLOPs of trainable children + 1x forward FLOPs of frozen ones (batch 1, CPU fp32 count)."""
    frames = torch.zeros(1, 3, 3, cfg.img_height, cfg.img_width)
    _, per_child = module_flops(model, frames)
    total = 0
    for name, flops in per_child.items():
        child = getattr(model, name)
        trainable = any(p.requires_grad for p in child.parameters())
        total += (3 if trainable else 1) * flops
    return total


def time_steps(model, cfg, batch: int, steps: int, device: torch.device) -> float:
    """Seconds per training step (median of `steps`, after one warm-up step)."""
    gen = torch.Generator().manual_seed(0)
    h, w = cfg.img_height // 4, cfg.img_width // 4
    frames = torch.randn(batch, 3, 3, cfg.img_height, cfg.img_width, generator=gen).to(device)  # (B, T, 3, H, W)
    target = torch.rand(batch, cfg.num_joints, h, w, generator=gen).to(device)  # (B, J, h, w)
    weight = torch.ones(batch, cfg.num_joints, device=device)  # (B, J)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            pred = model(frames)["heatmaps"]
        loss = heatmap_mse(pred.float(), target, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (after one warm-up)")
    parser.add_argument("--cases", default="demo,paper", help="profiles of params.yaml to measure")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_throughput: --device cuda but no CUDA device is available", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    per_sample = {}
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    for case in args.cases.split(","):
        cfg = load_config(args.params, profile=case).model
        cfg = dataclasses.replace(cfg, pretrained="")  # same architecture and cost, random weights
        torch.manual_seed(0)
        model = build_model(cfg)
        flops = training_flops_per_sample(model, cfg)
        model = model.to(device).train()
        batch = DEFAULT_BATCH[device.type][case]
        seconds = time_steps(model, cfg, batch, args.steps, device)
        rate = batch / seconds
        per_sample[case] = seconds / batch
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        total = sum(p.numel() for p in model.parameters()) / 1e6
        line = (f"{case:6s} {cfg.img_height}x{cfg.img_width} ViT D={cfg.embed_dim} depth={cfg.depth} "
                f"params {total:.1f}M ({trainable:.1f}M trainable), batch {batch}: {seconds:.3f} s/step, "
                f"{rate:.2f} samples/s, {flops / 1e9:.2f} GFLOP/sample, {rate * flops / 1e12:.3f} TFLOP/s")
        if device.type == "cuda":
            line += f" = {100 * rate * flops / 1e12 / H100_BF16_DENSE_TFLOPS:.1f}% of H100 bf16 peak"
        print(line, flush=True)
        del model
    if {"demo", "paper"} <= per_sample.keys():
        print(f"ratio: a paper-size sample costs {per_sample['paper'] / per_sample['demo']:.1f}x a demo-size sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
