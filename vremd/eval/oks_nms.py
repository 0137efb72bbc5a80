"""Rescoring and OKS-NMS of one frame's poses, as MMPose's `PoseTrack18Metric` with its defaults.

`detect.postprocess: oks_nms` (`vremd.eval.postprocess`). A frame's detector-box poses are
1. rescored: box score x the mean of the joint scores above `keypoint_threshold` (0 when none is);
2. kept greedily, best rescored first: a pose is dropped when its OKS with an already kept pose is above
   `threshold`. OKS counts every joint (no visibility threshold):
   mean_j exp(-d_j^2 / (2 sigma_j)^2 / ((a_1 + a_2) / 2 + eps) / 2), a = area of the person's enlarged box.

Each value below is read from MMPose 1.x (open-mmlab/mmpose @759b39c), paths shortened: `M/` =
mmpose/evaluation/metrics/, `F/` = mmpose/evaluation/functional/, `T/` = mmpose/datasets/transforms/.

| parameter | MMPose | where |
|---|---|---|
| score_mode | `bbox_keypoint`: box score x mean of joint scores > thr | M/posetrack18_metric.py:76; M/coco_metric.py:465-475 |
| keypoint_score_thr | 0.2, strictly above | M/posetrack18_metric.py:77; M/coco_metric.py:470 |
| nms_mode | `oks_nms` | M/posetrack18_metric.py:78 |
| nms_thr | 0.9; a pose survives while OKS <= 0.9 | M/posetrack18_metric.py:79; F/nms.py:160 |
| vis_thr | None (not passed): every joint counts in the OKS | M/coco_metric.py:481-484; F/nms.py:108-111 |
| sigmas | PoseTrack18's (= COCO's 17) | configs/_base_/datasets/posetrack18.py:173-176 |
| area | prod(bbox_scales): the box x 1.25, widened to the input aspect | M/coco_metric.py:241-244; T/formatting.py:116 |
|  | (here the crop box, the index's `box_xywh`) | T/common_transforms.py:52; T/topdown_transforms.py:88-90 |
| eps | np.spacing(1) beside the mean area | F/nms.py:107 |
| OKS precision | float32, compared with the threshold in float32 | F/nms.py:100 |
| order | `scores.argsort()[::-1]` | F/nms.py:150 |
| use_area | True, read only by the COCO evaluation, not by the NMS | M/coco_metric.py:98, 564 |

Two places where this code is MMPose's intent rather than its letter:
- Equal rescored scores: numpy's default argsort is not stable on SIMD CPUs (the order of ties depends on
  the machine); here a stable sort, reversed as MMPose reverses it: among equal scores the later pose
  comes first (what MMPose's argsort gives wherever it is stable, e.g. on two or three poses).
- "Every joint" is every joint the model predicts (`joint_slots`): PoseTrack never annotates the ears, so
  the model leaves those slots empty and their decoded "position" is a corner of the crop; MMPose's model
  predicts all 17 joints.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vremd.eval.coco_oks import POSETRACK_SIGMAS

__all__ = ["oks_nms", "oks_with", "rescore"]

EPS = np.spacing(1)


def rescore(box_scores: np.ndarray, joint_scores: np.ndarray, keypoint_threshold: float) -> np.ndarray:
    """``(P,)``: box scores x the mean of each person's ``(P, J)`` joint scores above the threshold (0 if none)."""
    above = joint_scores > keypoint_threshold  # (P, J)
    counts = above.sum(axis=1)  # (P,)
    means = np.where(counts > 0, (joint_scores * above).sum(axis=1) / np.maximum(counts, 1), 0.0)
    return box_scores * means


def oks_with(ref_xy: np.ndarray, ref_area: float, others_xy: np.ndarray, other_areas: np.ndarray,
             sigmas: np.ndarray = POSETRACK_SIGMAS) -> np.ndarray:
    """``(M,)`` float32: OKS of pose ``ref_xy`` ``(J, 2)`` with each of ``others_xy`` ``(M, J, 2)``, every joint."""
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2  # (J,)
    d2 = ((others_xy - ref_xy[None]) ** 2).sum(axis=2)  # (M, J) squared pixel distances
    scale = (ref_area + np.asarray(other_areas, np.float64))[:, None] / 2 + EPS  # (M, 1)
    return np.exp(-(d2 / variances[None] / scale / 2)).mean(axis=1).astype(np.float32)


def oks_nms(joints_xy: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float,
            joint_slots: Sequence[int] | None = None, sigmas: np.ndarray = POSETRACK_SIGMAS) -> np.ndarray:
    """Indices of the poses ``(P, J, 2)`` to keep, best score first (module docstring); the OKS reads the
    ``joint_slots`` the model predicts (None: all J)."""
    slots = np.arange(joints_xy.shape[1]) if joint_slots is None else np.asarray(joint_slots)
    xy, sig = joints_xy[:, slots], np.asarray(sigmas)[slots]  # (P, J', 2), (J',)
    order = np.argsort(scores, kind="stable")[::-1]  # best first; equal scores: the later pose first
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = oks_with(xy[best], areas[best], xy[rest], areas[rest], sig)  # (len(rest),) float32
        order = rest[overlap <= np.float32(threshold)]
    return np.asarray(keep, dtype=np.int64)
