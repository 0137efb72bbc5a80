"""The person detector: weights the tests write (nothing downloads here), batched inference, provenance,
the `detect` stage's COCO json, and `predict` on a bare video (detector -> IoU tracker -> PoseTrack json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import detection

from pipeline import detect as detect_stage
from tests.predict.predict_fixtures import make_tiny_video, save_smoke_checkpoint
from vremd.config import DetectConfig
from vremd.data.detections import read_detections
from vremd.data.posetrack import list_videos, read_video
from vremd.detect.detector import DetectorError, build_detector, detect_images
from vremd.predict.cli import main as predict_main

LIGHT = "fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Light detector weights that call every region a person (so random weights still find boxes)."""
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 12.0  # class 1 = person wins every region
    path = tmp_path_factory.mktemp("det") / "person-detector.pth"
    torch.save(model.state_dict(), path)
    return path


def config(weights: Path, **changes) -> DetectConfig:
    return DetectConfig(model=LIGHT, weights=str(weights), min_size=96, max_size=160, batch_size=2, **changes)


def test_provenance_names_detector_weights_and_settings(weights):
    _model, provenance = build_detector(config(weights, score_threshold=0.3, nms_iou=0.4))
    record = provenance.to_dict()
    assert record["detector"] == LIGHT and record["weights"] == str(weights)
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (record["score_threshold"], record["nms_iou"], record["min_size"], record["max_size"]) == (0.3, 0.4, 96, 160)
    assert record["score_rule"] == "score >= 0.3"
    assert record["torchvision_version"] == torchvision.__version__


@pytest.mark.parametrize("threshold", [0.2, 0.7, 0.5, 0.0])  # float32(0.2) rounds up, float32(0.7) down
def test_the_detector_keeps_scores_at_or_above_the_threshold_as_dcpose(weights, threshold):
    """torchvision keeps `score > box_score_thresh` on float32 scores; built from `score_threshold` it keeps
    exactly the float32 scores >= the threshold: the float32 at the threshold and above, none below."""
    model, _ = build_detector(config(weights, score_threshold=threshold))
    at = np.float32(threshold)
    at = at if float(at) >= threshold else np.nextafter(at, np.float32(1))  # the least float32 >= threshold
    below, above = np.nextafter(at, np.float32(-1)), np.nextafter(at, np.float32(1))
    scores = torch.tensor([below, at, above], dtype=torch.float32)
    assert (scores > model.roi_heads.score_thresh).tolist() == [False, True, True]  # roi_heads' own comparison
    assert [float(s) >= threshold for s in (below, at, above)] == [False, True, True]


def test_batched_inference_equals_one_image_at_a_time_and_keeps_only_confident_persons(weights):
    model, _ = build_detector(config(weights, score_threshold=0.5))
    rng = np.random.default_rng(0)
    images = [(i, rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for i in range(3)]
    batched = list(detect_images(model, images, batch_size=2, progress=False))
    single = list(detect_images(model, images, batch_size=1, progress=False))
    assert [k for k, _, _ in batched] == [0, 1, 2]
    assert sum(len(s) for _, _, s in batched) > 0  # the test weights do find persons
    for (_, boxes_a, scores_a), (_, boxes_b, scores_b) in zip(batched, single):
        np.testing.assert_allclose(boxes_a, boxes_b, atol=1e-3)
        assert (scores_a >= 0.5).all() and (np.diff(scores_a) <= 0).all()  # above threshold, best first
        assert (boxes_a[:, 2:] >= 0).all()  # x, y, w, h


def test_weights_of_another_architecture_are_refused_naming_the_file(weights):
    with pytest.raises(DetectorError, match=r"person-detector\.pth: not fasterrcnn_resnet50_fpn_v2 weights"):
        build_detector(DetectConfig(model="fasterrcnn_resnet50_fpn_v2", weights=str(weights)))
    with pytest.raises(DetectorError, match="unknown detector 'yolo'"):
        build_detector(DetectConfig(model="yolo", weights=str(weights)))
    with pytest.raises(DetectorError, match="no such detector weights file"):
        build_detector(DetectConfig(model=LIGHT, weights=str(weights.with_name("nope.pth"))))


def test_detect_stage_writes_coco_json_for_the_labeled_val_frames(weights, smoke_data, write_params, tmp_path, capsys):
    out = tmp_path / "detections" / "detected" / "val.json"
    common = dict(detect__model=LIGHT, detect__weights=str(weights), detect__min_size=96, detect__max_size=160,
                  detect__batch_size=2)
    params = write_params(tmp_path, **common)  # data.val_boxes: gt
    smoke_data.link_into(tmp_path)
    argv = ["--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(out), "--no-progress"]
    assert detect_stage.main(argv) == 0  # GT boxes: nothing to detect, and it says so
    assert "detect: not needed, data.val_boxes is 'gt'" in capsys.readouterr().out
    assert not out.exists() and json.loads((out.parent / "val.provenance.json").read_text())["needed"] is False
    params = write_params(tmp_path, **common, data__val_boxes=str(out))
    assert detect_stage.main(argv) == 0
    labeled = {f.image_id for p in list_videos(tmp_path / "raw" / "synthetic", "val")
               for f in read_video(p).frames if f.is_labeled}
    by_image = read_detections(out)  # the reader crops uses takes the file as written
    assert set(by_image) <= labeled and by_image
    record = json.loads((out.parent / "val.provenance.json").read_text())
    assert record["frames"] == len(labeled) and record["boxes"] == sum(len(v) for v in by_image.values())
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_predict_on_a_bare_video_runs_the_detector_and_tracks(weights, tmp_path, capsys):
    tiny = make_tiny_video(tmp_path)
    ckpt = save_smoke_checkpoint(tmp_path / "final.pt")
    out = tmp_path / "pred.json"
    rc = predict_main([str(tiny.mp4), "--checkpoint", str(ckpt), "--out", str(out), "--quiet", "--detector", LIGHT,
                       "--detector-weights", str(weights), "--detector-score", "0.5"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"boxes: {LIGHT} (weights person-detector.pth" in printed and "score >= 0.5)" in printed
    data = json.loads(out.read_text())
    assert len(data["images"]) == tiny.num_frames and data["annotations"]
    assert all(a["track_id"] >= 0 for a in data["annotations"])  # linked into tracks
