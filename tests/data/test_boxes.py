"""Box geometry: enlargement to the crop aspect, clipping, crop affines, IoU."""

import numpy as np
import pytest

from vremd.data.boxes import (
    BoxError, apply_affine, box_from_keypoints, clip_box_xywh, compose_affine, crop_box_xywh,
    crop_to_image_affine, invert_affine, iou_xywh,
)


def test_crop_box_enlarges_by_25_percent_and_fixes_aspect_around_centre():
    # a tall box (w:h = 1:4) widens to 3:4, then both sides grow by 25%
    x, y, w, h = crop_box_xywh((10, 20, 30, 120), 1.25, (192, 256))
    assert (w, h) == pytest.approx((90 * 1.25, 120 * 1.25))
    assert (x + w / 2, y + h / 2) == pytest.approx((25, 80))
    # a wide box (w:h = 2:1) grows in height instead
    x, y, w, h = crop_box_xywh((0, 0, 100, 50), 1.0, (48, 64))
    assert (w, h) == pytest.approx((100, 100 * 64 / 48))
    assert w / h == pytest.approx(48 / 64)


def test_clip_box_keeps_inside_part_and_rejects_bad_boxes():
    assert clip_box_xywh((-10, 5, 30, 500), (100, 80)) == (0, 5, 20, 75)
    with pytest.raises(BoxError, match="zero area"):
        clip_box_xywh((5, 5, 0, 10), (100, 80))
    with pytest.raises(BoxError, match="outside the 100x80 image"):
        clip_box_xywh((150, 5, 20, 10), (100, 80))
    with pytest.raises(BoxError, match="not finite"):
        clip_box_xywh((np.nan, 5, 20, 10), (100, 80))


def test_box_from_keypoints_needs_two_visible_joints():
    kps = np.zeros((17, 3))
    kps[3] = (10, 40, 1)
    assert box_from_keypoints(kps) is None
    kps[9] = (30, 10, 1)
    kps[4] = (500, 500, 0)  # invisible joints do not count
    assert box_from_keypoints(kps) == (10, 10, 20, 30)


def test_crop_affine_maps_crop_extent_onto_box_and_round_trips():
    box = (12.5, 7.0, 48.0, 64.0)
    c2i = crop_to_image_affine(box, (24, 16))
    corners = apply_affine(c2i, np.array([[-0.5, -0.5], [23.5, 15.5]]))
    assert corners == pytest.approx(np.array([[12.5, 7.0], [60.5, 71.0]]))
    pts = np.random.default_rng(0).uniform(-5, 30, (10, 2))
    back = apply_affine(compose_affine(invert_affine(c2i), c2i), pts)
    assert back == pytest.approx(pts)


def test_iou():
    assert iou_xywh((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou_xywh((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou_xywh((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou_xywh((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0
