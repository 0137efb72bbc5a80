"""COCO-style OKS AP/AR on PoseTrack json through pycocotools."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poseval_fixtures import poseval_real
from vremd.eval.coco_oks import POSETRACK_SIGMAS, evaluate_coco, evaluate_coco_dirs
from vremd.eval.poseval_io import PoseTrackEvalError

REAL = poseval_real()
CATS = [{"id": 1, "name": "person", "keypoints": []}]
THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _doc(persons_per_frame, name="000001_mpii_test"):
    images, anns = [], []
    for f, persons in enumerate(persons_per_frame):
        images.append({"id": 10 + f, "file_name": f"images/val/{name}/{f:06d}.jpg"})
        anns += [{**p, "image_id": 10 + f, "id": len(anns) + k} for k, p in enumerate(persons)]
    return {"images": images, "annotations": anns, "categories": CATS}


def _gt_kps():
    kps = np.zeros((17, 3))
    kps[:, 0] = np.linspace(100, 180, 17)
    kps[:, 1] = np.linspace(50, 250, 17)
    kps[:, 2] = 1
    kps[[3, 4], :] = 0  # ears are never annotated
    return kps


def test_real_copy_is_perfect():
    stats = evaluate_coco_dirs(REAL / "gt", REAL / "copy" / "pred")
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert math.isnan(stats["APm"])  # no medium-sized person in these frames


def test_real_perturbed_is_worse_but_positive():
    stats = evaluate_coco_dirs(REAL / "gt", REAL / "perturbed" / "pred")
    assert 0.3 < stats["AP"] < 0.95 and stats["AP50"] >= stats["AP75"] >= stats["AP"] - 1e-12


def test_oks_ap_matches_hand_computed_oks():
    gt = _gt_kps()
    shift = 6.0  # every keypoint moved by 6 px in x
    pred = gt.copy()
    pred[:, 0] += shift
    area = 100.0 * 250.0
    vis = gt[:, 2] > 0
    oks = np.mean(np.exp(-(shift ** 2) / (2 * POSETRACK_SIGMAS[vis]) ** 2 / area / 2))
    expected = np.mean(THRESHOLDS <= oks)  # one GT, one detection: AP 1 where matched, 0 elsewhere
    g = _doc([[{"keypoints": gt.ravel().tolist(), "bbox": [90, 40, 100, 250], "track_id": 0}], []])
    # frame 1 has no GT: its prediction is ignored
    p = _doc([[{"keypoints": pred.ravel().tolist(), "scores": [0.9] * 17, "track_id": 0}],
              [{"keypoints": pred.ravel().tolist(), "scores": [0.99] * 17, "track_id": 0}]])
    stats = evaluate_coco([g], [p])
    assert 0 < expected < 1
    assert stats["AP"] == pytest.approx(expected, abs=1e-9)


def test_no_predictions_and_no_gt():
    g = _doc([[{"keypoints": _gt_kps().ravel().tolist(), "bbox": [90, 40, 100, 250], "track_id": 0}]])
    assert evaluate_coco([g], [_doc([[]])])["AP"] == 0.0
    assert math.isnan(evaluate_coco([_doc([[]])], [_doc([[]])])["AP"])


def test_errors():
    g = _doc([[{"keypoints": [1, 2, 3], "track_id": 0}]])
    with pytest.raises(PoseTrackEvalError, match="keypoints: expected 51 numbers"):
        evaluate_coco([g], [_doc([[]])])
    with pytest.raises(PoseTrackEvalError, match="1 frames, GT has 2"):
        evaluate_coco([_doc([[], []])], [_doc([[]])])
    with pytest.raises(ValueError, match="sigmas"):
        evaluate_coco([], [], sigmas=np.ones(15))
