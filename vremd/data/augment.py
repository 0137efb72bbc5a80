"""The paper's training augmentation as one affine on crop pixels: rotation, scale, half-body, flip.

The same (2, 3) affine warps all T frames of a sample, so the frames stay aligned. Coordinates are
crop pixels with OpenCV's convention (pixel i sampled at coordinate i).
"""

from __future__ import annotations

import cv2
import numpy as np

from vremd.config import AugmentConfig
from vremd.data.boxes import compose_affine, invert_affine
from vremd.data.joints import FLIP_INDEX, LOWER_BODY, UPPER_BODY

HALF_BODY_MIN_VISIBLE = 8  # HRNet's rule: half-body only when more than 8 joints are visible
HALF_BODY_ENLARGE = 1.5


def _half_body_region(rng: np.random.Generator, joints_xy: np.ndarray, visible: np.ndarray,
                      crop_wh: tuple[int, int]) -> tuple[np.ndarray, float] | None:
    """Centre (2,) and width of a region around the upper or lower body's visible joints, or None."""
    upper = [j for j in UPPER_BODY if visible[j] > 0]
    lower = [j for j in LOWER_BODY if visible[j] > 0]
    chosen = upper if (rng.random() < 0.5 and len(upper) > 2) or len(lower) < 2 else lower
    if len(chosen) < 2:
        return None
    xy = joints_xy[chosen]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    w, h = hi - lo
    aspect = crop_wh[0] / crop_wh[1]
    w = max(w, h * aspect) * HALF_BODY_ENLARGE
    return (lo + hi) / 2, float(w)


def sample_affine(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
                  crop_wh: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """A random (2, 3) crop-in -> crop-out affine following `cfg`, and whether it flips horizontally.

    Draws, in order: half-body, scale (uniform in [scale_min, scale_max], >1 zooms out), rotation
    (uniform in +-rotation_deg), flip; so a (seed, epoch, index) generator gives the same affine.
    """
    W, H = crop_wh
    centre_out = np.array([(W - 1) / 2, (H - 1) / 2])
    centre_in, width_in = centre_out.copy(), float(W)
    if (visible > 0).sum() > HALF_BODY_MIN_VISIBLE and rng.random() < cfg.half_body_prob:
        region = _half_body_region(rng, joints_xy, visible, crop_wh)
        if region is not None:
            centre_in, width_in = region
    scale = rng.uniform(cfg.scale_min, cfg.scale_max)
    angle_deg = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    flip = bool(rng.random() < cfg.flip_prob)
    # output -> input: rotate and scale about the output centre, then move it onto the input centre
    k = width_in * scale / W
    a = np.deg2rad(angle_deg)
    rot = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out_to_in = np.hstack([rot, (centre_in - rot @ centre_out)[:, None]])
    in_to_out = invert_affine(out_to_in)
    if flip:
        in_to_out = compose_affine(np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]]), in_to_out)
    return in_to_out, flip


def apply_augmentation(frames: np.ndarray, joints_xy: np.ndarray, visible: np.ndarray, affine: np.ndarray,
                       flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp (T, H, W, 3) frames and (J, 2) joints by `affine`; swap left/right joints when flipped.

    Returns frames (T, H, W, 3), joints_xy (J, 2) and visible (J,), where joints that leave the crop
    become invisible.
    """
    T, H, W, _ = frames.shape
    out = np.empty_like(frames)
    for t in range(T):
        cv2.warpAffine(frames[t], affine, (W, H), dst=out[t], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (out, *augment_joints(joints_xy, visible, affine, flip, (W, H)))


def augment_joints(joints_xy: np.ndarray, visible: np.ndarray, affine: np.ndarray, flip: bool,
                   crop_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map (J, 2) joints by `affine` into a `crop_wh` crop, swapping left/right when flipped; joints that
    leave the crop become invisible (0, 0). Returns joints_xy (J, 2) and visible (J,)."""
    W, H = crop_wh
    xy = joints_xy @ affine[:, :2].T + affine[:, 2]
    vis = visible.copy()
    if flip:
        xy, vis = xy[list(FLIP_INDEX)], vis[list(FLIP_INDEX)]
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= W - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= H - 0.5)
    vis = vis * inside
    xy[vis == 0] = 0.0
    return xy, vis
