"""The one post-processing of predicted poses, shared by validation and predict (`detect.postprocess`).

Every pose's joint scores are its heatmap maxima times its box score (1.0 for a GT box), as DCPose writes
them (Pose-Group/DCPose @8d90d88 `datasets/process/keypoints_ord.py:23`, `conf = local_score * global_score`).
Then, per frame, among the poses of detector boxes (a GT box is one annotated person: always kept):
- `none`: every pose is kept. DCPose's PoseTrack evaluation writes every loaded box's pose
  (`datasets/zoo/posetrack/PoseTrack.py:408-547`, no rescoring, no NMS); the boxes scoring below
  `detect.score_threshold` were dropped when the boxes were read (`PoseTrack.py:377`, here the crops stage and
  predict's box reading, `vremd.data.detections.keeps_score`).
- `oks_nms`: MMPose's rescoring and OKS-NMS (`vremd.eval.oks_nms`, its parameters and sources in a table).
  The joint scores written stay heatmap maximum x box score; MMPose's PoseTrack18Metric writes the heatmap
  maxima alone (mmpose @759b39c `mmpose/evaluation/metrics/posetrack18_metric.py:157-160`), so switching to
  `oks_nms` changes which poses are written, never how they are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from vremd.config import ConfigError, DetectConfig
from vremd.eval.oks_nms import oks_nms, rescore

__all__ = ["PersonPoses", "crop_box_areas", "postprocess"]


@dataclass(frozen=True)
class PersonPoses:
    """The predicted poses of S person boxes, in any number of frames."""

    frame_keys: Sequence[Hashable]  # (S,) the frame of each pose
    joints_xy: np.ndarray  # (S, J, 2) image pixels
    maxvals: np.ndarray  # (S, J) heatmap maxima
    box_scores: np.ndarray  # (S,) detector score, 1.0 for a GT box
    areas: np.ndarray  # (S,) w * h of the enlarged crop box, image pixels^2 (`crop_box_areas`)
    detected: np.ndarray  # (S,) bool: a detector's box (post-processed) or a GT box (kept)


def crop_box_areas(boxes_xywh: Sequence[Sequence[float]]) -> np.ndarray:
    """``(S,)`` float64: w * h of each ``[x, y, w, h]`` crop box (the person box enlarged and widened)."""
    boxes = np.asarray([[float(v) for v in box] for box in boxes_xywh], np.float64).reshape(-1, 4)  # (S, 4)
    return boxes[:, 2] * boxes[:, 3]


def postprocess(poses: PersonPoses, cfg: DetectConfig,
                joint_slots: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(keep (S,) bool, joint_scores (S, J))`` of `poses` under `cfg.postprocess` (module docstring).

    ``joint_slots``: the joint slots the model predicts, which the OKS of `oks_nms` compares (None: all J).
    """
    # the choice and its parameters are read as one setting, whatever the choice (so dvc.yaml lists all three:
    # tests/pipeline/test_dvc_params.py records reads, and a branch its smoke run skips must not hide a key)
    method, oks_threshold, keypoint_threshold = cfg.postprocess, cfg.oks_nms, cfg.keypoint_threshold
    box_scores = np.asarray(poses.box_scores, np.float64)  # (S,)
    joint_scores = np.asarray(poses.maxvals, np.float64) * box_scores[:, None]  # (S, J)
    if method == "none":
        return np.ones(len(box_scores), bool), joint_scores
    if method != "oks_nms":
        raise ConfigError(f"detect.postprocess: expected 'none' or 'oks_nms', found {method!r}")
    detected = np.asarray(poses.detected, bool)
    keep = ~detected
    by_frame: dict[Hashable, list[int]] = {}
    for s in np.flatnonzero(detected):
        by_frame.setdefault(poses.frame_keys[s], []).append(int(s))
    for members in by_frame.values():
        idx = np.asarray(members)  # (P,) this frame's detector-box poses, in box order
        scores = rescore(box_scores[idx], poses.maxvals[idx], keypoint_threshold)
        kept = oks_nms(poses.joints_xy[idx], scores, poses.areas[idx], oks_threshold, joint_slots)
        keep[idx[kept]] = True
    return keep, joint_scores
