"""The training augmentation: one affine per sample (half body, scale, rotation, flip) that warps all T frames.

The same (2, 3) affine warps all T frames of a sample, so the frames stay aligned. Coordinates are crop-input
pixels with OpenCV's convention (pixel i sampled at coordinate i); an affine maps crop-input to crop-output.

Sampling (`augment.sampling`):
- "dcpose", as DCPose samples it (Pose-Group/DCPose `datasets/zoo/posetrack/PoseTrack.py:197-219`, values from
  `configs/posetimation/DcPose/Base_PoseTrack17.yaml:97-101`): half body with probability `half_body_prob` when
  more than 8 joints are visible (`pose_process.py:41-77`: the upper body when a standard normal draw is below
  0.5, i.e. p 0.69, centred on the mean of its joints); zoom 1 + `scale_sigma` N(0, 1) clipped to [scale_min,
  scale_max]; with probability `rotation_prob` an angle `rotation_deg` N(0, 1) clipped to +-`rotation_clip_deg`,
  else 0; a flip with `flip_prob`.
- "uniform", the recipe before issue 28 (kept bit for bit, `tests/fixtures/augment_old`): half body centred on
  the joints' box middle, zoom uniform in [scale_min, scale_max], angle uniform in +-rotation_deg on every sample.
DCPose draws its flip before its affine, mirroring the frame; here the flip mirrors the output, which is the
same picture at the opposite angle, and the angle's distribution is symmetric.

Pixels (`augment.borders`): "frame" warps the stored train canvas, the crop plus `margin_px` of the frame's own
pixels on each side (black only where the frame ends, as DCPose warps the whole frame); a half-body region whose
warp would reach past the canvas falls back to the whole crop (`fits_canvas`), keeping the drawn zoom, angle and
flip. "crop" warps only the 1.25x crop, black outside it (before issue 28).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from vremd.config import AugmentConfig
from vremd.data.boxes import apply_affine, compose_affine, invert_affine, warp_margin_px
from vremd.data.joints import FLIP_INDEX, LOWER_BODY, UPPER_BODY

HALF_BODY_MIN_VISIBLE = 8  # DCPose TRAIN.NUM_JOINTS_HALF_BODY (Base_PoseTrack17.yaml:98): more than 8 visible
HALF_BODY_ENLARGE = 1.5  # DCPose pose_process.py:75


@dataclass(frozen=True)
class Draw:
    """One sample's augmentation: the region of the stored crop the output shows, and how it is turned.

    `centre_xy` and `width_px` are crop-input pixels (the whole crop: its centre and width W); the output
    shows `width_px * scale` crop pixels across, rotated by `angle_deg` about the centre, mirrored if `flip`.
    """

    centre_xy: tuple[float, float]
    width_px: float
    scale: float  # > 1 zooms out
    angle_deg: float
    flip: bool
    half_body: bool


def _whole_crop(crop_wh: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Centre (2,) and width of the whole crop, in crop-input pixels."""
    W, H = crop_wh
    return np.array([(W - 1) / 2, (H - 1) / 2]), float(W)


def _visible_halves(visible: np.ndarray) -> tuple[list[int], list[int]]:
    """The visible joints of the upper and of the lower body."""
    return [j for j in UPPER_BODY if visible[j] > 0], [j for j in LOWER_BODY if visible[j] > 0]


def _region_width(xy: np.ndarray, crop_wh: tuple[int, int]) -> float:
    """Width of the crop-aspect box around (n, 2) joints, enlarged by HALF_BODY_ENLARGE (pose_process.py:62-75)."""
    w, h = xy.max(axis=0) - xy.min(axis=0)
    aspect = crop_wh[0] / crop_wh[1]
    return float(max(w, h * aspect) * HALF_BODY_ENLARGE)


def _half_body_uniform(rng: np.random.Generator, joints_xy: np.ndarray, visible: np.ndarray,
                       crop_wh: tuple[int, int]) -> tuple[np.ndarray, float] | None:
    """The pre-issue-28 half body: centre (2,) = middle of the chosen joints' box, and width, or None."""
    upper, lower = _visible_halves(visible)
    chosen = upper if (rng.random() < 0.5 and len(upper) > 2) or len(lower) < 2 else lower
    if len(chosen) < 2:
        return None
    xy = joints_xy[chosen]
    return (xy.min(axis=0) + xy.max(axis=0)) / 2, _region_width(xy, crop_wh)


def _half_body_dcpose(rng: np.random.Generator, joints_xy: np.ndarray, visible: np.ndarray,
                      crop_wh: tuple[int, int]) -> tuple[np.ndarray, float] | None:
    """DCPose's half body (pose_process.py:51-77): centre (2,) = mean of the chosen joints, and width, or None."""
    upper, lower = _visible_halves(visible)
    # DCPose compares a standard normal draw with 0.5 (np.random.randn() < 0.5): the upper body with p 0.69
    chosen = upper if rng.standard_normal() < 0.5 and len(upper) > 2 else (lower if len(lower) > 2 else upper)
    if len(chosen) < 2:
        return None
    xy = joints_xy[chosen]
    return xy.mean(axis=0), _region_width(xy, crop_wh)


def _region(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
            crop_wh: tuple[int, int], half_body) -> tuple[tuple[float, float], float, bool]:
    """Centre, width and half-body-ness of the region a sample shows: with probability half_body_prob when more
    than HALF_BODY_MIN_VISIBLE joints are visible, `half_body`'s region; else the whole crop."""
    centre, width = _whole_crop(crop_wh)
    half = False
    if (visible > 0).sum() > HALF_BODY_MIN_VISIBLE and rng.random() < cfg.half_body_prob:
        region = half_body(rng, joints_xy, visible, crop_wh)
        if region is not None:
            (centre, width), half = region, True
    return (float(centre[0]), float(centre[1])), width, half


def _draw_uniform(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
                  crop_wh: tuple[int, int]) -> Draw:
    """The pre-issue-28 draws, in their order: half body, zoom, angle (uniform, always), flip."""
    centre, width, half = _region(rng, cfg, joints_xy, visible, crop_wh, _half_body_uniform)
    scale = rng.uniform(cfg.scale_min, cfg.scale_max)
    angle_deg = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    flip = bool(rng.random() < cfg.flip_prob)
    return Draw(centre, width, float(scale), float(angle_deg), flip, half)


def _draw_dcpose(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
                 crop_wh: tuple[int, int]) -> Draw:
    """DCPose's draws (PoseTrack.py:198-212), in its order: half body, zoom, angle, flip."""
    centre, width, half = _region(rng, cfg, joints_xy, visible, crop_wh, _half_body_dcpose)
    scale = float(np.clip(1.0 + cfg.scale_sigma * rng.standard_normal(), cfg.scale_min, cfg.scale_max))
    rotate, angle = rng.random() < cfg.rotation_prob, cfg.rotation_deg * rng.standard_normal()  # both always drawn
    angle_deg = float(np.clip(angle, -cfg.rotation_clip_deg, cfg.rotation_clip_deg)) if rotate else 0.0
    flip = bool(rng.random() < cfg.flip_prob)
    return Draw(centre, width, scale, angle_deg, flip, half)


SAMPLERS = {"dcpose": _draw_dcpose, "uniform": _draw_uniform}


def affine_of(draw: Draw, crop_wh: tuple[int, int]) -> np.ndarray:
    """The (2, 3) crop-input -> crop-output affine of `draw`, its flip included."""
    W, H = crop_wh
    centre_out = np.array([(W - 1) / 2, (H - 1) / 2])
    centre_in = np.array(draw.centre_xy)
    # output -> input: rotate and scale about the output centre, then move it onto the input centre
    k = draw.width_px * draw.scale / W
    a = np.deg2rad(draw.angle_deg)
    rot = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out_to_in = np.hstack([rot, (centre_in - rot @ centre_out)[:, None]])
    in_to_out = invert_affine(out_to_in)
    if draw.flip:
        in_to_out = compose_affine(np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]]), in_to_out)
    return in_to_out


def fits_canvas(affine: np.ndarray, crop_wh: tuple[int, int], margin_px: tuple[int, int]) -> bool:
    """Whether every output pixel of `affine` (crop-input -> output) samples inside the crop grown by `margin_px`
    (bilinear taps on stored pixels only: the output's corner pixel centres map onto stored pixel centres)."""
    W, H = crop_wh
    corners = np.array([[0.0, 0.0], [W - 1.0, 0.0], [0.0, H - 1.0], [W - 1.0, H - 1.0]])  # (4, 2) output pixels
    src = apply_affine(invert_affine(affine), corners)  # (4, 2) crop-input pixels
    mx, my = margin_px
    eps = 1e-6
    return bool((src[:, 0] >= -mx - eps).all() and (src[:, 0] <= W - 1 + mx + eps).all()
                and (src[:, 1] >= -my - eps).all() and (src[:, 1] <= H - 1 + my + eps).all())


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
                        crop_wh: tuple[int, int], margin_px: tuple[int, int] | None = None) -> Draw:
    """One sample's `Draw` following `cfg.sampling`; a (seed, epoch, index) generator gives the same draw.

    `margin_px`: the stored canvas margin that borders "frame" warps from; a half-body region reaching past it
    becomes the whole crop (the zoom, angle and flip stay). None: no canvas limit (borders "crop").
    """
    draw = SAMPLERS[cfg.sampling](rng, cfg, joints_xy, visible, crop_wh)
    if draw.half_body and margin_px is not None and not fits_canvas(affine_of(draw, crop_wh), crop_wh, margin_px):
        centre, width = _whole_crop(crop_wh)
        draw = dataclasses.replace(draw, centre_xy=(float(centre[0]), float(centre[1])), width_px=width,
                                   half_body=False)
    return draw


def sample_affine(rng: np.random.Generator, cfg: AugmentConfig, joints_xy: np.ndarray, visible: np.ndarray,
                  crop_wh: tuple[int, int], margin_px: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """A random (2, 3) crop-in -> crop-out affine following `cfg` (`sample_augmentation`), and whether it flips."""
    draw = sample_augmentation(rng, cfg, joints_xy, visible, crop_wh, margin_px)
    return affine_of(draw, crop_wh), draw.flip


def augment_reach(cfg: AugmentConfig) -> tuple[float, float]:
    """(largest zoom-out, largest |angle| in degrees) the warps of `cfg` can reach (half body excluded: it falls
    back to the whole crop where it would reach further)."""
    if cfg.sampling == "uniform":
        return cfg.scale_max, cfg.rotation_deg
    scale = cfg.scale_max if cfg.scale_sigma > 0 else min(max(1.0, cfg.scale_min), cfg.scale_max)
    rotates = cfg.rotation_prob > 0 and cfg.rotation_deg > 0
    return scale, cfg.rotation_clip_deg if rotates else 0.0


def required_margin_px(cfg: AugmentConfig, crop_wh: tuple[int, int]) -> tuple[int, int]:
    """The (x, y) margin in crop pixels that `cfg`'s warps read from with borders "frame"."""
    scale, angle_deg = augment_reach(cfg)
    return warp_margin_px(crop_wh, scale, angle_deg)


def warp_frames(frames: np.ndarray, affine: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """Warp (T, h, w, 3) frames by `affine` (their pixels -> output pixels) to (T, H, W, 3); black outside them."""
    W, H = out_wh
    out = np.empty((len(frames), H, W, frames.shape[-1]), frames.dtype)
    for t in range(len(frames)):
        cv2.warpAffine(frames[t], affine, (W, H), dst=out[t], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def apply_augmentation(frames: np.ndarray, joints_xy: np.ndarray, visible: np.ndarray, affine: np.ndarray,
                       flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp (T, H, W, 3) frames and (J, 2) joints by `affine`; swap left/right joints when flipped.

    Returns frames (T, H, W, 3), joints_xy (J, 2) and visible (J,), where joints that leave the crop
    become invisible.
    """
    T, H, W, _ = frames.shape
    return (warp_frames(frames, affine, (W, H)), *augment_joints(joints_xy, visible, affine, flip, (W, H)))


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
