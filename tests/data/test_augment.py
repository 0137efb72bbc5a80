"""The augmentation's draws: DCPose's distributions on many draws, the pre-issue-28 uniform ones, the half-body
fallback onto the stored canvas, and the margin a recipe needs."""

import dataclasses

import numpy as np
import pytest

from vremd.config import AugmentConfig
from vremd.data.augment import (
    Draw, affine_of, augment_reach, fits_canvas, required_margin_px, sample_affine, sample_augmentation,
)
from vremd.data.boxes import warp_margin_px

CROP_WH = (48, 64)
DRAWS = 20000


def person(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(17, 2) joints inside the crop, all visible: upper body in the top half, lower body in the bottom half."""
    xy = rng.uniform([8, 4], [40, 30], (17, 2))
    xy[11:, 1] += 30
    return xy, np.ones(17)


def draws(cfg: AugmentConfig, n: int = DRAWS, margin_px=None) -> list:
    joints, visible = person(np.random.default_rng(0))
    return [sample_augmentation(np.random.default_rng([3, 0, i]), cfg, joints, visible, CROP_WH, margin_px)
            for i in range(n)]


def within(share: float, p: float, n: int) -> bool:
    """`share` of `n` Bernoulli(p) draws within 5 standard errors of p."""
    return abs(share - p) <= 5 * np.sqrt(p * (1 - p) / n)


def test_dcpose_sampling_matches_dcpose_on_many_draws():
    """Rotation N(0, 45) clipped to +-90 on 60% of samples, zoom N(1, 0.35) clipped to [0.65, 1.35], half body
    with p 0.3 (upper body p 0.69: DCPose's randn() < 0.5), flip 0.5."""
    cfg = AugmentConfig()
    got = draws(cfg)
    angles = np.array([d.angle_deg for d in got])
    rotated = angles[angles != 0]
    assert within(len(rotated) / DRAWS, 0.6, DRAWS)
    assert np.abs(angles).max() == 90.0 and within((np.abs(rotated) == 90).mean(), 0.0455, len(rotated))
    inner = rotated[np.abs(rotated) < 90]
    assert abs(np.median(np.abs(inner)) - 45 * 0.6745) < 2.0  # a normal's median |x| is 0.6745 sigma (slightly less: clipped)
    scales = np.array([d.scale for d in got])
    assert scales.min() == 0.65 and scales.max() == 1.35
    assert within((scales == 1.35).mean(), 0.1587, DRAWS) and within((scales == 0.65).mean(), 0.1587, DRAWS)
    half = [d for d in got if d.half_body]
    assert within(len(half) / DRAWS, 0.3, DRAWS)
    upper = [d for d in half if d.centre_xy[1] < 32]  # the upper body's joints lie in the top half
    assert within(len(upper) / len(half), 0.6915, len(half))
    assert within(np.mean([d.flip for d in got]), 0.5, DRAWS)


def test_uniform_sampling_is_the_old_recipe():
    cfg = AugmentConfig(sampling="uniform", rotation_deg=30.0, scale_min=0.75, scale_max=1.25, half_body_prob=0.0)
    got = draws(cfg, 4000)
    angles, scales = np.array([d.angle_deg for d in got]), np.array([d.scale for d in got])
    assert (angles != 0).all() and np.abs(angles).max() < 30 and np.abs(angles).max() > 29.5  # every sample rotates
    assert abs(np.std(angles) - 30 / np.sqrt(3)) < 0.6 and abs(np.std(scales) - 0.5 / np.sqrt(12)) < 0.005
    assert not any(d.half_body for d in got)


def test_no_half_body_with_eight_visible_joints():
    joints, visible = person(np.random.default_rng(0))
    visible[8:] = 0  # 8 visible: DCPose needs more than 8
    cfg = AugmentConfig(half_body_prob=1.0)
    assert not any(sample_augmentation(np.random.default_rng(i), cfg, joints, visible, CROP_WH).half_body
                   for i in range(200))
    visible[8] = 1
    assert all(sample_augmentation(np.random.default_rng(i), cfg, joints, visible, CROP_WH).half_body
               for i in range(200))


def test_half_body_falls_back_to_the_whole_crop_where_it_leaves_the_canvas():
    """A half-body region whose warp reaches past the stored margin shows the whole crop, keeping the drawn zoom,
    angle and flip; the ones that fit stay half body."""
    cfg = AugmentConfig(half_body_prob=1.0)
    margin = required_margin_px(cfg, CROP_WH)  # what the recipe's whole-crop warps need
    free, held = draws(cfg, 3000), draws(cfg, 3000, margin)
    moved = [(a, b) for a, b in zip(free, held) if a != b]
    assert 0 < len(moved) < 0.5 * len(free)  # some regions reach past it, most fit
    for a, b in moved:
        assert a.half_body and not b.half_body and b.centre_xy == ((48 - 1) / 2, (64 - 1) / 2) and b.width_px == 48
        assert (a.scale, a.angle_deg, a.flip) == (b.scale, b.angle_deg, b.flip)
        assert not fits_canvas(affine_of(a, CROP_WH), CROP_WH, margin)
    assert all(fits_canvas(affine_of(d, CROP_WH), CROP_WH, margin) for d in held)
    assert sum(d.half_body for d in held) > 0.5 * len(held)


def test_sample_affine_is_the_draws_affine():
    joints, visible = person(np.random.default_rng(1))
    cfg = AugmentConfig(half_body_prob=0.5)
    for i in range(20):
        affine, flip = sample_affine(np.random.default_rng(i), cfg, joints, visible, CROP_WH, (20, 20))
        draw = sample_augmentation(np.random.default_rng(i), cfg, joints, visible, CROP_WH, (20, 20))
        assert np.array_equal(affine, affine_of(draw, CROP_WH)) and flip == draw.flip
        assert (np.linalg.det(affine[:, :2]) < 0) == flip


@pytest.mark.parametrize("crop_wh", [(48, 64), (192, 256), (96, 128), (64, 30)])
@pytest.mark.parametrize("scale, max_angle", [(1.35, 90.0), (1.25, 60.0), (1.0, 10.0), (0.65, 45.0), (1.2, 0.0)])
def test_warp_margin_is_the_smallest_that_holds_every_angle(crop_wh, scale, max_angle):
    """Brute force over angles: with the margin every warp's corner pixels land on stored pixels; one pixel less
    on either side and some angle's do not."""
    mx, my = warp_margin_px(crop_wh, scale, max_angle)
    centre = ((crop_wh[0] - 1) / 2, (crop_wh[1] - 1) / 2)

    def fits(margin) -> bool:
        return all(fits_canvas(affine_of(Draw(centre, float(crop_wh[0]), scale, float(a), False, False), crop_wh),
                               crop_wh, margin) for a in np.linspace(-max_angle, max_angle, 721))

    assert fits((mx, my))
    assert mx == 0 or not fits((mx - 1, my))
    assert my == 0 or not fits((mx, my - 1))


def test_reach_of_each_sampling():
    assert augment_reach(AugmentConfig()) == (1.35, 90.0)
    assert augment_reach(AugmentConfig(rotation_prob=0.0)) == (1.35, 0.0)
    assert augment_reach(AugmentConfig(sampling="uniform", rotation_deg=30.0, scale_max=1.25)) == (1.25, 30.0)
    assert augment_reach(dataclasses.replace(AugmentConfig(), scale_sigma=0.0, rotation_deg=0.0)) == (1.0, 0.0)
    assert required_margin_px(AugmentConfig(), (192, 256)) == (120, 88)  # the paper's 432x432 canvas
