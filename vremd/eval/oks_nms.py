"""DCPose/HRNet post-processing of detector-box predictions: person rescoring and OKS-NMS per frame.

With detector boxes, several boxes can cover one person and each yields a pose. The top-down line of work
(HRNet, PoseWarper, DCPose: `VAL.IN_VIS_THRE 0.2`, `VAL.OKS_THRE 0.9`) then
1. rescores each person: box score x the mean score of its joints scoring above `keypoint_threshold`
   (0 when none does);
2. keeps, best score first, each pose whose OKS with every kept pose is at most `threshold`. OKS here
   counts only joints that score above `keypoint_threshold` in both poses, with the joints' COCO sigmas
   and the mean of the two box areas as the scale: e = d^2 / (2 sigma)^2 / ((a1 + a2) / 2) / 2.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from vremd.eval.coco_oks import POSETRACK_SIGMAS

__all__ = ["keep_detected", "oks_nms", "oks_with", "rescore"]

EPS = np.spacing(1)


def rescore(box_scores: np.ndarray, joint_scores: np.ndarray, keypoint_threshold: float) -> np.ndarray:
    """``(P,)`` box scores x mean of each person's ``(P, J)`` joint scores above the threshold (0 if none)."""
    above = joint_scores > keypoint_threshold  # (P, J)
    counts = above.sum(axis=1)  # (P,)
    means = np.where(counts > 0, (joint_scores * above).sum(axis=1) / np.maximum(counts, 1), 0.0)
    return box_scores * means


def oks_with(ref: np.ndarray, ref_area: float, others: np.ndarray, other_areas: np.ndarray,
             keypoint_threshold: float, sigmas: np.ndarray = POSETRACK_SIGMAS) -> np.ndarray:
    """OKS of pose ``ref`` ``(J, 3)`` (x, y, score) with each of ``others`` ``(M, J, 3)``: ``(M,)``."""
    variances = (2 * sigmas) ** 2  # (J,)
    d2 = ((others[:, :, :2] - ref[None, :, :2]) ** 2).sum(axis=2)  # (M, J)
    scale = (ref_area + other_areas)[:, None] / 2 + EPS  # (M, 1)
    e = d2 / variances[None] / scale / 2  # (M, J)
    both = (others[:, :, 2] > keypoint_threshold) & (ref[None, :, 2] > keypoint_threshold)  # (M, J)
    counts = both.sum(axis=1)
    return np.where(counts > 0, (np.exp(-e) * both).sum(axis=1) / np.maximum(counts, 1), 0.0)


def oks_nms(poses: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float,
            keypoint_threshold: float, sigmas: np.ndarray = POSETRACK_SIGMAS) -> np.ndarray:
    """Indices of the poses ``(P, J, 3)`` to keep, best score first (see the module docstring)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = oks_with(poses[best], areas[best], poses[rest], areas[rest], keypoint_threshold, sigmas)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def keep_detected(frame_keys: Sequence[Hashable], poses: np.ndarray, box_scores: np.ndarray, areas: np.ndarray,
                  detected: np.ndarray, threshold: float, keypoint_threshold: float) -> np.ndarray:
    """``(S,)`` bool: which samples survive rescoring + OKS-NMS, run per frame over detector-box samples only.

    ``poses`` ``(S, J, 3)`` holds (x, y, joint score) in image pixels; ``detected`` ``(S,)`` marks samples
    cropped from detector boxes (GT-box samples are always kept: one per annotated person already).
    """
    keep = ~np.asarray(detected, bool)
    by_frame: dict[Hashable, list[int]] = {}
    for s in np.flatnonzero(detected):
        by_frame.setdefault(frame_keys[s], []).append(int(s))
    for members in by_frame.values():
        idx = np.asarray(members)
        scores = rescore(box_scores[idx], poses[idx, :, 2], keypoint_threshold)
        keep[idx[oks_nms(poses[idx], scores, areas[idx], threshold, keypoint_threshold)]] = True
    return keep
