"""Rescoring and OKS-NMS as MMPose's PoseTrack18Metric, on hand-made cases whose results are derived by hand.

Poses are 17 joints on a line, areas 10000 px^2 (a 100 x 100 crop box) unless a case says otherwise. Moving
the two hips (slots 11, 12, sigma 0.107) by d pixels and nothing else gives, over all 17 joints,
    e = d^2 / (2 * 0.107)^2 / 10000 / 2 = d^2 / 915.92,   OKS = (15 + 2 exp(-e)) / 17,
so OKS = 0.9 exactly where exp(-e) = 0.15, e = -ln 0.15 = 1.897120.
"""

import math

import numpy as np
import pytest

from vremd.eval.oks_nms import oks_nms, oks_with, rescore

AREA = 10000.0
HIPS = [11, 12]
E_PER_PX2 = 1 / 915.92  # e per squared pixel of hip displacement at AREA (module docstring)
EARS = [3, 4]


def line_pose(dx: float = 0.0) -> np.ndarray:
    """(17, 2): joint j at (10 j + dx, 50)."""
    return np.stack([np.arange(17) * 10.0 + dx, np.full(17, 50.0)], axis=1)


def hips_moved(e: float) -> np.ndarray:
    """`line_pose()` with both hips moved along x by the d that gives exp(-e) on each: d^2 = e * 915.92."""
    pose = line_pose()
    pose[HIPS, 0] += math.sqrt(e / E_PER_PX2)
    return pose


def areas(n: int) -> np.ndarray:
    return np.full(n, AREA)


def test_rescore_is_the_box_score_times_the_mean_of_joints_strictly_above_the_threshold():
    joint_scores = np.array([[0.9, 0.5, 0.2, 0.1],  # 0.2 is not above 0.2: mean(0.9, 0.5) = 0.7
                             [0.2, 0.2, 0.1, 0.0],  # no joint above: 0
                             [0.3, 0.3, 0.3, 0.3]])  # mean 0.3
    got = rescore(np.array([0.8, 1.0, 0.5]), joint_scores, keypoint_threshold=0.2)
    np.testing.assert_allclose(got, [0.8 * 0.7, 0.0, 0.5 * 0.3])


@pytest.mark.parametrize("e, oks", [(1.8, (15 + 2 * math.exp(-1.8)) / 17),  # 0.901800
                                    (2.0, (15 + 2 * math.exp(-2.0)) / 17)])  # 0.898275
def test_oks_counts_every_joint_with_its_sigma_and_the_mean_area(e, oks):
    got = oks_with(line_pose(), 8000.0, hips_moved(e)[None], np.array([12000.0]))  # mean area 10000
    assert got.dtype == np.float32  # as MMPose's oks_iou
    np.testing.assert_allclose(got, [oks], rtol=1e-6)


@pytest.mark.parametrize("e, kept", [
    (1.8, [0]),  # OKS 0.901800 > 0.9: the second pose is a duplicate
    (1.8971, [0]),  # exp(-e) = 0.150003, OKS = 0.9000004: just above
    (1.8972, [0, 1]),  # exp(-e) = 0.149988, OKS = 0.8999986: just below, kept
    (2.0, [0, 1]),  # OKS 0.898275
])
def test_a_pose_survives_while_its_oks_is_at_most_the_threshold(e, kept):
    poses = np.stack([line_pose(), hips_moved(e)])
    assert oks_nms(poses, np.array([0.9, 0.8]), areas(2), 0.9).tolist() == kept


def test_oks_is_compared_in_float32_as_mmpose_does():
    """OKS 0.9 + 1e-9 rounds to float32(0.9), which is <= 0.9 in float32: kept (float64 would drop it)."""
    x = (17 * (0.9 + 1e-9) - 15) / 2  # exp(-e) that gives that OKS
    poses = np.stack([line_pose(), hips_moved(-math.log(x))])
    assert oks_nms(poses, np.array([0.9, 0.8]), areas(2), 0.9).tolist() == [0, 1]


def test_three_poses_best_first_duplicates_of_the_best_go():
    """Scores 0.7, 0.9, 0.8: pose 1 first; pose 0 (its duplicate, hips at OKS 0.9018) goes; pose 2 lies 400 px
    away (every exp(-e) ~ 0, OKS ~ 0) and stays."""
    poses = np.stack([hips_moved(1.8), line_pose(), line_pose(400.0)])
    assert oks_nms(poses, np.array([0.7, 0.9, 0.8]), areas(3), 0.9).tolist() == [1, 2]


def test_equal_scores_take_the_later_pose_first():
    """MMPose's order is argsort()[::-1]: among equal scores the later index first. Poses 0 and 1 are
    identical (OKS 1): 1 is kept; pose 2 is far away and, also tied, comes before both."""
    poses = np.stack([line_pose(), line_pose(), line_pose(400.0)])
    assert oks_nms(poses, np.full(3, 0.5), areas(3), 0.9).tolist() == [2, 1]


def test_every_joint_counts_whatever_its_score_unlike_the_old_confident_joints_only_oks():
    """Hips 200 px apart (exp(-e) = exp(-43.7) ~ 0) that score 0.1 in the second pose. Over all 17 joints OKS =
    15/17 = 0.882 <= 0.9: both kept. The old code counted only joints above 0.2 in both poses, found OKS 1
    over the other 15 and dropped the second pose."""
    poses = np.stack([line_pose(), line_pose()])
    poses[1, HIPS, 0] += 200.0
    np.testing.assert_allclose(oks_with(poses[0], AREA, poses[1:], areas(1)), [15 / 17], rtol=1e-6)
    assert oks_nms(poses, np.array([0.9, 0.8]), areas(2), 0.9).tolist() == [0, 1]


def test_the_oks_reads_only_the_joint_slots_the_model_predicts():
    """Ears (slots 3, 4) that no model predicts sit at crop corners 100 px apart: over all 17 slots OKS =
    15/17 (kept); over the 15 predicted slots the poses are identical, OKS 1 (dropped)."""
    poses = np.stack([line_pose(), line_pose()])
    poses[1, EARS, 1] += 100.0
    predicted = [j for j in range(17) if j not in EARS]
    assert oks_nms(poses, np.array([0.9, 0.8]), areas(2), 0.9).tolist() == [0, 1]
    assert oks_nms(poses, np.array([0.9, 0.8]), areas(2), 0.9, joint_slots=predicted).tolist() == [0]


def test_empty_input_keeps_nothing():
    assert oks_nms(np.zeros((0, 17, 2)), np.zeros(0), np.zeros(0), 0.9).tolist() == []
