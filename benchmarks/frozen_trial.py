"""A table-4 trial's training cost: the demo's frozen, pose-pretrained backbone against last turn's trial.

Last turn's demo trial trained the whole model, backbone included, from scratch, on 2 Ray DDP workers (its
`train.num_workers: 2`). Today's trains the VREMD modules on the frozen backbone the `pretrain` stage made,
in-process. Between them sits the unfrozen model in-process, so the two factors (freezing, in-process) show
apart. Each variant trains the full model (table 4's VREMD row) on the real demo data path for one epoch of
`--samples` samples, through `fit` (the training loop every trial runs); variants are interleaved, `--repeats`
times, median and min of the training samples/s. The trial estimate is the demo schedule
(`train.epochs` x the train split) at that rate, plus its validations at the rate measured here.

    python -m benchmarks.frozen_trial [--index data/index] [--raw data/raw] [--samples 320] [--repeats 2]
                                      [--json FILE]

Needs the demo's data and pretrained weights: run `make demo` (or `dvc repro weights`) first; without them it
says so (and `--json` gets an unmeasured row).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

from benchmarks.result import Result, write_results
from vremd.config import Config, load_config
from vremd.train.loop import RunPaths
from vremd.train.ray_train import fit

NAME, COMMAND = "frozen_trial", "python -m benchmarks.frozen_trial"
NOW, UNFROZEN, LAST_TURN = ("frozen backbone, in-process (now)", "unfrozen, in-process",
                            "unfrozen, 2 DDP workers (last turn)")


def variants(cfg: Config) -> dict[str, Config]:
    """Today's trial, the unfrozen model in-process, and last turn's trial (unfrozen, 2 DDP workers)."""
    unfrozen = dataclasses.replace(cfg.model, freeze_backbone=False, pretrained="")
    return {
        NOW: cfg,
        UNFROZEN: dataclasses.replace(cfg, model=unfrozen),
        LAST_TURN: dataclasses.replace(cfg, model=unfrozen, train=dataclasses.replace(cfg.train, num_workers=2)),
    }


def measure(cfg: Config, paths: RunPaths, samples: int, storage: Path, name: str) -> tuple[float, float]:
    """(training samples/s, seconds of the one validation) of one epoch of `samples` samples."""
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, max_train_samples=samples,
                                                               val_every=0, lr_step_epochs=()))
    start = time.perf_counter()
    result = fit(short, paths, storage, name)
    total = time.perf_counter() - start
    rate = result.history[-1]["samples_per_s"]
    return rate, max(total - samples / rate, 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--index", type=Path, default=Path("data/index"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--samples", type=int, default=320, help="training samples per measured epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, "demo")
    missing = [str(p) for p in (Path(cfg.model.pretrained), args.index / "train.parquet") if not p.is_file()]
    if missing:  # `make bench` runs every benchmark; this one trains on the demo's data and weights
        note = f"needs the demo's data and pretrained weights: run `make demo` first ({', '.join(missing)} missing)"
        print(f"frozen_trial: not measured, {note}")
        if args.json:
            write_results(args.json, [Result(NAME, "table-4 trial, frozen vs last turn", "", None, "x", COMMAND,
                                             note=note)])
        return 0
    paths = RunPaths(index_dir=str(args.index.resolve()),
                     gt_dir=str((args.raw / cfg.data.source / "annotations" / "val").resolve()), run_dir="")
    train_samples = len(pd.read_parquet(args.index / "train.parquet", columns=["sample_id"]))
    runs = variants(cfg)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    val_s: dict[str, list[float]] = {name: [] for name in runs}
    ray.init(num_cpus=2, include_dashboard=False, logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        with tempfile.TemporaryDirectory(prefix="vremd-frozen-trial-") as tmp:
            for repeat in range(args.repeats):  # interleaved: load on a shared machine hits every variant alike
                for i, (name, variant) in enumerate(runs.items()):
                    rate, seconds = measure(variant, paths, args.samples, Path(tmp), f"v{i}-r{repeat}")
                    rates[name].append(rate)
                    val_s[name].append(seconds)
    finally:
        ray.shutdown()
    t = cfg.train
    validations = sum(1 for e in range(t.epochs) if e + 1 == t.epochs or (t.val_every and (e + 1) % t.val_every == 0))
    rows = {}
    for name in runs:
        rate = statistics.median(rates[name])
        trial_s = t.epochs * train_samples / rate + validations * min(val_s[name])
        rows[name] = {"samples_per_s_median": round(rate, 1), "samples_per_s_max": round(max(rates[name]), 1),
                      "trial_minutes": round(trial_s / 60, 1)}
    base = rows[LAST_TURN]["trial_minutes"]
    print(f"table-4 VREMD trial, demo schedule ({t.epochs} epochs x {train_samples} samples, {validations} "
          f"validations), measured over {args.samples}-sample epochs, {args.repeats} interleaved repeats:")
    print("| trial | train samples/s (median) | est. trial minutes | vs last turn |\n|---|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['samples_per_s_median']} | {row['trial_minutes']} | "
              f"{base / row['trial_minutes']:.2f}x faster |")
    if args.json:
        details = "; ".join(f"{name}: {row['trial_minutes']} min" for name, row in rows.items())
        write_results(args.json, [
            Result(f"{NAME}.vs_last_turn", "table-4 VREMD trial at the demo schedule, now (frozen, in-process)",
                   "last turn's trial (unfrozen, 2 Ray DDP workers)", round(base / rows[NOW]["trial_minutes"], 2),
                   "x", COMMAND, details=details, extra={"rows": rows, "samples": args.samples}),
            Result(f"{NAME}.freezing", "the same trial, frozen vs unfrozen backbone (both in-process)",
                   "unfrozen backbone, in-process",
                   round(rows[UNFROZEN]["trial_minutes"] / rows[NOW]["trial_minutes"], 2), "x", COMMAND,
                   details=details),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
