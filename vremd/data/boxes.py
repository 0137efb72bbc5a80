"""Person-box geometry: clipping, the paper's 25% enlargement, aspect fixing, crop affines, IoU.

Coordinates follow OpenCV: pixel i of an image is sampled at coordinate i, so an image of width W
spans [-0.5, W - 0.5]. Boxes are `(x, y, w, h)` in the same coordinates as the keypoints.
"""

from __future__ import annotations

import math

import numpy as np

from vremd.errors import InputError


class BoxError(InputError):
    """A box cannot be used: zero area, not finite, or outside the image."""


def clip_box_xywh(box_xywh, image_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """Return the part of `box_xywh` inside an image of size `image_wh`; raises `BoxError` if none is."""
    x, y, w, h = (float(v) for v in box_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BoxError(f"box {list(box_xywh)} is not finite")
    if w <= 0 or h <= 0:
        raise BoxError(f"box {list(box_xywh)} has zero area (w={w:g}, h={h:g})")
    img_w, img_h = image_wh
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(img_w)), min(y + h, float(img_h))
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box {list(box_xywh)} lies outside the {img_w}x{img_h} image")
    return x0, y0, x1 - x0, y1 - y0


def box_from_keypoints(joints_xyv: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box around the visible keypoints of a (J, 3) array, or None with fewer than 2 visible."""
    vis = joints_xyv[:, 2] > 0
    if vis.sum() < 2:
        return None
    xy = joints_xyv[vis, :2]
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def crop_box_xywh(box_xywh, enlarge: float, crop_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """Enlarge a person box by `enlarge` (1.25: the paper's 25%) and widen it to the crop's aspect.

    The centre stays fixed; the shorter side (relative to crop width:height) grows so that
    box_w / box_h == crop_w / crop_h, then both sides are multiplied by `enlarge`.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    cx, cy = x + w / 2, y + h / 2
    aspect = crop_wh[0] / crop_wh[1]
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * enlarge, h * enlarge
    return cx - w / 2, cy - h / 2, w, h


def snap_box_to_pixels(box_xywh) -> tuple[int, int, int, int]:
    """The pixel rectangle (col, row, width, height), integers, nearest to a box.

    Its edges lie on pixel boundaries: as a box it is `(col - 0.5, row - 0.5, width, height)`.
    Cropping a pixel rectangle is a plain resize of the pixels it covers (see crops.crop_frames).
    """
    x, y, w, h = (float(v) for v in box_xywh)
    col, row = int(np.floor(x + 1.0)), int(np.floor(y + 1.0))  # round(x + 0.5), halves up
    return col, row, max(1, int(round(w))), max(1, int(round(h)))


def crop_rect(clipped_box_xywh, enlarge: float, crop_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole-pixel rectangle a person is cropped from: the clipped box enlarged, widened to the
    crop's aspect and snapped to pixels. Training crops and inference both go through this."""
    return snap_box_to_pixels(crop_box_xywh(clipped_box_xywh, enlarge, crop_wh))


def warp_margin_px(crop_wh: tuple[int, int], scale: float, max_angle_deg: float) -> tuple[int, int]:
    """The whole-pixel margins (x, y) a crop needs on each side so that its pixel centres, scaled by `scale` about
    the crop's centre and rotated by any angle up to `max_angle_deg` either way, land on stored pixel centres.

    The scaled, rotated grid's half extent along x is scale * (|cos a| (W-1)/2 + |sin a| (H-1)/2), largest at the
    angle atan((H-1)/(W-1)) or at the ends of [0, min(max_angle_deg, 90)] (|cos|, |sin| repeat beyond 90); y alike.
    """
    half_w, half_h = (crop_wh[0] - 1) / 2, (crop_wh[1] - 1) / 2
    limit = math.radians(min(abs(max_angle_deg), 90.0))

    def reach(along: float, across: float) -> float:
        angles = [0.0, limit] + [a for a in (math.atan2(across, along),) if a <= limit]
        return scale * max(abs(math.cos(a)) * along + abs(math.sin(a)) * across for a in angles)

    return tuple(max(0, math.ceil(reach(a, b) - a - 1e-9)) for a, b in ((half_w, half_h), (half_h, half_w)))


def pixels_to_box_xywh(rect) -> tuple[float, float, float, float]:
    """The box `(x, y, w, h)` whose edges are the boundaries of pixel rectangle (col, row, width, height)."""
    col, row, w, h = rect
    return col - 0.5, row - 0.5, float(w), float(h)


def crop_to_image_affine(box_xywh, crop_wh: tuple[int, int]) -> np.ndarray:
    """(2, 3) float64 affine mapping crop pixel (x, y, 1) to image coordinates for a crop of `box_xywh`.

    The crop's full extent [-0.5, W - 0.5] maps onto the box [x, x + w] (and likewise in y).
    """
    x, y, w, h = (float(v) for v in box_xywh)
    sx, sy = w / crop_wh[0], h / crop_wh[1]
    return np.array([[sx, 0.0, x + 0.5 * sx], [0.0, sy, y + 0.5 * sy]], dtype=np.float64)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine as another (2, 3) affine."""
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine of `outer(inner(p))`."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


def apply_affine(affine: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a (2, 3) affine."""
    return points_xy @ affine[:, :2].T + affine[:, 2]


def iou_xywh(a, b) -> float:
    """Intersection over union of two `(x, y, w, h)` boxes (0 when either has no area)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = max(aw, 0.0) * max(ah, 0.0) + max(bw, 0.0) * max(bh, 0.0) - inter
    return inter / union if union > 0 else 0.0
