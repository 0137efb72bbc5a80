"""Rendering for the synthetic dataset: textured panning backgrounds with a crowd, clothing
textures, figures drawn as tapered limbs with a face, and per-pixel ownership for occlusion.

A figure is first drawn into a small label map (one material per pixel: skin, shirt, ...), then
coloured from that person's material textures; the same pixels get the person's id in an
ownership map, from which joint visibility is read.
"""

from __future__ import annotations

import cv2
import numpy as np

from vremd.data.synthetic import body as fg
from vremd.data.synthetic.body import FigureMotion

SKIN, SHIRT, PANTS, HAIR, SHOES, FEATURE, SKIN_DARK = 1, 2, 3, 4, 5, 6, 7
NUM_MATERIALS = 8
TEX = 64  # material textures are TEX x TEX tiles anchored at the person's pelvis
SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing
OCCLUDER_ID = 255

SKIN_TONES = np.array([[60, 80, 120], [80, 110, 160], [110, 150, 200], [140, 180, 225], [40, 55, 80]], np.float64)


def low_freq_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise (h, w) in [-1, 1]: random values on a coarse grid, upsampled bicubically."""
    coarse = rng.uniform(-1, 1, size=(cells, max(2, cells * w // max(h, 1)))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A (h, w, 3) uint8 scene: sky/ground gradient, blotches, buildings with windows, poles, grain."""
    horizon = int(rng.uniform(0.25, 0.55) * h)
    top, bottom, ground = rng.uniform(40, 230, size=(3, 3))
    rows = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.where(np.arange(h)[:, None, None] < horizon, top + (bottom - top) * rows, ground * (0.7 + 0.5 * rows))
    img = np.broadcast_to(img, (h, w, 3)).astype(np.float32)
    img = img + 35 * low_freq_noise(rng, h, w, 6)[..., None] * rng.uniform(0.5, 1.0, 3)
    for _ in range(int(rng.integers(3, 9))):  # buildings / walls with windows
        x0, bw = int(rng.uniform(0, w)), int(rng.uniform(0.05, 0.25) * w)
        y0 = int(rng.uniform(0.05, 0.9) * horizon)
        color = rng.uniform(30, 220, 3)
        cv2.rectangle(img, (x0, y0), (x0 + bw, horizon + 2), color.tolist(), -1)
        step = max(6, bw // 5)
        for wy in range(y0 + 4, horizon - 6, step):
            for wx in range(x0 + 3, x0 + bw - 6, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), (color * 0.5).tolist(), -1)
    for _ in range(int(rng.integers(4, 12))):  # blobs, lines and poles
        kind, color = rng.integers(3), rng.uniform(20, 235, 3).tolist()
        p = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        if kind == 0:
            cv2.circle(img, p, int(rng.uniform(3, 0.12 * h)), color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.line(img, p, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.rectangle(img, (p[0], int(0.2 * h)), (p[0] + int(rng.integers(2, 7)), horizon + 5), color, -1)
    img += rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_crowd(rng: np.random.Generator, img: np.ndarray, box_xyxy: tuple[int, int, int, int]) -> np.ndarray:
    """Paint a dense crowd of small unannotated people into `img` in place; returns its polygon (8, 2)."""
    x0, y0, x1, y1 = box_xyxy
    for _ in range(int(rng.integers(10, 25))):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        size = (y1 - y0) * rng.uniform(0.3, 0.55)
        body = rng.uniform(20, 230, 3).tolist()
        cv2.ellipse(img, (int(cx), int(cy + 0.45 * size)), (int(0.17 * size) + 1, int(0.4 * size) + 1), 0, 0, 360, body, -1)
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))].tolist()
        cv2.circle(img, (int(cx), int(cy)), int(0.12 * size) + 1, skin, -1, cv2.LINE_AA)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * 1.15, (y1 - y0) / 2 * 1.3
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).round(1)


def make_textures(rng: np.random.Generator) -> np.ndarray:
    """One person's material tiles (NUM_MATERIALS, TEX, TEX, 3) uint8: skin, striped/checked/noisy clothes."""
    yy, xx = np.mgrid[0:TEX, 0:TEX].astype(np.float32)
    tex = np.zeros((NUM_MATERIALS, TEX, TEX, 3), np.float32)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    grain = lambda amp: rng.normal(0, amp, size=(TEX, TEX, 1)).astype(np.float32)  # noqa: E731
    tex[SKIN] = skin + grain(4)
    tex[SKIN_DARK] = skin * 0.7 + grain(4)
    tex[FEATURE] = rng.uniform(10, 50) + grain(3)
    tex[HAIR] = rng.uniform(10, 120, 3) + grain(12)
    tex[SHOES] = rng.uniform(10, 90, 3) + grain(6)
    for material in (SHIRT, PANTS):
        base, other = rng.uniform(20, 235, size=(2, 3))
        period = 2 * np.pi / rng.choice([8, 16, 32])
        pattern = int(rng.integers(4))
        if pattern == 0:  # horizontal stripes
            mix = (np.sin(yy * period) > 0).astype(np.float32)
        elif pattern == 1:  # diagonal stripes
            mix = (np.sin((xx + yy) * period) > 0.3).astype(np.float32)
        elif pattern == 2:  # checks
            mix = ((np.sin(xx * period) > 0) ^ (np.sin(yy * period) > 0)).astype(np.float32)
        else:  # mottled
            mix = (low_freq_noise(rng, TEX, TEX, 5) > 0.2).astype(np.float32)
        mix = mix * rng.uniform(0.3, 1.0)
        tex[material] = base * (1 - mix[..., None]) + other * mix[..., None] + grain(8)
    return np.clip(tex, 0, 255).astype(np.uint8)


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy) * (1 << SHIFT)).astype(np.int32)


def _limb(label: np.ndarray, a: np.ndarray, b: np.ndarray, wa: float, wb: float, material: int) -> None:
    """A tapered limb from a (half-width wa) to b (half-width wb) with rounded ends."""
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6)
    quad = np.stack([a + wa * n, b + wb * n, b - wb * n, a - wa * n])
    cv2.fillConvexPoly(label, _pts(quad), material, cv2.LINE_8, SHIFT)
    cv2.circle(label, tuple(_pts(a)), int(wa * (1 << SHIFT)), material, -1, cv2.LINE_8, SHIFT)
    cv2.circle(label, tuple(_pts(b)), int(wb * (1 << SHIFT)), material, -1, cv2.LINE_8, SHIFT)


def _ellipse(label: np.ndarray, c: np.ndarray, ru: float, rv: float, angle_rad: float, material: int) -> None:
    axes = (max(int(ru * (1 << SHIFT)), 1 << SHIFT), max(int(rv * (1 << SHIFT)), 1 << SHIFT))
    cv2.ellipse(label, tuple(_pts(c)), axes, float(np.degrees(angle_rad)), 0, 360, material, -1, cv2.LINE_8, SHIFT)


def draw_figure_labels(label: np.ndarray, fig: FigureMotion, t: int, origin: np.ndarray,
                       long_sleeves: bool, shorts: bool) -> None:
    """Draw frame t of a figure as materials into `label` (an ROI whose top-left is `origin`)."""
    j = fig.joints_xy[t] - origin  # (17, 2) ROI pixels
    hp, bw, c, s = fig.height_px[t], fig.shape.build, fig.lateral[t], fig.turn[t]
    w = lambda frac: max(frac * hp * bw, 1.0)  # noqa: E731 (half-width in pixels)
    for hip, knee, ank in ((fg.L_HIP, fg.L_KNEE, fg.L_ANK), (fg.R_HIP, fg.R_KNEE, fg.R_ANK)):
        _limb(label, j[hip], j[knee], w(0.055), w(0.042), PANTS)
        _limb(label, j[knee], j[ank], w(0.04), w(0.026), SKIN if shorts else PANTS)
        foot = j[ank] + np.array([0.045 * hp * (np.sign(s) if abs(s) > 0.5 else 0), 0.012 * hp])
        _ellipse(label, foot, w(0.04) if abs(s) > 0.5 else w(0.026), w(0.022), 0.0, SHOES)
    pelvis, neck = (j[fg.L_HIP] + j[fg.R_HIP]) / 2, (j[fg.L_SHO] + j[fg.R_SHO]) / 2
    up = (neck - pelvis) / (np.hypot(*(neck - pelvis)) + 1e-6)
    right = np.array([-up[1], up[0]])
    top, bottom = max(abs(c) * 0.12, 0.075) * hp * bw, max(abs(c) * 0.085, 0.07) * hp * bw
    torso = np.stack([neck - top * right, neck + top * right, pelvis + bottom * right + 0.03 * hp * -up,
                      pelvis - bottom * right + 0.03 * hp * -up])
    cv2.fillConvexPoly(label, _pts(torso), PANTS, cv2.LINE_8, SHIFT)
    torso[2:] = pelvis + np.array([1, -1])[:, None] * bottom * right + 0.03 * hp * up
    cv2.fillConvexPoly(label, _pts(torso), SHIRT, cv2.LINE_8, SHIFT)
    _limb(label, j[fg.HEAD_BOTTOM] - 0.02 * hp * up, neck, w(0.022), w(0.03), SKIN)
    for sho, elb, wri in ((fg.L_SHO, fg.L_ELB, fg.L_WRI), (fg.R_SHO, fg.R_ELB, fg.R_WRI)):
        _limb(label, j[sho], j[elb], w(0.036), w(0.028), SHIRT)
        _limb(label, j[elb], j[wri], w(0.027), w(0.02), SHIRT if long_sleeves else SKIN)
        cv2.circle(label, tuple(_pts(j[wri])), int(w(0.026) * (1 << SHIFT)), SKIN, -1, cv2.LINE_8, SHIFT)
    _draw_head(label, j, fig, t)


def _draw_head(label: np.ndarray, j: np.ndarray, fig: FigureMotion, t: int) -> None:
    hp, c, s, angle = fig.height_px[t], fig.lateral[t], fig.turn[t], fig.head_angle_rad[t]
    rv = 0.5 * fig.shape.head * hp
    ru = 0.78 * rv
    center = (j[fg.HEAD_TOP] + j[fg.HEAD_BOTTOM]) / 2 + 0.025 * rv * np.array([np.sin(angle), -np.cos(angle)])
    for ear in (fg.L_EAR, fg.R_EAR):
        _ellipse(label, j[ear], 0.2 * ru, 0.3 * rv, angle, SKIN_DARK)
    _ellipse(label, center, ru, rv, angle, HAIR)
    if c <= 0:  # seen from the back: only hair
        return
    right = np.array([np.cos(angle), np.sin(angle)])
    down = np.array([-np.sin(angle), np.cos(angle)])
    _ellipse(label, center + 0.22 * rv * down + 0.22 * s * ru * right, 0.85 * ru * (0.6 + 0.4 * c) + 0.1 * ru,
             0.76 * rv, angle, SKIN)
    for side in (1.0, -1.0):
        eye = center - 0.02 * rv * down + (0.36 * side * c + 0.45 * s) * ru * right
        if abs(0.36 * side * c + 0.45 * s) < 0.85:
            _ellipse(label, eye, max(0.12 * ru, 0.7), max(0.08 * rv, 0.7), angle, FEATURE)
    _ellipse(label, j[fg.NOSE], max(0.12 * ru, 0.8), max(0.14 * rv, 0.8), angle, SKIN_DARK)
    mouth = center + 0.5 * rv * down + 0.45 * s * ru * right
    _ellipse(label, mouth, max(0.25 * ru * (0.5 + 0.5 * c), 0.8), max(0.05 * rv, 0.6), angle, FEATURE)


def paint_figure(img: np.ndarray, owner: np.ndarray, fig: FigureMotion, t: int, textures: np.ndarray,
                 owner_id: int, long_sleeves: bool, shorts: bool) -> None:
    """Draw frame t of a figure into `img` (H, W, 3) and its id into `owner` (H, W), in place."""
    H, W = owner.shape
    joints = fig.joints_xy[t]  # (17, 2)
    margin = 0.12 * fig.height_px[t] * fig.shape.build + 2
    x0, y0 = np.floor(joints.min(0) - margin).astype(int)
    x1, y1 = np.ceil(joints.max(0) + margin).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if x0 >= x1 or y0 >= y1:
        return
    label = np.zeros((y1 - y0, x1 - x0), np.uint8)  # (h_roi, w_roi) material per pixel
    draw_figure_labels(label, fig, t, np.array([x0, y0], np.float64), long_sleeves, shorts)
    ys, xs = np.nonzero(label)
    anchor = np.round((joints[fg.L_HIP] + joints[fg.R_HIP]) / 2).astype(int)
    img[ys + y0, xs + x0] = textures[label[ys, xs], (ys + y0 - anchor[1]) % TEX, (xs + x0 - anchor[0]) % TEX]
    owner[ys + y0, xs + x0] = owner_id


def paint_occluder(img: np.ndarray, owner: np.ndarray, box_xyxy: np.ndarray, color: np.ndarray, kind: int) -> None:
    """A foreground object (0 sign board, 1 pole, 2 round bush) that hides whatever is behind it."""
    x0, y0, x1, y1 = np.round(box_xyxy).astype(int)
    for target, value in ((img, color.tolist()), (owner, OCCLUDER_ID)):
        if kind == 2:
            cv2.ellipse(target, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, value, -1)
        else:
            cv2.rectangle(target, (x0, y0), (x1, y1), value, -1)
    if kind == 0:
        cv2.rectangle(img, (x0 + 3, y0 + 3), (x1 - 3, (y0 + y1) // 2), (color * 0.5).tolist(), 2)


def motion_blur(img: np.ndarray, length: int, angle_rad: float) -> np.ndarray:
    """Blur along a line of `length` pixels at `angle_rad` (camera shake / fast pan)."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = np.cos(angle_rad) * c, np.sin(angle_rad) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return cv2.filter2D(img, -1, k / k.sum())
