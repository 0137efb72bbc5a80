"""Regenerate a paper table: every row of experiments/ablations.yaml x seed as a Ray Tune trial.

    python pipeline/ablate.py --table 6 [--profile demo|paper|smoke] [--seeds 2] [--set train.epochs=4]
        [--max-concurrent 2] [--resources-per-trial cpu=2,gpu=1] [--max-failures 1] [--dry-run] [--fresh]
        [--no-fuse] [--fuse-memory-gib 22] [--fuse-rows N] [--verbose]

Tables 4-6 are the paper's ablations, 1-3 the full model on PoseTrack17/18/21 among its peers. On real data each
table runs on the dataset the paper measured it on: a trial reads data/index and data/raw when that is the profile's
own `data.source`, else the table's dataset in data/tables/<source>/ (experiments/dvc.yaml: data-<source>); the dry
run prints each trial's index and GT folder, and a trial whose index holds another dataset is refused before any
starts. Prints the paper beside us and writes experiments/results/table<N>/; one MLflow parent run with a nested
run per trial.
Interrupted or partly failed? Run the same command again: only unfinished and failed trials run.
One run per table at a time: a second one on the same --storage or --out stops at once, naming the lock
file and the run holding it (vremd/ablation/lock.py); a holder that died has released it.
Rows sharing a frozen backbone and a seed train fused, one backbone pass per batch for all of them
(exactly as alone; README "Paying for the frozen backbone once"); --no-fuse runs each row alone.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path

from pipeline.cli_config import REPO_DIR, add_config_args, dataset_dirs
from vremd.ablation import fusion, grid
from vremd.ablation.lock import lock_table
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


def _data_of(args: argparse.Namespace) -> grid.DataDirs:
    """Each trial's (index, raw dataset) by its `data.source`: --index / --raw when given ('{source}' filled in),
    else where the dataset's stages put it (`cli_config.dataset_dirs`): the main pipeline's for the profile's own
    `data.source` as the params file states it (what `dvc repro` cuts into data/index, whatever --set says)."""
    profile = smoke_config() if args.profile == "smoke" else load_config(args.params, profile=args.profile)
    main = profile.data.source

    def data_of(source: str) -> tuple[str, str]:
        index, raw = dataset_dirs(source, main)
        return grid.data_dirs(args.index or str(index), args.raw or str(raw))(source)

    return data_of


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
    parser.add_argument("--index", default=None, help="sample index dir of every trial, '{source}' replaced by its "
                        "data.source (default: data/index for the profile's own dataset, else "
                        "data/tables/<source>/index)")
    parser.add_argument("--raw", default=None, help="raw data root, val GT in <raw>/<source>/annotations/val "
                        "(default: data/raw for the profile's own dataset, else data/tables/<source>/raw)")
    parser.add_argument("--storage", type=Path, default=Path("ray_results"), help="Tune experiments and trainings")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"), help="tables go to <out>/table<N>/")
    parser.add_argument("--ablations", type=Path, default=REPO_DIR / "experiments" / "ablations.yaml")
    parser.add_argument("--paper", type=Path, default=REPO_DIR / "experiments" / "paper_numbers.yaml")
    args = parser.parse_args(argv)
    started, held = False, ExitStack()  # whether this call started Ray (and stops it); the table's locks
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
        data_of = _data_of(args)
        trials = grid.build_grid(base, tables[args.table], args.seeds, fixed, str(args.ablations), data_of=data_of)
        resources = (grid.parse_resources(args.resources_per_trial) if args.resources_per_trial
                     else grid.default_resources(base))
        if not args.dry_run:  # each trial's data holds its dataset, before Ray, Tune or MLflow start
            grid.check_inputs(trials)
            # before anything is touched, Ray included: a second run of this table stops here naming the holder
            held.enter_context(lock_table(args.storage, args.out, args.table, base.profile, _command(argv)))
            started = _start_ray(args.ray_address)  # each identity's thread count depends on the cluster
            trial_cpus = resources.get("cpu", 0.0)  # an in-process trial's math, fused or alone, runs on these
            threads_of = lambda cfg: training_threads(cfg, int(trial_cpus))  # noqa: E731
            trials = grid.build_grid(base, tables[args.table], args.seeds, fixed, str(args.ablations),
                                     identity_of=grid.identities(data_of, threads_of), data_of=data_of)
        plan = fusion.plan_fusion(trials, not args.no_fuse, int(args.fuse_memory_gib * fusion.GIB), args.fuse_rows)
    except (InputError, OSError) as exc:  # LockHeldError names the lock file and its holder
        _stop_ray(started)
        held.close()
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 1
    with held:
        print(f"{tables[args.table].title}: {len(trials)} trial(s), profile {base.profile}; {note}")
        print(grid.grid_text(trials, resources), end="")
        fused_resources = resources if args.resources_per_trial else fusion.fused_resources(config_to_dict(base))
        print(fusion.plan_text(plan, fused_resources), end="")
        if args.dry_run:
            return 0
        return _run(args, tables[args.table], trials, base, paper, resources, fused_resources, plan, note, started)


def _command(argv: list[str] | None) -> str:
    """This run's command line, as the lock files record it."""
    return shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])


def _run(args: argparse.Namespace, table, trials, base, paper, resources, fused_resources, plan, note: str,
         started: bool) -> int:
    """Run the table's trials (Ray is up; stopped here if this call `started` it), print the table; the exit
    status."""
    uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or base.tracking.tracking_uri, Path.cwd())
    try:
        result = run_ablation(
            table, trials, base, storage_path=args.storage, out_dir=args.out / f"table{args.table}",
            tracking_uri=uri, repo_dir=Path.cwd(), paper_tables=paper,
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
    folder = result.paths["json"].parent
    print(f"{folder}: " + ", ".join(sorted(p.name for p in result.paths.values())))
    if folder != args.out / f"table{args.table}":
        print(f"no trial finished: {args.out / f'table{args.table}'} keeps the earlier table that has finished "
              f"trials; this run's table is in {folder}", file=sys.stderr)
    print(f"MLflow parent run {result.parent_run_id} at {uri}" + (" (restored)" if result.restored else ""))
    if result.failed:
        print(f"{result.failed} of {len(trials)} trial(s) did not finish; run the same command again to retry "
              "them (finished trials are kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
