"""Person boxes per frame from a COCO-format detection json or a PoseTrack-2018 json.

Which frame a COCO `image_id` means:
* a COCO *results* list (`[{"image_id", "bbox", "score", "category_id"}, ...]`, what detectors write):
  `image_id` is the 0-based frame index in the video (or in the sorted frame folder);
* a COCO *dataset* dict (`{"images": [...], "annotations": [...]}`): each image's `file_name` is matched
  to a frame by its base name (`000012.jpg` is the 13th file of a frame folder, or frame 12 of a video:
  the last integer in the name is the frame index when no file of that name exists).
A PoseTrack json's images are matched to frames by file name the same way (whatever their order in the
json); its `track_id`s are kept, and its `images` list, in its own order, is mirrored in the output.
Only `category_id` 1 (person, or no category) is used; boxes scoring below `min_score` are dropped
(`vremd.data.detections.keeps_score`, the crops stage's rule). A COCO file whose boxes carry scores holds a
detector's boxes (`BoxSet.detected`: their poses are post-processed, as validation's); a PoseTrack json or
unscored boxes are annotated persons, one box each. A frame's boxes are listed best score first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vremd.data.boxes import box_from_keypoints
from vremd.data.detections import keeps_score
from vremd.data.posetrack import PoseTrackFormatError, frame_number, read_video
from vremd.errors import InputError

from .tracker import track_boxes


class BoxFileError(InputError):
    """A box file is missing, malformed or points at frames that do not exist; names file and field."""


@dataclass(frozen=True)
class FrameBoxes:
    """The person boxes of one frame."""

    boxes_xywh: np.ndarray  # (P, 4) float64 image pixels
    scores: np.ndarray  # (P,) float64 detector score (1.0 for annotated boxes)
    track_ids: np.ndarray  # (P,) int64, -1 while untracked


@dataclass(frozen=True)
class BoxSet:
    """Boxes for every frame of a video, plus the PoseTrack `images` list to mirror when one was given."""

    frames: tuple[FrameBoxes, ...]
    images: tuple[dict[str, Any], ...] | None = None  # PoseTrack json images (file_name, id, ...), json order
    video_name: str | None = None
    image_frames: tuple[int, ...] | None = None  # the video frame of each of `images`
    detected: bool = False  # a detector's scored boxes (post-processed), not annotated persons

    @property
    def num_boxes(self) -> int:
        return sum(len(f.scores) for f in self.frames)


def _empty() -> FrameBoxes:
    return FrameBoxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))


def _frame_of_name(file_name: str, frame_names: tuple[str, ...], where: str) -> int:
    base = Path(file_name).name
    if base in frame_names:
        return frame_names.index(base)
    number = frame_number(base)
    if number is None:
        raise BoxFileError(f"{where}: file_name {file_name!r} matches no frame and holds no frame number")
    return number


def _box(value: Any, where: str) -> np.ndarray:
    box = np.asarray(value, dtype=np.float64) if isinstance(value, (list, tuple)) else None
    if box is None or box.shape != (4,) or not np.all(np.isfinite(box)):
        raise BoxFileError(f"{where}: bbox: expected [x, y, w, h], found {value!r}")
    return box


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BoxFileError(f"{where}: score: expected a finite number, found {value!r}")
    return float(value)


def _collect(per_frame: dict[int, list], num_frames: int, path: Path) -> tuple[FrameBoxes, ...]:
    bad = sorted(i for i in per_frame if not 0 <= i < num_frames)
    if bad:
        raise BoxFileError(
            f"{path}: image_id/frame: boxes for frame(s) {bad[:5]} but the video has {num_frames} frames "
            f"(0..{num_frames - 1})"
        )
    frames = []
    for t in range(num_frames):
        rows = sorted(per_frame.get(t, []), key=lambda r: -r[1])  # best score first (stable), as read_detections
        if not rows:
            frames.append(_empty())
            continue
        frames.append(FrameBoxes(
            np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float64),
            np.array([r[2] for r in rows], dtype=np.int64),
        ))
    return tuple(frames)


def _load_coco(path: Path, data: Any, frame_names: tuple[str, ...], min_score: float) -> BoxSet:
    if isinstance(data, dict):
        if not isinstance(data.get("annotations"), list) or not isinstance(data.get("images"), list):
            raise BoxFileError(f"{path}: expected a COCO results list or a dict with 'images' and 'annotations'")
        frame_of_id = {
            img["id"]: _frame_of_name(str(img.get("file_name", "")), frame_names, f"{path}: images[{i}]")
            for i, img in enumerate(data["images"])
        }
        dets = data["annotations"]
    else:
        frame_of_id, dets = None, data
    per_frame: dict[int, list] = {}
    scored = False
    for i, det in enumerate(dets):
        where = f"{path}: [{i}]" if frame_of_id is None else f"{path}: annotations[{i}]"
        if not isinstance(det, dict) or "image_id" not in det or "bbox" not in det:
            raise BoxFileError(f"{where}: expected a detection with 'image_id' and 'bbox'")
        score = _score(det.get("score", 1.0), where)
        if det.get("category_id", 1) != 1 or not keeps_score(score, min_score):
            continue
        scored |= "score" in det
        if frame_of_id is None:
            frame = det["image_id"]
            if not isinstance(frame, int):
                raise BoxFileError(f"{where}: image_id: expected a frame index (int), found {frame!r}")
        elif det["image_id"] not in frame_of_id:
            raise BoxFileError(f"{where}: image_id {det['image_id']!r} is not in 'images'")
        else:
            frame = frame_of_id[det["image_id"]]
        per_frame.setdefault(frame, []).append((_box(det["bbox"], where), score, -1))
    return BoxSet(_collect(per_frame, len(frame_names), path), detected=scored)


def _load_posetrack(path: Path, frame_names: tuple[str, ...]) -> BoxSet:
    try:
        video = read_video(path)
    except PoseTrackFormatError as exc:
        raise BoxFileError(str(exc)) from None
    raw = orjson.loads(path.read_bytes())
    frame_of = [_frame_of_name(f.file_name, frame_names, f"{path}: image {f.image_id}") for f in video.frames]
    if len(set(frame_of)) < len(frame_of):
        t = next(t for t in frame_of if frame_of.count(t) > 1)
        names = [f.file_name for f, u in zip(video.frames, frame_of) if u == t]
        raise BoxFileError(f"{path}: images {names} are all frame {t} of the video")
    per_frame: dict[int, list] = {}
    for frame, t in zip(video.frames, frame_of):
        for person in frame.persons:
            where = f"{path}: image {frame.image_id} track_id {person.track_id}"
            box = person.bbox_xywh if person.bbox_xywh is not None else box_from_keypoints(person.keypoints)
            if box is None:  # no box and fewer than 2 annotated keypoints: nothing to crop
                continue
            per_frame.setdefault(t, []).append((_box(list(box), where), 1.0, person.track_id))
    listed = video.listed_order if video.listed_order is not None else range(len(frame_of))
    return BoxSet(_collect(per_frame, len(frame_names), path), images=tuple(raw["images"]), video_name=video.name,
                  image_frames=tuple(frame_of[k] for k in listed))


def load_boxes(
    path: str | Path, frame_names: tuple[str, ...], fmt: str = "auto", min_score: float = 0.0
) -> BoxSet:
    """Read person boxes for a video whose frames are `frame_names` (scored boxes below `min_score` dropped).

    fmt: "coco", "posetrack" or "auto" (a dict with `categories` and `track_id`s is PoseTrack).
    """
    path = Path(path)
    if not path.is_file():
        raise BoxFileError(f"{path}: no such box file")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BoxFileError(f"{path}: not valid json: {exc}") from None
    if fmt == "auto":
        is_pt = isinstance(data, dict) and "categories" in data and any(
            isinstance(a, dict) and "track_id" in a for a in data.get("annotations", [])
        )
        fmt = "posetrack" if is_pt else "coco"
    if fmt == "posetrack":
        boxes = _load_posetrack(path, frame_names)
    elif fmt == "coco":
        boxes = _load_coco(path, data, frame_names, min_score)
    else:
        raise BoxFileError(f"{path}: unknown box format {fmt!r}, expected auto, coco or posetrack")
    if boxes.num_boxes == 0:
        raise BoxFileError(f"{path}: no person boxes (empty file, or every box below --min-score {min_score})")
    return boxes


def assign_tracks(boxes: BoxSet, track: bool, iou_threshold: float = 0.3, max_gap: int = 2) -> BoxSet:
    """Fill track ids: link boxes by IoU when `track`, else keep file ids (or number boxes per frame)."""
    if track:
        ids = track_boxes([f.boxes_xywh for f in boxes.frames], iou_threshold, max_gap)
    else:
        ids = [f.track_ids if np.all(f.track_ids >= 0) else np.arange(len(f.scores)) for f in boxes.frames]
    frames = tuple(FrameBoxes(f.boxes_xywh, f.scores, i.astype(np.int64)) for f, i in zip(boxes.frames, ids))
    return dataclasses.replace(boxes, frames=frames)
