"""Regenerate a paper table: every row of experiments/ablations.yaml x seed as a Ray Tune trial.

    python pipeline/ablate.py --table 6 [--profile demo|paper|smoke] [--seeds 2] [--set train.epochs=4]
        [--max-concurrent 2] [--resources-per-trial cpu=2,gpu=1] [--max-failures 1] [--dry-run] [--fresh]
        [--no-fuse] [--fuse-memory-gib 22] [--fuse-rows N] [--verbose]

Tables 4-6 are the paper's ablations, 1-3 the full model on PoseTrack17/18/21 among its peers (pass
e.g. --index 'data/index-{source}' when each dataset has its own index). Prints the paper beside us
and writes experiments/results/table<N>/; one MLflow parent run with a nested run per trial.
Interrupted or partly failed? Run the same command again: only unfinished and failed trials run.
Rows sharing a frozen backbone and a seed train fused, one backbone pass per batch for all of them
(exactly as alone; README "Paying for the frozen backbone once"); --no-fuse runs each row alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.cli_config import REPO_DIR, add_config_args
from vremd.ablation import fusion, grid
from vremd.ablation.trials import run_ablation
from vremd.config import config_to_dict, load_config, parse_override, smoke_config
from vremd.errors import InputError
from vremd.eval.tables import load_paper_numbers
from vremd.model.config_check import check_model_config
from vremd.train.ray_train import init_ray, training_threads
from vremd.train.tracking import resolve_tracking_uri


def _base_config(args: argparse.Namespace):
    """The profile's config with --set applied; `smoke` is the test config built in code."""
    if args.profile == "smoke":
        overrides = dict(parse_override(text) for text in args.overrides)
        return grid.apply_overrides(config_to_dict(smoke_config()), overrides, "--set ")
    return load_config(args.params, profile=args.profile, overrides=args.overrides)


def _start_ray(address: str | None) -> bool:
    """Join or start Ray unless this process is in it already; whether it started it."""
    import ray

    if ray.is_initialized():
        return False
    init_ray(address or os.environ.get("RAY_ADDRESS"))
    return True


def _stop_ray(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--table", type=int, required=True, help="paper table: 1-3 (datasets) or 4-6 (ablations)")
    parser.add_argument("--seeds", type=int, default=1, help="repeats per row, train.seed = profile seed + i")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials at once (default: as resources allow; 1 when trials launch Ray Train workers)")
    parser.add_argument("--resources-per-trial", default=None, metavar="cpu=N,gpu=M", help="what each trial asks Tune for")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a failed trial (default: train.max_failures)")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or local)")
    parser.add_argument("--dry-run", action="store_true", help="print the trial grid and exit")
    parser.add_argument("--verbose", action="store_true", help="show Tune's trial tables and Ray Train's per-epoch lines")
    parser.add_argument("--fresh", action="store_true", help="start a new Tune experiment instead of restoring")
    parser.add_argument("--no-fuse", action="store_true",
                        help="train every row alone, even rows that could share one frozen-backbone pass per batch")
    parser.add_argument("--fuse-memory-gib", type=float, default=fusion.DEFAULT_BUDGET_GIB,
                        help="refuse a fused trial whose estimated memory exceeds this (GPU memory with train.use_gpu)")
    parser.add_argument("--fuse-rows", type=int, default=0, metavar="N",
                        help="at most N rows per fused trial (default 0: every row that shares the backbone)")
    parser.add_argument("--index", default="data/index", help="sample index dir; '{source}' is replaced per row")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw data root (val GT json)")
    parser.add_argument("--storage", type=Path, default=Path("ray_results"), help="Tune experiments and trainings")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"), help="tables go to <out>/table<N>/")
    parser.add_argument("--ablations", type=Path, default=REPO_DIR / "experiments" / "ablations.yaml")
    parser.add_argument("--paper", type=Path, default=REPO_DIR / "experiments" / "paper_numbers.yaml")
    args = parser.parse_args(argv)
    started = False  # whether this call started Ray (and stops it)
    try:
        tables = grid.load_tables(args.ablations)
        if args.table not in tables:
            raise grid.AblationError(f"{args.ablations}: tables: no table {args.table}, found {sorted(tables)}")
        base = _base_config(args)
        check_model_config(base, source=f"{args.params} (profile {base.profile})")
        fixed = [parse_override(text)[0] for text in args.overrides]
        paper = load_paper_numbers(args.paper)
        protocol, note = grid.paper_protocol(
            paper.get(f"table{args.table}", {}), base, fixed, dict(parse_override(t) for t in args.overrides))
        if protocol:  # the paper's dataset and protocol for this table
            base = grid.apply_overrides(config_to_dict(base), protocol, f"{args.paper}: table{args.table}: ")
        trials = grid.build_grid(base, tables[args.table], args.seeds, fixed, str(args.ablations))
        resources = (grid.parse_resources(args.resources_per_trial) if args.resources_per_trial
                     else grid.default_resources(base))
        index = str(Path(args.index).resolve())
        if not args.dry_run:
            grid.check_inputs(trials, index, args.raw)
            started = _start_ray(args.ray_address)  # each identity's thread count depends on the cluster
            trial_cpus = resources.get("cpu", 0.0)  # an in-process trial's math, fused or alone, runs on these
            trials = grid.build_grid(base, tables[args.table], args.seeds, fixed, str(args.ablations),
                                     identity_of=grid.identities(index, args.raw,
                                                                 lambda cfg: training_threads(cfg, int(trial_cpus))))
        plan = fusion.plan_fusion(trials, not args.no_fuse, int(args.fuse_memory_gib * fusion.GIB), args.fuse_rows)
    except (InputError, OSError) as exc:
        _stop_ray(started)
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 1
    print(f"{tables[args.table].title}: {len(trials)} trial(s), profile {base.profile}; {note}")
    print(grid.grid_text(trials, resources), end="")
    fused_resources = resources if args.resources_per_trial else fusion.fused_resources(config_to_dict(base))
    print(fusion.plan_text(plan, fused_resources), end="")
    if args.dry_run:
        return 0
    uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or base.tracking.tracking_uri, Path.cwd())
    try:
        result = run_ablation(
            tables[args.table], trials, base, storage_path=args.storage, out_dir=args.out / f"table{args.table}",
            index_dir=index, raw_dir=args.raw, tracking_uri=uri, repo_dir=Path.cwd(), paper_tables=paper,
            resources=resources, fresh=args.fresh, note=note, plan=plan, fused_resources=fused_resources,
            verbose=2 if args.verbose else 1,
            max_concurrent=args.max_concurrent or (1 if base.train.num_workers else None),  # workers take the CPUs
            max_failures=base.train.max_failures if args.max_failures is None else args.max_failures)
    except (InputError, OSError) as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_ray(started)
    print("\n" + result.text)
    print(f"{args.out / f'table{args.table}'}: " + ", ".join(sorted(p.name for p in result.paths.values())))
    print(f"MLflow parent run {result.parent_run_id} at {uri}" + (" (restored)" if result.restored else ""))
    if result.failed:
        print(f"{result.failed} of {len(trials)} trial(s) did not finish; run the same command again to retry "
              "them (finished trials are kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
