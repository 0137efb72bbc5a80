"""Re-run a recorded training run from its MLflow record and compare the per-joint AP.

    python pipeline/reproduce.py RUN_ID [--tracking-uri URI] [--index data/index] [--raw data/raw]
                                 [--tolerance 1e-6] [--allow-data-change]

The config comes from the run's params; the present data/index must hash to the run's recorded
DVC data hash (else exit 2, or a warning with --allow-data-change); a different git commit or
library version is a warning. Prints recorded vs reproduced AP per joint; exit 0 if every column
agrees within the tolerance, 1 if not, 2 if the run cannot be reproduced here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.cli_config import add_data_args, index_file
from vremd.data.index_check import check_index_fits
from vremd.data.posetrack import SPLITS
from vremd.errors import InputError
from vremd.eval.posetrack_ap import METRIC_NAMES
from vremd.train.loop import RunPaths
from vremd.ablation.reproduce import compare_ap, dvc_dir_md5, format_comparison, provenance_problems, read_run, rerun_ap
from vremd.train.tracking import resolve_tracking_uri, run_tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", help="MLflow run id of the training run to reproduce")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    add_data_args(parser)
    parser.add_argument("--storage", type=Path, default=Path("ray_results/reproduce"), help="where the re-run's checkpoints go")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest AP difference counted as equal")
    parser.add_argument("--allow-data-change", action="store_true", help="warn instead of failing when the data hash differs")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or local)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db", Path.cwd())
    try:
        run = read_run(MlflowClient(tracking_uri=uri), args.run_id)
        current = {**run_tags(run.config, Path.cwd()), "dvc_data_hash": dvc_dir_md5(args.index)}
    except (InputError, OSError) as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:  # unknown runs and unreachable stores
        print(f"reproduce: error: run {args.run_id} at {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    errors, warnings = provenance_problems(run.tags, current)
    for message in warnings + (errors if args.allow_data_change else []):
        print(f"reproduce: warning: {message}", file=sys.stderr)
    if errors and not args.allow_data_change:
        print(f"reproduce: error: {'; '.join(errors)} (use --allow-data-change to re-run anyway)", file=sys.stderr)
        return 2
    if not run.ap:
        print(f"reproduce: error: run {args.run_id} logged no AP metrics ({', '.join(METRIC_NAMES.values())})", file=sys.stderr)
        return 2
    try:  # --allow-data-change may bring an index cut otherwise than the run's crops.*
        for split in SPLITS:
            check_index_fits(index_file(args.index, split), run.config, f"run {args.run_id}")
    except (InputError, OSError) as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2

    cfg = run.config
    print(f"reproducing run {run.run_id} ({run.run_name}): profile {cfg.profile}, {cfg.train.epochs} epochs, seed {cfg.train.seed}")
    gt_dir = (args.raw / cfg.data.source / "annotations" / "val").resolve()
    paths = RunPaths(index_dir=str(args.index.resolve()), gt_dir=str(gt_dir), run_dir="")
    reproduced = rerun_ap(cfg, paths, args.storage, run.run_id, args.ray_address or os.environ.get("RAY_ADDRESS"),
                          progress=not args.no_progress)
    rows, equal = compare_ap(run.ap, reproduced, args.tolerance)
    print(format_comparison(rows), end="")
    print(f"reproduced: every column within {args.tolerance:g}" if equal
          else f"NOT reproduced: {sum(not ok for *_, ok in rows)} column(s) differ by more than {args.tolerance:g}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
