"""Articulated 2D human figures for the synthetic dataset: per-person proportions, periodic +
noisy joint-angle motion (walk, wave, jumping jacks, idle) and the 2D kinematic tree that turns
them into the 17 PoseTrack18 joints over a whole video.

Conventions: image pixels, x right, y down. A limb's image angle is measured from straight down,
positive toward +x. `lateral` = cos(yaw) in [-1, 1] (> 0 the person faces the camera, so the
person's left side is on the image's right); `turn` = sin(yaw) (> 0 the nose points toward +x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIONS: tuple[str, ...] = ("walk", "wave", "jacks", "idle")

# joint slots (COCO order, PoseTrack18 names)
NOSE, HEAD_BOTTOM, HEAD_TOP, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16


@dataclass(frozen=True)
class BodyShape:
    """Segment lengths and limb half-widths as fractions of the person's standing height."""

    torso: float  # pelvis to shoulder line
    neck: float
    head: float  # head_bottom to head_top
    shoulder_half: float
    hip_half: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    build: float  # multiplies every limb width


@dataclass(frozen=True)
class FigureMotion:
    """Everything rendering and annotation need about one person over a video of T frames."""

    joints_xy: np.ndarray  # (T, 17, 2) image pixels
    height_px: np.ndarray  # (T,) standing height in pixels (also the depth key: taller = nearer)
    lateral: np.ndarray  # (T,) cos(yaw), see module docstring
    turn: np.ndarray  # (T,) sin(yaw)
    head_angle_rad: np.ndarray  # (T,) head axis tilt from vertical
    shape: BodyShape
    action: str


def sample_shape(rng: np.random.Generator) -> BodyShape:
    """Adult-like proportions with +-10% per-person variation."""
    j = lambda base: base * rng.uniform(0.9, 1.1)  # noqa: E731 (one-line jitter)
    return BodyShape(torso=j(0.30), neck=j(0.035), head=j(0.13), shoulder_half=j(0.115),
                     hip_half=j(0.075), upper_arm=j(0.165), forearm=j(0.15), thigh=j(0.235),
                     shin=j(0.225), build=rng.uniform(0.8, 1.25))


def smooth_noise(rng: np.random.Generator, t: np.ndarray, amp: float, fmax: float = 0.05) -> np.ndarray:
    """A smooth random signal (sum of 3 slow sinusoids) with peak amplitude about `amp`."""
    freqs = rng.uniform(0.004, fmax, size=3)  # cycles per frame
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.uniform(0.3, 1.0, size=3)
    weights = weights / weights.sum()
    return amp * (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)


def action_angles(rng: np.random.Generator, action: str, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame outward abduction angles (arm_l, arm_r, leg_l, leg_r) and flexes (elb_*, knee_*), rad."""
    w = 2 * np.pi * rng.uniform(0.035, 0.075)  # rad per frame: a cycle takes 13-29 frames
    ph = rng.uniform(0, 2 * np.pi)
    s = np.sin(w * t + ph)
    zero = np.zeros_like(t)
    if action == "walk":  # scissor legs, counter-swinging arms (seen side-on)
        stride = rng.uniform(0.3, 0.5)
        knee_l = 0.55 * np.clip(np.sin(w * t + ph + 1.2), 0, None)
        knee_r = 0.55 * np.clip(np.sin(w * t + ph + 1.2 + np.pi), 0, None)
        a = dict(arm_l=-0.7 * stride * s, arm_r=-0.7 * stride * s, leg_l=stride * s, leg_r=stride * s,
                 elb_l=0.35 + 0.15 * s, elb_r=0.35 - 0.15 * s, knee_l=knee_l, knee_r=knee_r)
    elif action == "wave":  # one arm raised, waving from the elbow
        up = 2.3 + 0.3 * np.sin(2 * w * t + ph)
        flex = 0.55 + 0.45 * np.sin(2 * w * t + ph + 1.0)
        rest = 0.2 + zero
        left = rng.random() < 0.5
        a = dict(arm_l=up if left else rest, arm_r=rest if left else up,
                 elb_l=flex if left else rest, elb_r=rest if left else flex,
                 leg_l=0.1 + zero, leg_r=0.1 + zero, knee_l=zero, knee_r=zero)
    elif action == "jacks":  # jumping jacks
        u = 0.5 - 0.5 * np.cos(w * t + ph)
        a = dict(arm_l=0.25 + 2.1 * u, arm_r=0.25 + 2.1 * u, leg_l=0.05 + 0.3 * u, leg_r=0.05 + 0.3 * u,
                 elb_l=0.2 + zero, elb_r=0.2 + zero, knee_l=0.1 * u, knee_r=0.1 * u)
    elif action == "idle":  # standing, gesturing slowly
        a = dict(arm_l=0.35 + smooth_noise(rng, t, 0.5), arm_r=0.35 + smooth_noise(rng, t, 0.5),
                 leg_l=0.12 + zero, leg_r=0.12 + zero, elb_l=0.6 + smooth_noise(rng, t, 0.5),
                 elb_r=0.6 + smooth_noise(rng, t, 0.5), knee_l=zero, knee_r=zero)
    else:
        raise ValueError(f"unknown action {action!r}; valid: {ACTIONS}")
    return {k: v + smooth_noise(rng, t, 0.12) for k, v in a.items()}


def _direction(angle: np.ndarray) -> np.ndarray:
    """Unit vectors (T, 2) for image angles measured from straight down, positive toward +x."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def pose_joints(shape: BodyShape, angles: dict[str, np.ndarray], pelvis_xy: np.ndarray, height_px: np.ndarray,
                lean: np.ndarray, lateral: np.ndarray, turn: np.ndarray, head_tilt: np.ndarray) -> np.ndarray:
    """The kinematic tree: joint angles and root trajectory -> joints (T, 17, 2) in image pixels."""
    T = len(height_px)
    hp = height_px[:, None]  # (T, 1)
    mirror = np.where(lateral >= 0, 1.0, -1.0)  # person-left is image +x when facing the camera
    facing_x = np.where(np.abs(turn) > 0.5, np.sign(turn), 0.0)  # nose direction when side-on
    up = np.stack([np.sin(lean), -np.cos(lean)], axis=-1)  # (T, 2) torso axis
    right = np.stack([np.cos(lean), np.sin(lean)], axis=-1)  # (T, 2) perpendicular, image +x-ish
    joints = np.zeros((T, 17, 2))
    neck_base = pelvis_xy + shape.torso * hp * up
    for side, sign in (("l", 1.0), ("r", -1.0)):
        out = sign * mirror  # image sign of "outward" for this side
        sho = neck_base + (sign * lateral * shape.shoulder_half)[:, None] * hp * right
        hip = pelvis_xy + (sign * lateral * shape.hip_half)[:, None] * hp * right
        arm_angle = out * angles[f"arm_{side}"]
        elb_dir = np.where(facing_x != 0, facing_x, out)  # elbows flex forward when side-on
        fore_angle = arm_angle + elb_dir * angles[f"elb_{side}"]
        leg_angle = out * angles[f"leg_{side}"]
        knee_dir = np.where(facing_x != 0, -facing_x, -out)  # knees flex backward / inward
        shin_angle = leg_angle + knee_dir * angles[f"knee_{side}"]
        elb = sho + shape.upper_arm * hp * _direction(arm_angle)
        knee = hip + shape.thigh * hp * _direction(leg_angle)
        i_sho, i_elb, i_wri, i_hip, i_knee, i_ank = (
            (L_SHO, L_ELB, L_WRI, L_HIP, L_KNEE, L_ANK) if side == "l" else (R_SHO, R_ELB, R_WRI, R_HIP, R_KNEE, R_ANK))
        joints[:, i_sho], joints[:, i_elb], joints[:, i_hip], joints[:, i_knee] = sho, elb, hip, knee
        joints[:, i_wri] = elb + shape.forearm * hp * _direction(fore_angle)
        joints[:, i_ank] = knee + shape.shin * hp * _direction(shin_angle)
    head_up = np.stack([np.sin(lean + head_tilt), -np.cos(lean + head_tilt)], axis=-1)
    head_right = np.stack([np.cos(lean + head_tilt), np.sin(lean + head_tilt)], axis=-1)
    r_v = 0.5 * shape.head * hp  # (T, 1) head half-height
    r_u = 0.78 * r_v
    joints[:, HEAD_BOTTOM] = neck_base + shape.neck * hp * up
    center = joints[:, HEAD_BOTTOM] + r_v * head_up
    joints[:, HEAD_TOP] = center + 0.95 * r_v * head_up
    joints[:, NOSE] = center - 0.2 * r_v * head_up + (0.62 * turn)[:, None] * r_u * head_right
    ear_shift = (-0.25 * turn)[:, None] * r_u * head_right
    joints[:, L_EAR] = center + (0.9 * lateral)[:, None] * r_u * head_right + ear_shift
    joints[:, R_EAR] = center - (0.9 * lateral)[:, None] * r_u * head_right + ear_shift
    return joints


def sample_figure(rng: np.random.Generator, T: int, image_hw: tuple[int, int], role: str) -> FigureMotion:
    """One person moving over T frames; `role` "main" stays mostly in view, "crosser" walks across,
    "edge" enters or leaves through a side border."""
    H, W = image_hw
    t = np.arange(T, dtype=np.float64)
    action = "walk" if role != "main" else str(rng.choice(ACTIONS, p=(0.35, 0.2, 0.15, 0.3)))
    shape = sample_shape(rng)
    side_on = action == "walk"
    yaw0 = rng.uniform(0.95, 1.25) * rng.choice([-1, 1]) if side_on else rng.uniform(-0.7, 0.7)
    if not side_on and rng.random() < 0.2:
        yaw0 = np.pi + yaw0  # seen from the back
    yaw = yaw0 + smooth_noise(rng, t, 0.25)
    lateral, turn = np.cos(yaw), np.sin(yaw)
    height0 = rng.uniform(0.4, 0.85) * H
    height_px = height0 * (1 + rng.uniform(-0.25, 0.25) * t / max(T - 1, 1)) * (1 + smooth_noise(rng, t, 0.03))
    legs = shape.thigh + shape.shin
    ground0 = rng.uniform(0.75, 1.05) * H
    ground_y = ground0 + (height_px - height0) * 0.8  # nearer (taller) people stand lower
    speed = rng.uniform(0.004, 0.012) * W * (1 if role == "main" else 1.6) if side_on else 0.0
    vx = speed * np.sign(turn[0]) if side_on else rng.uniform(-0.002, 0.002) * W
    if role == "main":
        x0 = rng.uniform(0.25, 0.75) * W - vx * T / 2
    else:  # start beyond the border the person walks in from
        start = -0.15 * W if vx > 0 else 1.15 * W
        x0 = start if role == "crosser" else start + vx * rng.uniform(-0.6, 0.2) * T
    bounce = 0.03 * height_px * np.abs(np.sin(np.pi * rng.uniform(0.035, 0.075) * t)) if side_on else 0.0
    pelvis = np.stack([x0 + vx * t + smooth_noise(rng, t, 0.01 * W),
                       ground_y - legs * height_px - bounce + smooth_noise(rng, t, 0.005 * H)], axis=-1)
    lean = rng.uniform(-0.08, 0.08) + smooth_noise(rng, t, 0.08)
    head_tilt = smooth_noise(rng, t, 0.15)
    joints = pose_joints(shape, action_angles(rng, action, t), pelvis, height_px, lean, lateral, turn, head_tilt)
    return FigureMotion(joints_xy=joints, height_px=height_px, lateral=lateral, turn=turn,
                        head_angle_rad=lean + head_tilt, shape=shape, action=action)
