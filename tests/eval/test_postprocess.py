"""The post-processing validation and predict share: joint scores, `none` and `oks_nms`, per frame, GT boxes kept."""

import dataclasses

import numpy as np
import pytest

from vremd.config import ConfigError, DetectConfig
from vremd.eval.postprocess import PersonPoses, crop_box_areas, postprocess

NONE = DetectConfig(postprocess="none")
OKS_NMS = DetectConfig(postprocess="oks_nms")  # 0.9, joints above 0.2: MMPose's PoseTrack18Metric defaults


def line_pose(dx: float = 0.0) -> np.ndarray:
    """(17, 2): joint j at (10 j + dx, 50)."""
    return np.stack([np.arange(17) * 10.0 + dx, np.full(17, 50.0)], axis=1)


def poses(frame_keys, joints_xy, maxvals, box_scores, detected=None) -> PersonPoses:
    n = len(frame_keys)
    return PersonPoses(frame_keys=frame_keys, joints_xy=np.stack(joints_xy), maxvals=np.asarray(maxvals, float),
                       box_scores=np.asarray(box_scores, float), areas=np.full(n, 10000.0),
                       detected=np.ones(n, bool) if detected is None else np.asarray(detected))


def test_joint_scores_are_heatmap_maxima_times_box_scores_and_none_keeps_every_pose():
    """Two identical detector poses (OKS 1) in one frame: `none` writes both, as DCPose does."""
    maxvals = np.array([np.full(17, 0.5), np.full(17, 0.25)])
    got = poses([0, 0], [line_pose(), line_pose()], maxvals, [0.8, 0.4])
    keep, scores = postprocess(got, NONE)
    assert keep.tolist() == [True, True]
    np.testing.assert_allclose(scores, [np.full(17, 0.5 * 0.8), np.full(17, 0.25 * 0.4)])  # 0.4, 0.1


def test_oks_nms_rescores_then_keeps_per_frame_and_never_touches_gt_box_poses():
    """Frame "a": pose 0 (box 0.9, every joint 0.15, none above 0.2: rescored 0.9 x 0 = 0) and its duplicate,
    pose 1 (box 0.5, joints 0.8: rescored 0.4), and pose 2 far away (box 0.3, joints 0.6: 0.18). Best first:
    1, then 2 (OKS ~ 0 with 1), and 0 goes (OKS 1 with 1) although its box scored best. Frame "b": pose 3 alone,
    kept. Pose 4 is a GT box's, an exact copy of pose 1 in frame "a": never post-processed."""
    maxvals = [np.full(17, 0.15), np.full(17, 0.8), np.full(17, 0.6), np.full(17, 0.5), np.full(17, 0.8)]
    got = poses(["a", "a", "a", "b", "a"], [line_pose(), line_pose(), line_pose(400.0), line_pose(), line_pose()],
                maxvals, [0.9, 0.5, 0.3, 0.7, 1.0], detected=[True, True, True, True, False])
    keep, scores = postprocess(got, OKS_NMS)
    assert keep.tolist() == [False, True, True, True, True]
    np.testing.assert_allclose(scores[:, 0], [0.9 * 0.15, 0.5 * 0.8, 0.3 * 0.6, 0.7 * 0.5, 1.0 * 0.8])
    assert postprocess(got, NONE)[0].all()


def test_equal_rescored_scores_keep_the_later_pose():
    """Box 0.5 x mean 0.8 = 0.4 and box 0.8 x mean 0.5 = 0.4 (both exactly float 0.4): a tie, the later pose
    (index 1) comes first and suppresses its duplicate."""
    got = poses([0, 0], [line_pose(), line_pose()], [np.full(17, 0.8), np.full(17, 0.5)], [0.5, 0.8])
    assert postprocess(got, OKS_NMS)[0].tolist() == [False, True]


def test_the_thresholds_come_from_the_config():
    """Joints at 0.5 are above a 0.2 threshold but not above 0.6: with keypoint_threshold 0.6 both poses rescore
    to 0, tie, and the later one stays. With oks_nms 1.0 nothing is a duplicate (OKS 1 <= 1)."""
    got = poses([0, 0], [line_pose(), line_pose()], [np.full(17, 0.9), np.full(17, 0.5)], [1.0, 1.0])
    assert postprocess(got, OKS_NMS)[0].tolist() == [True, False]  # 0.9 > 0.5 rescored
    assert postprocess(got, dataclasses.replace(OKS_NMS, keypoint_threshold=0.95))[0].tolist() == [False, True]
    assert postprocess(got, dataclasses.replace(OKS_NMS, oks_nms=1.0))[0].tolist() == [True, True]


def test_crop_box_areas_are_width_times_height():
    np.testing.assert_allclose(crop_box_areas([[1.0, 2.0, 30.0, 40.0], (0, 0, 96, 128)]), [1200.0, 12288.0])
    assert crop_box_areas([]).shape == (0,)


def test_an_unknown_choice_is_refused():
    with pytest.raises(ConfigError, match="detect.postprocess: expected 'none' or 'oks_nms', found 'nms'"):
        postprocess(poses([0], [line_pose()], [np.ones(17)], [1.0]), DetectConfig(postprocess="nms"))
