"""Write model predictions as PoseTrack-2018 json, one file per GT video, the way poseval reads them.

poseval pairs prediction and GT frames by position in the `images` list, so every prediction file
repeats its GT file's image list; each predicted person gets all 17 keypoints with v = 1, a score
per keypoint, and a `track_id` unique within its frame (poseval rejects repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import shapely

from vremd.data.joints import NUM_JOINTS, annotated_joints
from vremd.data.posetrack import Frame, Person, Video, read_video, write_video
from vremd.errors import InputError

__all__ = ["PredictionError", "write_predictions", "read_gt_videos", "GTPersonRef", "scored_gt_persons",
           "unpredicted_gt_persons", "describe_unpredicted"]


class PredictionError(InputError):
    """Predictions do not fit the GT videos; the message names the video and frame."""


def read_gt_videos(gt_dir: Path) -> list[Video]:
    """Every `*.json` GT video directly inside `gt_dir`, sorted by name."""
    paths = sorted(Path(gt_dir).glob("*.json"))
    if not paths:
        raise PredictionError(f"{gt_dir}: no GT *.json files to predict for")
    return [read_video(p) for p in paths]


def _person(track_id: int, person_id: int, joints_xy: np.ndarray, scores: np.ndarray,
            box_xywh: Sequence[float] | None) -> Person:
    keypoints = np.concatenate([joints_xy, np.ones((NUM_JOINTS, 1))], axis=1)  # (J, 3): x, y, v=1
    return Person(
        track_id=track_id, person_id=person_id, keypoints=keypoints,
        bbox_xywh=tuple(float(v) for v in box_xywh) if box_xywh is not None else None,
        bbox_head_xywh=None, scores=tuple(float(s) for s in scores),
    )


def write_predictions(
    pred_dir: Path,
    gt_videos: Iterable[Video],
    rows: Sequence[Mapping],
    joints_xy_image: np.ndarray,
    scores: np.ndarray,
) -> list[Path]:
    """Write `<pred_dir>/<video>.json` for every GT video; return the written paths.

    Args:
        gt_videos: the GT videos (all of them: poseval needs a prediction file for each GT file).
        rows: one index row per prediction with `video`, `frame_index` and optionally `box_xywh`.
        joints_xy_image: (S, J, 2) predicted joints in original-image pixels (x, y).
        scores: (S, J) per-keypoint confidence (heatmap maximum times box score).
    """
    joints_xy_image = np.asarray(joints_xy_image, np.float64)
    scores = np.asarray(scores, np.float64)
    S = len(rows)
    if joints_xy_image.shape != (S, NUM_JOINTS, 2) or scores.shape != (S, NUM_JOINTS):
        raise PredictionError(
            f"write_predictions: {S} rows need joints (S, {NUM_JOINTS}, 2) and scores (S, {NUM_JOINTS}); "
            f"found {joints_xy_image.shape} and {scores.shape}"
        )
    if not np.isfinite(joints_xy_image).all() or not np.isfinite(scores).all():
        raise PredictionError("write_predictions: predicted joints or scores contain NaN or inf")
    by_frame: dict[tuple[str, int], list[int]] = {}
    for s, row in enumerate(rows):
        by_frame.setdefault((str(row["video"]), int(row["frame_index"])), []).append(s)
    videos = list(gt_videos)
    known = {v.name: len(v.frames) for v in videos}
    for video, frame_index in by_frame:
        if video not in known:
            raise PredictionError(f"write_predictions: prediction for video {video!r}, which has no GT json")
        if not 0 <= frame_index < known[video]:
            raise PredictionError(f"{video}: frame_index {frame_index} outside the GT's {known[video]} frames")
    pred_dir = Path(pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for video in videos:
        frames = []
        for frame in video.frames:
            samples = by_frame.get((video.name, frame.frame_index), [])
            persons = tuple(
                _person(k, frame.image_id * 100 + k, joints_xy_image[s], scores[s], rows[s].get("box_xywh"))
                for k, s in enumerate(samples)  # k: track id unique within the frame
            )
            frames.append(Frame(image_id=frame.image_id, frame_index=frame.frame_index, file_name=frame.file_name,
                                is_labeled=frame.is_labeled, persons=persons, ignore_regions=()))
        path = pred_dir / f"{video.name}.json"
        write_video(Video(name=video.name, split=video.split, json_path=path, frames=tuple(frames),
                          image_hw=video.image_hw, listed_order=video.listed_order), path)  # GT's image order
        written.append(path)
    return written


# ---------------------------------------------------------------- GT persons poseval counts


@dataclass(frozen=True)
class GTPersonRef:
    """One GT person by name: where a user finds it in the annotation files."""

    video: str
    frame_index: int
    image_id: int
    track_id: int
    person_id: int

    def __str__(self) -> str:
        return (f"{self.video} frame {self.frame_index} (image {self.image_id}) track {self.track_id} "
                f"person {self.person_id}")


def scored_gt_persons(video: Video) -> list[GTPersonRef]:
    """The GT persons of a video that poseval counts (POSEVAL_SPEC §2): at least one annotated keypoint
    (any (x, y, v) but (0, 0, 0)) left after removing those strictly inside the frame's ignore regions
    (shapely's `contains`, as poseval: a keypoint on a region's edge stays)."""
    out = []
    for frame in video.frames:
        if not frame.persons:
            continue
        kps = np.stack([np.asarray(p.keypoints, np.float64) for p in frame.persons])  # (P, 17, 3)
        kept = annotated_joints(kps)  # (P, 17)
        for vertices in frame.ignore_regions:
            if len(vertices) >= 3:
                kept &= ~shapely.contains_xy(shapely.Polygon(vertices), kps[..., 0], kps[..., 1])
        out.extend(GTPersonRef(video.name, frame.frame_index, frame.image_id, p.track_id, p.person_id)
                   for p, keep in zip(frame.persons, kept) if keep.any())
    return out


def unpredicted_gt_persons(gt_videos: Iterable[Video], rows: Sequence[Mapping]) -> list[GTPersonRef]:
    """GT persons poseval counts that have no prediction, in GT order.

    A GT-box row (`source` "gt") predicts the person it was cropped for (video, frame, person id). With
    detector boxes (`source` "det") a person cannot be told from a missed one, so a person counts as
    unpredicted when its frame has no prediction at all (every box of the frame dropped or none found).
    """
    persons = {(str(r["video"]), int(r["frame_index"]), int(r["person_id"])) for r in rows if r.get("source", "gt") == "gt"}
    frames = {(str(r["video"]), int(r["frame_index"])) for r in rows if r.get("source") == "det"}
    return [p for video in gt_videos for p in scored_gt_persons(video)
            if (p.video, p.frame_index, p.person_id) not in persons and (p.video, p.frame_index) not in frames]


def describe_unpredicted(persons: Sequence[GTPersonRef], limit: int = 20) -> str:
    """One line per person (at most `limit`, then a count of the rest), headed by the total."""
    if not persons:
        return "0 GT persons without a prediction"
    lines = [f"{len(persons)} GT person(s) that poseval counts have no prediction (each costs recall):"]
    lines += [f"  {p}" for p in persons[:limit]]
    if len(persons) > limit:
        lines.append(f"  ... and {len(persons) - limit} more")
    return "\n".join(lines)
