"""Stage `crops`: 3-frame person crops of every labeled frame, one shard per video, plus a manifest.

    python pipeline/crops.py --raw data/raw --out data/crops [--set crops.workers=4]

Reads data/raw/<data.source> (PoseTrack-2018 layout). Val crops use GT boxes, or with
`data.val_boxes: <path>` the boxes of a COCO-format detection json scoring at least `detect.score_threshold`
(as DCPose keeps its boxes). Incremental: only videos whose json, frames, detections, crop parameters or
crop code changed are re-extracted (the summary says which reason applied to how many); removed videos are
dropped.
Bad input follows `data.on_bad_input` (error: stop naming the file and field; skip: count it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli_config import add_config_args, config_from_args, warn_if_untracked
from vremd.data.crop_store import build_crops
from vremd.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw data root (default: data/raw)")
    parser.add_argument("--out", type=Path, default=Path("data/crops"), help="crops dir (default: data/crops)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.data.val_boxes != "gt":
            warn_if_untracked(cfg.data.val_boxes, "detections", "data.val_boxes", "crops")
        stats = build_crops(args.raw / cfg.data.source,
                            args.out, cfg.crops, cfg.data.on_bad_input, cfg.data.val_boxes,
                            workers=cfg.crops.workers, progress=not args.no_progress,
                            min_box_score=cfg.detect.score_threshold)
    except (InputError, OSError) as exc:  # all name the file or key at fault
        print(f"crops: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(stats['processed'])} video(s) extracted, {len(stats['removed'])} removed")
    for reason, count in stats["reasons"].items():  # why: e.g. "crop code changed: re-extracted 40 video(s)"
        print(f"  {reason}: {'' if reason == 'new video' else 're-'}extracted {count} video(s)")
    for split, s in stats["splits"].items():
        skipped = ", ".join(f"{n} {reason}" for reason, n in s["skipped"].items()) or "none"
        print(f"  {split:5s} {s['videos']} videos, {s['samples']} samples, "
              f"{s['clamped_neighbours']} with clamped neighbours; skipped: {skipped}")
        for message in s["messages"][:5]:
            print(f"    skipped: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
