"""What fused trials save on the paper's ablation sweep (tables 4-6), measured in one run.

    python benchmarks/sweep_cost.py [--params params.yaml] [--demo-batch 16] [--demo-steps 5]
        [--paper-batch 1] [--paper-steps 1] [--paper-tables 4] [--seeds 3] [--train-samples 80000]
        [--achieved-tflops 33] [--skip-paper-steps] [--skip-demo-steps]

1. CPU time of one training step of a table's rows, both ways, at demo size (the demo model with its
   backbone frozen, as fusion requires) and at paper shape (ViT-L/16, the paper profile's model.dim):
   alone, every row runs backbone + modules forward and the modules' backward (`loop.optimise`);
   fused, the backbone runs once per batch and each row runs its modules on the shared tokens
   (as `vremd.ablation.fused_loop`). Ratio = fused / alone, per table; the two are timed in turn, step by
   step, so load from other processes falls on both. Paper shape: table 4 only by default (minutes on CPU).
2. Training FLOPs per sample (FlopCounterMode, forward at batch 1; backward = 2x forward of the
   trainable modules; the frozen backbone forward only) of every row of tables 4-6 at the paper
   profile, and of the whole sweep: the unique trainings (a row repeated across tables trains once,
   `vremd/ablation/reuse.py`) x seeds x epochs x train samples, alone vs fused (one backbone pass
   per table and seed, shared by its rows).
3. The sweep's GPU-hours at paper size both ways, at `--achieved-tflops` (an assumption, printed: the
   default is ~40% of an RTX 4090's 82.6 dense bf16 TFLOP/s with fp32 accumulation). The ratio does
   not depend on it. Validation is left out (every row validates on its own, the same both ways).
4. Memory: bytes per sample of backbone features at paper shape (3 frames x 192 tokens x 1024), what a
   feature store of PoseTrack17 train would need on disk, and what a fused trial holds instead
   (`vremd.ablation.fusion.estimate_bytes`, the figure `--fuse-memory-gib` is checked against).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.result import Result, write_results
from vremd.ablation.fusion import GIB, estimate_bytes
from vremd.ablation.grid import build_grid, load_tables, training_id
from vremd.config import Config, config_from_dict, config_to_dict, load_config
from vremd.ablation.cost import module_flops
from vremd.frames import NUM_FRAMES
from vremd.model.vremd import build_model
from vremd.train.loop import optimise

TABLES = (4, 5, 6)
ROOT = Path(__file__).resolve().parents[1]


def table_configs(base: Config, table: int) -> list[tuple[str, Config]]:
    """(row, config) of each row of `table` over `base` (its backbone frozen, no weights file)."""
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, freeze_backbone=True, pretrained=""))
    spec = load_tables(ROOT / "experiments" / "ablations.yaml")[table]
    return [(t.row, config_from_dict(t.config)) for t in build_grid(base, spec, seeds=1)]


def step_seconds(rows: list[tuple[str, Config]], batch: int, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds of one training step of all `rows`: (alone: each row its own backbone pass, fused: one pass)."""
    models = []
    for _, cfg in rows:
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        models.append((model, trainable, torch.optim.AdamW(trainable, lr=cfg.train.lr)))
    m = rows[0][1].model
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(batch, 3, 3, m.img_height, m.img_width, generator=gen)  # (B, T, 3, H, W)
    target = torch.rand(batch, m.num_joints, m.img_height // 4, m.img_width // 4, generator=gen)  # (B, J, h, w)
    weight = torch.ones(batch, m.num_joints)  # (B, J)

    def alone() -> None:
        for model, trainable, opt in models:
            optimise(model(frames)["heatmaps"], target, weight, opt, trainable, 1.0)

    def fused() -> None:
        tokens = models[0][0].backbone(frames)  # (B, T, N, E): once for every row
        for model, trainable, opt in models:
            optimise(model.forward_tokens(tokens)["heatmaps"], target, weight, opt, trainable, 1.0)

    for _ in range(warmup):
        alone()
        fused()
    runs: dict[str, list[float]] = {"alone": [], "fused": []}
    for _ in range(steps):  # interleaved, so load from other processes hits both alike
        for name, fn in (("alone", alone), ("fused", fused)):
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return statistics.median(runs["alone"]), statistics.median(runs["fused"])


def training_gflops(cfg: Config) -> tuple[float, float]:
    """(frozen backbone forward, 3x the modules' forward) GFLOPs of one training sample of `cfg`, counted on CPU
    as `benchmarks/model_cost.py` counts them (the `meta` device takes other attention kernels and counts more)."""
    model = build_model(dataclasses.replace(cfg.model, pretrained="")).eval()
    frames = torch.zeros(1, 3, 3, cfg.model.img_height, cfg.model.img_width)
    with torch.no_grad():
        total, per_child = module_flops(model, frames)
    backbone = per_child.get("backbone", 0)
    return backbone / 1e9, 3 * (total - backbone) / 1e9


def timing_section(name: str, base: Config, batch: int, steps: int, warmup: int,
                   tables: list[int]) -> dict[int, float]:
    print(f"\n{name}: one training step of each table's rows, batch {batch}, median of {steps} after {warmup} "
          f"warm-up(s) (ViT {base.model.embed_dim}x{base.model.depth}, model.dim {base.model.dim})")
    print("| table | rows | alone (s) | fused (s) | fused / alone |\n|---:|---:|---:|---:|---:|")
    ratios = {}  # table -> fused / alone step time
    for table in tables:
        rows = table_configs(base, table)
        alone, fused = step_seconds(rows, batch, steps, warmup)
        ratios[table] = fused / alone
        print(f"| {table} | {len(rows)} | {alone:.3f} | {fused:.3f} | {fused / alone:.2f} |", flush=True)
    return ratios


def sweep_section(paper: Config, seeds: int, samples: int, tflops: float) -> tuple[float, float, float]:
    """Print the sweep's GFLOPs and GPU-hours both ways; return its GFLOPs per sample and seed, alone and fused,
    and the floor ratio of one fused trial for the whole sweep."""
    cost: dict[str, tuple[float, float]] = {}  # training id -> (backbone, modules) GFLOPs per sample
    print(f"\npaper profile, model.dim {paper.model.dim}: training GFLOPs per sample (backbone forward + 3x modules "
          "forward)")
    print("| table | row | backbone | modules (x3) | alone | fused, per row |\n|---:|---|---:|---:|---:|---:|")
    totals: dict[int, tuple[float, float]] = {}  # table -> (alone, fused) GFLOPs per sample, all its rows
    for table in TABLES:
        rows = table_configs(paper, table)
        for row, cfg in rows:
            key = training_id(config_to_dict(cfg), {})
            if key not in cost:
                cost[key] = training_gflops(cfg)
            backbone, modules = cost[key]
            print(f"| {table} | {row} | {backbone:.1f} | {modules:.1f} | {backbone + modules:.1f} | "
                  f"{modules + backbone / len(rows):.1f} |", flush=True)
            totals[table] = (totals.get(table, (0.0, 0.0))[0] + backbone + modules,
                             totals.get(table, (0.0, backbone))[1] + modules)
    for table, (alone_t, fused_t) in totals.items():
        print(f"table {table}, all rows: alone {alone_t:.1f}, fused {fused_t:.1f} GFLOPs per sample "
              f"(fused / alone {fused_t / alone_t:.2f})")
    unique = list(cost)  # trainings: a row repeated across tables trains once (twin reuse), both ways
    backbone = next(iter(cost.values()))[0]
    alone = sum(b + m for b, m in cost.values())
    # fused: one backbone pass per table (its first-run rows share it) + every unique training's modules
    fused = backbone * len(TABLES) + sum(m for _, m in cost.values())
    scale = seeds * paper.train.epochs * samples  # samples seen by one training
    hours = lambda gflops: gflops * scale / (tflops * 1e3) / 3600  # noqa: E731
    print(f"\nsweep (tables 4-6): {len(unique)} unique trainings x {seeds} seeds x {paper.train.epochs} epochs x "
          f"{samples} samples; per (sample, seed): alone {alone:.0f} GFLOPs, fused {fused:.0f} GFLOPs")
    print(f"backbone share: alone {backbone * len(unique):.0f} GFLOPs, fused {backbone * len(TABLES):.0f} "
          f"({len(TABLES)}/{len(unique)} = {len(TABLES) / len(unique):.2f})")
    print(f"GPU-hours at {tflops:g} achieved TFLOP/s (assumed): alone {hours(alone):.0f} h, fused {hours(fused):.0f} h; "
          f"fused / alone = {fused / alone:.2f} (target <= 0.20)")
    floor = (backbone + sum(m for _, m in cost.values())) / alone
    print(f"the floor with every unique training in one fused trial (one backbone pass per batch for the whole "
          f"sweep): {floor:.2f}; the modules' own forward+backward ({sum(m for _, m in cost.values()):.0f} GFLOPs) "
          "is what remains")
    return alone, fused, floor


def memory_section(paper: Config, samples: int) -> None:
    """Bytes per sample at paper shape, what a feature store would need, and what fused trials hold instead."""
    m = paper.model
    tokens = NUM_FRAMES * (m.img_height // m.patch_size) * (m.img_width // m.patch_size)  # 3 x 192
    per_view = {"fp16": tokens * m.embed_dim * 2, "8-bit": tokens * m.embed_dim}
    print(f"\nmemory at paper shape: one sample's backbone features = {NUM_FRAMES} frames x "
          f"{tokens // NUM_FRAMES} tokens x {m.embed_dim} = {tokens * m.embed_dim} values")
    for kind, size in per_view.items():
        print(f"  {kind}: {size / 1e6:.2f} MB/sample; PoseTrack17 train ({samples} samples): one view each "
              f"{size * samples / 1e9:.1f} GB, one view per epoch ({paper.train.epochs}) "
              f"{size * samples * paper.train.epochs / 1e12:.2f} TB")
    batch = paper.train.batch_size
    print(f"  fused trials store nothing: per batch they hold one batch of tokens, {batch} x {tokens} x "
          f"{m.embed_dim} fp32 = {batch * tokens * m.embed_dim * 4 / 2**20:.0f} MiB (bf16 on GPU: half)")
    for table in TABLES:
        rows = table_configs(paper, table)
        need = estimate_bytes([config_to_dict(cfg) for _, cfg in rows])
        one = max(estimate_bytes([config_to_dict(cfg)]) for _, cfg in rows)
        print(f"  table {table}: fused trial of {len(rows)} rows ~{need / GIB:.1f} GiB estimated (fp32 activations, "
              f"batch {batch}); its largest row alone ~{one / GIB:.1f} GiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--demo-batch", type=int, default=16)
    parser.add_argument("--demo-steps", type=int, default=5)
    parser.add_argument("--paper-batch", type=int, default=1)
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument("--paper-tables", type=int, nargs="+", default=[4], help="tables timed at paper shape")
    parser.add_argument("--skip-paper-steps", action="store_true", help="skip the ViT-L CPU steps (minutes)")
    parser.add_argument("--skip-demo-steps", action="store_true", help="skip the demo-size CPU steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=80_000, help="PoseTrack17 train: about 80k samples")
    parser.add_argument("--achieved-tflops", type=float, default=33.0)
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    demo, paper = (load_config(args.params, profile=p) for p in ("demo", "paper"))
    steps = {}
    if not args.skip_demo_steps:
        steps["demo"] = timing_section("demo", demo, args.demo_batch, args.demo_steps, 1, list(TABLES))
    if not args.skip_paper_steps:  # ViT-L on CPU: no warm-up, the step itself is seconds long
        steps["paper shape"] = timing_section("paper shape", paper, args.paper_batch, args.paper_steps, 0,
                                              args.paper_tables)
    alone, fused, floor = sweep_section(paper, args.seeds, args.train_samples, args.achieved_tflops)
    memory_section(paper, args.train_samples)
    if args.json:
        command = "python -m benchmarks.sweep_cost"
        results = [Result("sweep_cost.gflops", f"tables 4-6 sweep, training GFLOPs per sample, fused trials "
                          f"(paper profile, model.dim {paper.model.dim})", "every row alone",
                          round(fused / alone, 3), "x cost", command, target=0.2, op="<=",
                          details=f"alone {alone:.0f}, fused {fused:.0f} GFLOPs per sample and seed; floor with one "
                                  f"fused trial for the whole sweep {floor:.2f} (the modules' own cost remains)")]
        results += [Result(f"sweep_cost.step.{where.replace(' ', '_')}.table{table}",
                           f"one training step of table {table}'s rows, fused ({where}, CPU)", "every row alone",
                           round(ratio, 3), "x cost", command)
                    for where, ratios in steps.items() for table, ratio in ratios.items()]
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
