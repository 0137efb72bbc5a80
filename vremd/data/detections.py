"""Person detections in COCO results format (`data.val_boxes: <path>`), grouped by image id.

The file is a json list of `{"image_id": int, "category_id": 1, "bbox": [x, y, w, h], "score": float}`
(a `{"annotations": [...]}` object is accepted too). Only category 1 (person) is kept, and only boxes
scoring at least `detect.score_threshold` (`keeps_score`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import orjson

from vremd.errors import InputError


class DetectionFormatError(InputError):
    """The detection json is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Detection:
    """One detected person box in image pixels."""

    image_id: int
    box_xywh: tuple[float, float, float, float]
    score: float


def keeps_score(score: float, threshold: float) -> bool:
    """True for a box that is kept: ``score >= threshold``, as DCPose keeps its boxes (Pose-Group/DCPose @8d90d88
    `datasets/zoo/posetrack/PoseTrack.py:377` drops `score < IMAGE_THRE`)."""
    return score >= threshold


def _parse_entry(path: Path, i: int, entry: object) -> Detection | None:
    where = f"{path}: entry {i}"
    if not isinstance(entry, dict):
        raise DetectionFormatError(f"{where}: expected an object, found {type(entry).__name__}")
    for field in ("image_id", "bbox", "score"):
        if field not in entry:
            raise DetectionFormatError(f"{where}: {field}: missing")
    if entry.get("category_id", 1) != 1:
        return None
    image_id, bbox, score = entry["image_id"], entry["bbox"], entry["score"]
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise DetectionFormatError(f"{where}: image_id: expected an integer, found {image_id!r}")
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
        raise DetectionFormatError(f"{where}: bbox: expected 4 finite numbers [x, y, w, h], found {bbox!r}")
    if not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DetectionFormatError(f"{where}: score: expected a finite number, found {score!r}")
    return Detection(image_id=image_id, box_xywh=tuple(float(v) for v in bbox), score=float(score))


def read_detections(path: Path, min_score: float = 0.0) -> dict[int, list[Detection]]:
    """Person detections of a COCO-results json scoring at least `min_score`, grouped by image id, best first."""
    path = Path(path)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise DetectionFormatError(f"{path}: no such detection file (data.val_boxes)") from None
    except orjson.JSONDecodeError as exc:
        raise DetectionFormatError(f"{path}: not valid json: {exc}") from None
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise DetectionFormatError(f"{path}: expected a list of detections, found {type(data).__name__}")
    by_image: dict[int, list[Detection]] = {}
    for i, entry in enumerate(data):
        det = _parse_entry(path, i, entry)
        if det is not None and keeps_score(det.score, min_score):
            by_image.setdefault(det.image_id, []).append(det)
    for dets in by_image.values():
        dets.sort(key=lambda d: -d.score)
    return by_image
