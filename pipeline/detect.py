"""Stage `detect`: person boxes for the val frames from a torchvision detector, with their provenance.

    python pipeline/detect.py --raw data/raw --out detections/detected/val.json [--device cuda] [--all-frames]

Writes a COCO detection-results json (a list of `{"image_id", "category_id": 1, "bbox": [x, y, w, h],
"score"}`, image ids as in the val annotations) and `<out stem>.provenance.json` beside it: detector, weights
file and sha256, score threshold and its rule (`score_rule`: boxes with score >= detect.score_threshold are
kept, as DCPose keeps them), NMS IoU, input size, torchvision version, frame count. Labeled frames only unless
--all-frames (poseval scores labeled frames). `data.val_boxes: detect` crops with them; when
`data.val_boxes` names other boxes (`gt`, or a file), the stage only writes the provenance file saying it was
not needed, so `dvc repro` of a GT-box profile never builds a detector.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.cli_config import add_config_args, config_from_args
from vremd.atomic import atomic_write_text
from vremd.config import DETECTED_VAL_BOXES
from vremd.data.posetrack import PoseTrackFormatError, list_videos, read_video
from vremd.detect.detector import build_detector, detect_images
from vremd.errors import InputError


def _frames(dataset_dir: Path, all_frames: bool) -> list[tuple[int, Path]]:
    """``(image_id, image path)`` of the val frames to detect on, in video order."""
    found = []
    for json_path in list_videos(dataset_dir, "val"):
        video = read_video(json_path, "val")
        found += [(f.image_id, dataset_dir / f.file_name) for f in video.frames if all_frames or f.is_labeled]
    return found


def _decoded(frames: list[tuple[int, Path]]) -> Iterator[tuple[int, np.ndarray]]:
    for image_id, path in frames:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise PoseTrackFormatError(f"{path}: missing or not a decodable image (val frame {image_id})")
        yield image_id, image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw data root")
    parser.add_argument("--out", type=Path, default=Path(DETECTED_VAL_BOXES), help="COCO results json")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--all-frames", action="store_true", help="also detect on unlabeled frames")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    provenance_path = args.out.with_name(args.out.stem + ".provenance.json")
    try:
        cfg = config_from_args(args)
        if cfg.data.val_boxes == "gt" or Path(cfg.data.val_boxes).resolve() != args.out.resolve():
            args.out.unlink(missing_ok=True)  # no stale boxes beside a record that says none were made
            atomic_write_text(provenance_path, json.dumps({"needed": False, "data.val_boxes": cfg.data.val_boxes}) + "\n")
            print(f"detect: not needed, data.val_boxes is {cfg.data.val_boxes!r}")
            return 0
        frames = _frames(args.raw / cfg.data.source, args.all_frames)
        if not frames:
            raise PoseTrackFormatError(f"{args.raw / cfg.data.source}/annotations/val: no val frames to detect on")
        model, provenance = build_detector(cfg.detect)
        results = []
        for image_id, boxes, scores in detect_images(model, _decoded(frames), cfg.detect.batch_size, args.device,
                                                     len(frames), progress=not args.no_progress):
            results += [{"image_id": image_id, "category_id": 1, "bbox": [round(float(v), 2) for v in box],
                         "score": round(float(score), 5)} for box, score in zip(boxes, scores)]
    except (InputError, OSError) as exc:  # ConfigError, PoseTrackFormatError, DetectorError, missing files
        print(f"detect: error: {exc}", file=sys.stderr)
        return 1
    record = {"needed": True, **provenance.to_dict(), "frames": len(frames), "boxes": len(results),
              "all_frames": args.all_frames}
    atomic_write_text(args.out, json.dumps(results))
    atomic_write_text(provenance_path, json.dumps(record, indent=2) + "\n")
    print(f"{args.out}: {len(results)} person boxes on {len(frames)} frames ({provenance.detector}, "
          f"{provenance.score_rule}, weights sha256 {provenance.weights_sha256[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
