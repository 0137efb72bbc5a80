"""Stage `pretrain`: the demo's pose-pretrained backbone, its stand-in for ViTPose on COCO.

    python pipeline/pretrain.py --raw data/raw --index data/index --out pretrain [--no-progress]

When `model.pretrained_url` is `pretrain`, trains the backbone with the classic decoder as a single-frame
top-down pose model on synthetic stills of their own seed (`pretrain.*`, vremd/pretrain.py), scores it
on the val split of `--index` (the single-frame val AP, logged to MLflow like any training) and writes:
- `<out>/vitpose-demo.pth`: the backbone in the official ViTPose layout; the `weights` stage installs it at
  `model.pretrained`, and training loads it with `load_vitpose_checkpoint`, as the paper profile's ViT-L;
- `<out>/manifest.json`: the checkpoint's sha256, the stills' counts beside the video split's, the AP;
- `<out>/stills/`, `<out>/runs/`: the stills (raw, crops, index) and the training's checkpoints.
Otherwise (a downloaded backbone, or none) it only writes the manifest saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from pipeline.cli_config import add_config_args, add_data_args, check_gt_dir, config_from_args, index_file
from vremd.atomic import atomic_write_text
from vremd.config import PRETRAINED_CHECKPOINT, config_to_dict
from vremd.data.index_check import check_index_fits
from vremd.errors import InputError
from vremd.eval.posetrack_ap import MEAN, METRIC_NAMES
from vremd.train.identity import file_sha256, run_identity, training_digest
from vremd.train.loop import RunPaths
from vremd.pretrain import STILLS_DIR, build_stills, check_pretrain_config, export_backbone, pretraining_config
from vremd.train.ray_train import train_and_track, training_threads
from vremd.train.tracking import resolve_tracking_uri

MANIFEST = "manifest.json"


def _not_needed(out: Path, url: str) -> int:
    for stale in (out / Path(PRETRAINED_CHECKPOINT).name, out / STILLS_DIR, out / "runs"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    atomic_write_text(out / MANIFEST, json.dumps({"needed": False, "model.pretrained_url": url}) + "\n")
    print(f"pretrain: not needed, model.pretrained_url is {url!r} (not `pretrain`)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_data_args(parser)
    parser.add_argument("--out", type=Path, default=Path(PRETRAINED_CHECKPOINT).parent, help="the stage's folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    checkpoint = (args.out / Path(PRETRAINED_CHECKPOINT).name).resolve()
    try:
        cfg = config_from_args(args)
        if not cfg.model.pretrained_url or Path(cfg.model.pretrained_url).resolve() != checkpoint:
            return _not_needed(args.out, cfg.model.pretrained_url)
        check_pretrain_config(cfg)
        val_index = index_file(args.index, "val")
        check_index_fits(val_index, cfg, f"the model of {args.params} (profile {cfg.profile})")
        gt_dir = check_gt_dir(args.raw / cfg.data.source / "annotations" / "val").resolve()
        stills = build_stills(cfg, args.out / STILLS_DIR, val_index, workers=cfg.crops.workers,
                              progress=not args.no_progress)
        pcfg = pretraining_config(cfg)
        index_dir = (args.out / STILLS_DIR / "index").resolve()
        paths = RunPaths(index_dir=str(index_dir), gt_dir=str(gt_dir), run_dir="")
        identity = run_identity(pcfg, index_dir, gt_dir, threads=training_threads(pcfg))
        run_name = f"{pcfg.tracking.run_name}-{training_digest(config_to_dict(pcfg), identity)}"
        uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri, Path.cwd())
        print(f"pretrain: {stills['samples']} person crops from {stills['frames']} stills ({stills['persons']} "
              f"people) -> single-frame model, {pcfg.train.epochs} epochs", flush=True)
        outcome = train_and_track(pcfg, paths, args.out / "runs", run_name, uri, Path.cwd(), gt_dir.parent.parent,
                                  Path(args.params), progress=not args.no_progress, identity=identity)
        final = outcome.fit.history[-1]
        ap = {col: round(final[name], 4) for col, name in METRIC_NAMES.items() if name in final}
        # no run id or time in the file: the same pretraining writes the same bytes (and sha256)
        export_backbone(outcome.fit.state["model"], cfg, checkpoint,
                        {"made_by": "vremd pretrain stage", "val_mean_ap": ap.get(MEAN, float("nan"))})
    except (InputError, OSError) as exc:  # ConfigError, bad or missing data, unreadable checkpoints (CheckpointError)
        print(f"pretrain: error: {exc}", file=sys.stderr)
        return 1
    manifest = {"needed": True, "checkpoint": str(args.out / checkpoint.name), "sha256": file_sha256(checkpoint),
                "layout": "official ViTPose (backbone.*)", "stills": stills, "single_frame_val_ap": ap,
                "mlflow_run_id": outcome.mlflow_run_id}
    atomic_write_text(args.out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    print(f"{args.out / checkpoint.name}: ViTPose-layout backbone, sha256 {manifest['sha256'][:12]}...; single-frame "
          "val AP " + ", ".join(f"{col} {value:.1f}" for col, value in ap.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
