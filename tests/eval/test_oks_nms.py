"""Rescoring and OKS-NMS on hand-made cases whose result is known."""

import numpy as np
import pytest

from vremd.eval.coco_oks import POSETRACK_SIGMAS
from vremd.eval.oks_nms import keep_detected, oks_nms, oks_with, rescore


def pose(offset: float = 0.0, score: float = 0.9) -> np.ndarray:
    """17 joints on a line, (x, y, score), shifted by ``offset`` pixels in x."""
    joints = np.stack([np.arange(17) * 10.0 + offset, np.full(17, 50.0), np.full(17, score)], axis=1)
    return joints  # (17, 3)


def test_rescore_multiplies_the_box_score_by_the_mean_of_confident_joints():
    joint_scores = np.array([[0.9, 0.5, 0.1, 0.2], [0.1, 0.1, 0.1, 0.1]])  # 0.2 is not above 0.2
    got = rescore(np.array([0.8, 1.0]), joint_scores, keypoint_threshold=0.2)
    np.testing.assert_allclose(got, [0.8 * 0.7, 0.0])


def test_oks_of_identical_poses_is_one_and_falls_with_distance():
    ref = pose()
    same = oks_with(ref, 100.0, ref[None], np.array([100.0]), 0.2)
    np.testing.assert_allclose(same, [1.0])
    d = 3.0  # every joint 3 px off in x: OKS = mean_j exp(-d^2 / (2 s_j)^2 / area / 2)
    expected = np.mean(np.exp(-(d ** 2) / (2 * POSETRACK_SIGMAS) ** 2 / 100.0 / 2))
    np.testing.assert_allclose(oks_with(ref, 100.0, pose(d)[None], np.array([100.0]), 0.2), [expected])


def test_only_joints_confident_in_both_poses_count():
    ref, other = pose(), pose(3.0)
    other[1:, 2] = 0.0  # only joint 0 is confident in `other`
    expected = np.exp(-9.0 / (2 * POSETRACK_SIGMAS[0]) ** 2 / 100.0 / 2)
    np.testing.assert_allclose(oks_with(ref, 100.0, other[None], np.array([100.0]), 0.2), [expected])
    other[:, 2] = 0.0
    assert oks_with(ref, 100.0, other[None], np.array([100.0]), 0.2)[0] == 0.0


def test_nms_drops_the_duplicate_and_keeps_a_distinct_person():
    poses = np.stack([pose(0.0), pose(0.5), pose(400.0)])  # a near-duplicate of person 0, and another person
    scores = np.array([0.7, 0.9, 0.8])
    keep = oks_nms(poses, scores, np.full(3, 5000.0), threshold=0.9, keypoint_threshold=0.2)
    assert keep.tolist() == [1, 2]  # the better-scored duplicate survives, best first


@pytest.mark.parametrize("threshold, kept", [(0.999, [0, 1]), (0.5, [0])])
def test_the_threshold_decides_what_counts_as_a_duplicate(threshold, kept):
    poses = np.stack([pose(0.0), pose(2.0)])
    keep = oks_nms(poses, np.array([0.9, 0.8]), np.full(2, 5000.0), threshold, keypoint_threshold=0.2)
    assert keep.tolist() == kept


def test_empty_input_keeps_nothing():
    assert oks_nms(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0), 0.9, 0.2).tolist() == []


def test_keep_detected_runs_per_frame_and_never_drops_gt_box_samples():
    poses = np.stack([pose(0.0), pose(0.5), pose(0.0), pose(0.0, score=0.9)])
    frames = [("v", 0), ("v", 0), ("v", 1), ("v", 0)]  # sample 2 is alone in its frame
    detected = np.array([True, True, True, False])  # sample 3 comes from a GT box
    keep = keep_detected(frames, poses, np.array([0.5, 0.9, 0.5, 1.0]), np.full(4, 5000.0), detected, 0.9, 0.2)
    assert keep.tolist() == [False, True, True, True]
