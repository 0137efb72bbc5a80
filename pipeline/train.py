"""Stage `train`: train VREMD on Ray Train, log to MLflow, write models/final.pt and the training curve.

    python pipeline/train.py --index data/index --raw data/raw --out models [--run-name NAME]
                             [--ray-address ADDR] [--storage ray_results] [--set train.epochs=2] [--verbose]

Joins an existing Ray cluster with --ray-address or RAY_ADDRESS, else starts Ray locally. MLflow
goes to `tracking.tracking_uri` unless MLFLOW_TRACKING_URI is set. The run name defaults to
`<tracking.run_name>-<hash>` over the result-changing config keys, the data (index, crops, val GT),
the code, the lock file, the torch thread count and the pretrained weights: re-running with the same
inputs resumes (or returns) that run, anything else trains again. A --run-name whose checkpoints had other
inputs is refused before its MLflow run or folder is touched; one of a finished run with a larger
train.epochs trains it further, in a new MLflow run that continues the old one.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.cli_config import (add_config_args, add_data_args, check_gt_dir, config_from_args, index_file,
                                 warn_if_untracked)
from vremd.atomic import atomic_write_text
from vremd.config import Config, config_from_dict, config_to_dict
from vremd.data.dataset import check_augment_margin
from vremd.data.index_check import check_index_fits
from vremd.data.posetrack import SPLITS
from vremd.errors import InputError
from vremd.eval.posetrack_ap import AP_CURVE_COLUMNS, MEAN_METRIC, curve_column
from vremd.model.checkpoint import save_trained
from vremd.model.config_check import check_model_config
from vremd.train.identity import run_identity, training_digest
from vremd.train.loop import RunPaths
from vremd.train.ray_train import TrainingWorkerError, init_ray, train_and_track, training_threads
from vremd.train.tracking import resolve_tracking_uri

CURVE_COLUMNS = ("epoch", "loss", "lr", "samples_per_s", *AP_CURVE_COLUMNS)


def _write_curve(history: list[dict], path: Path) -> None:
    """metrics/train_curve.csv: one row per epoch; AP columns empty where the epoch was not validated."""
    lines = [",".join(CURVE_COLUMNS)]
    for h in history:
        row = {curve_column(k): v for k, v in h.items()}
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" for c in CURVE_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_data_args(parser)
    parser.add_argument("--out", type=Path, default=Path("models"), help="where final.pt goes")
    parser.add_argument("--curve", type=Path, default=Path("metrics/train_curve.csv"), help="training curve csv")
    parser.add_argument("--storage", type=Path, default=Path("ray_results"), help="checkpoint storage root")
    parser.add_argument("--run-name", default=None, help="run folder / MLflow run name (default: name-confighash)")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or local)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true", help="show Ray Train's per-epoch report and checkpoint lines")
    parser.add_argument("--no-mlflow-model", action="store_true",
                        help="do not log final.pt as the run's MLflow model (runs:/<run id>/model)")
    args = parser.parse_args(argv)
    try:  # every input is checked before Ray starts or an MLflow run is created
        cfg = config_from_args(args)
        source = f"{args.params} (profile {cfg.profile})"
        check_model_config(cfg, source=source)
        for index_path in [index_file(args.index, split) for split in SPLITS]:
            check_index_fits(index_path, cfg, f"the model of {source}")
        check_augment_margin(index_file(args.index, "train"), cfg.augment, cfg.model.num_joints)
        check_gt_dir(args.raw / cfg.data.source / "annotations" / "val")
    except (InputError, OSError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 1
    uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri, Path.cwd())
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a down server fails fast, once
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    random.seed(cfg.train.seed)  # the entry point seeds the process; workers derive their own
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    warn_if_untracked(cfg.model.pretrained, "weights", "model.pretrained", "train")
    dataset_dir = (args.raw / cfg.data.source).resolve()
    paths = RunPaths(index_dir=str(args.index.resolve()), gt_dir=str(dataset_dir / "annotations" / "val"), run_dir="")
    started_ray = cfg.train.num_workers > 0
    if started_ray:  # before the identity: its thread count is what each Ray Train worker gets on this cluster
        import ray

        init_ray(args.ray_address or os.environ.get("RAY_ADDRESS"))
    try:
        identity = run_identity(cfg, Path(paths.index_dir), Path(paths.gt_dir), threads=training_threads(cfg))
        run_name = args.run_name or f"{cfg.tracking.run_name}-{training_digest(config_to_dict(cfg), identity)}"
        outcome = train_and_track(cfg, paths, args.storage, run_name, uri, Path.cwd(), dataset_dir,
                                  Path(args.params), progress=not args.no_progress, identity=identity,
                                  ray_logs=args.verbose)
        state = outcome.fit.state
        save_trained(args.out / "final.pt", state["model"], config_from_dict(state["config"]), epoch=state["epoch"],
                     history=state["history"], mlflow_run_id=outcome.mlflow_run_id)
        _write_curve(outcome.fit.history, args.curve)
    except (InputError, OSError, TrainingWorkerError) as exc:  # CheckpointWriteError is an OSError
        print(f"train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if started_ray:
            ray.shutdown()
    last = outcome.fit.history[-1]
    print(f"{args.out / 'final.pt'}: {state['epoch']} epochs, loss {last['loss']:.5f}, "
          f"val mean AP {last.get(MEAN_METRIC, float('nan')):.1f}; checkpoints in {outcome.fit.run_dir}")
    if outcome.tracking_failure:
        print(f"MLflow was not reachable ({outcome.tracking_failure}); results are in {args.out} and {args.curve} only")
    else:
        print(f"MLflow run {outcome.mlflow_run_id} at {uri}")
        if not args.no_mlflow_model:
            _log_model(uri, outcome.mlflow_run_id, args.out / "final.pt", cfg)
    return 0


def _log_model(uri: str, run_id: str, checkpoint: Path, cfg: Config) -> None:
    """final.pt as the run's MLflow model; a store that fails here leaves the stage's outputs as they are."""
    from vremd.predict.mlflow_model import log_trained_model  # imports mlflow.pyfunc: only when logging

    try:
        print(f"MLflow model {log_trained_model(uri, run_id, checkpoint, cfg)} "
              "(mlflow.pyfunc.load_model(...).predict(crops))")
    except Exception as exc:  # the model file is written; MLflow is a copy of it
        print(f"train: warning: MLflow model not logged ({type(exc).__name__}: {exc}); "
              f"{checkpoint} is the trained model", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
