"""A simple IoU tracker: links per-frame person boxes into tracks (greedy matching, constant velocity)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def pairwise_iou_xywh(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of (A, 4) and (B, 4) x, y, w, h boxes -> (A, B)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih  # (A, B)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    track_id: int
    box_xywh: np.ndarray  # last matched box
    velocity_xy: np.ndarray = field(default_factory=lambda: np.zeros(2))  # box shift per frame
    missed: int = 0  # frames since the last match

    def predicted(self) -> np.ndarray:
        """Where the box should be in the next frame (constant velocity)."""
        shift = self.velocity_xy * (self.missed + 1)
        return self.box_xywh + np.array([shift[0], shift[1], 0.0, 0.0])


def track_boxes(
    boxes_per_frame: list[np.ndarray], iou_threshold: float = 0.3, max_gap: int = 2
) -> list[np.ndarray]:
    """Give every box a track id; returns one (P_t,) int array per frame, aligned with the input.

    Args:
        boxes_per_frame: per frame, a (P_t, 4) array of x, y, w, h person boxes in image pixels.
        iou_threshold: a box continues a track only if its IoU with the track's predicted box is at least this.
        max_gap: a track not matched for more than this many frames ends; a later box starts a new id.
    """
    active: list[_Track] = []
    next_id = 0
    out: list[np.ndarray] = []
    for boxes in boxes_per_frame:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        if active and len(boxes):
            iou = pairwise_iou_xywh(np.stack([t.predicted() for t in active]), boxes)  # (tracks, boxes)
            # greedy: the most overlapping pair first; each track and box used once
            for ti, bi in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
                if iou[ti, bi] < iou_threshold:
                    break
                if ids[bi] >= 0 or active[ti].missed < 0:
                    continue
                track = active[ti]
                steps = track.missed + 1
                track.velocity_xy = (boxes[bi, :2] - track.box_xywh[:2]) / steps
                track.box_xywh = boxes[bi].copy()
                track.missed = -1  # marks "matched this frame"
                ids[bi] = track.track_id
        for bi in np.flatnonzero(ids < 0):
            active.append(_Track(next_id, boxes[bi].copy(), missed=-1))
            ids[bi] = next_id
            next_id += 1
        for track in active:
            track.missed += 1
        active = [t for t in active if t.missed <= max_gap]
        out.append(ids)
    return out
