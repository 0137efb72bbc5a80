"""Scored (detector) boxes in predict: which are kept, their scores, their post-processing, and the json
validation writes for the same model and boxes (issue 32 item 6: predict dropped the box score and the NMS)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from predict_fixtures import make_tiny_video, save_smoke_checkpoint

from vremd.config import smoke_config
from vremd.data.crop_store import build_crops
from vremd.data.dataset import PoseTrackCrops
from vremd.data.index import build_index
from vremd.data.posetrack import read_video
from vremd.model.checkpoint import load_trained
from vremd.model.heads import HEATMAP_STRIDE
from vremd.predict.boxes_io import load_boxes
from vremd.predict.cli import main
from vremd.predict.video import probe
from vremd.train.validate import validate

DUPLICATE_SCORE, AT_THRESHOLD, BELOW_THRESHOLD = 0.5, 0.2, 0.19
CORNER_BOX = [2.0, 2.0, 30.0, 40.0]  # a box away from every person: its pose is no one's duplicate


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny video, a smoke model whose config post-processes with oks_nms (raw-pixel crops: validation's crops
    are then predict's), and one set of detector boxes as two json files: keyed by PoseTrack image id (the
    `detect` stage's, for validation) and by frame index (for predict)."""
    root = tmp_path_factory.mktemp("scored")
    video = make_tiny_video(root)
    base = smoke_config()
    cfg = dataclasses.replace(base, crops=dataclasses.replace(base.crops, jpeg_quality=0),
                              detect=dataclasses.replace(base.detect, postprocess="oks_nms"))
    ckpt = save_smoke_checkpoint(root / "final.pt", cfg=cfg)
    by_image, by_frame = [], []
    for frame in read_video(video.gt_json).frames:
        if not frame.persons:
            continue
        boxes = [(list(p.bbox_xywh), round(0.9 - 0.2 * k, 2)) for k, p in enumerate(frame.persons)]
        boxes += [(list(frame.persons[0].bbox_xywh), DUPLICATE_SCORE),  # the same crop as person 0: OKS 1
                  (CORNER_BOX, AT_THRESHOLD), (CORNER_BOX, BELOW_THRESHOLD)]  # kept (>= 0.2) / dropped
        for box, score in boxes:
            by_image.append({"image_id": frame.image_id, "category_id": 1, "bbox": box, "score": score})
            by_frame.append({"image_id": frame.frame_index, "category_id": 1, "bbox": box, "score": score})
    (root / "dets_val.json").write_text(json.dumps(by_image))
    (root / "dets_frames.json").write_text(json.dumps(by_frame))
    return video, ckpt, cfg, root


def _persons(path):
    """Per frame: the (J, 2) joints and (J,) scores of each predicted person, in file order."""
    return [[(p.keypoints[:, :2], np.asarray(p.scores)) for p in f.persons] for f in read_video(path).frames]


def test_predict_writes_the_json_validation_writes_for_the_same_model_and_boxes(scored, tmp_path):
    """Validation (crops stage at detect.score_threshold, then `validate`) and predict (--boxes) on the same frames,
    model and boxes write the same persons, joints and joint scores: box scores and OKS-NMS are applied in both."""
    video, ckpt, cfg, root = scored
    crops, index = tmp_path / "crops", tmp_path / "index"
    build_crops(video.dataset_dir, crops, cfg.crops, "error", val_boxes=str(root / "dets_val.json"), progress=False,
                min_box_score=cfg.detect.score_threshold)
    build_index(crops, index)
    model, saved = load_trained(ckpt)
    dataset = PoseTrackCrops(index / "val.parquet", None, 17, heatmap_stride=HEATMAP_STRIDE)
    validate(model, dataset, pd.read_parquet(index / "val.parquet"), video.gt_json.parent, tmp_path / "val", 4,
             torch.device("cpu"), HEATMAP_STRIDE, flip_test=saved.train.flip_test, detect=saved.detect,
             joint_slots=saved.model.annotated_joints)
    validated = _persons(tmp_path / "val" / video.gt_json.name)
    assert main([str(video.frames_dir), "--boxes", str(root / "dets_frames.json"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "pred.json"), "--quiet"]) == 0
    predicted = _persons(tmp_path / "pred.json")
    gt = read_video(video.gt_json)
    # per frame with persons: every GT person's box + the corner box at 0.2; the 0.19 box and one of the two
    # identical crops are gone
    assert [len(f) for f in validated] == [len(f.persons) + 1 if f.persons else 0 for f in gt.frames]
    assert [len(f) for f in predicted] == [len(f) for f in validated]
    for val_frame, pred_frame in zip(validated, predicted):
        for (val_xy, val_scores), (pred_xy, pred_scores) in zip(val_frame, pred_frame):
            np.testing.assert_allclose(pred_xy, val_xy, atol=1e-3)
            np.testing.assert_allclose(pred_scores, val_scores, rtol=1e-5, atol=1e-7)


def test_joint_scores_carry_the_box_score_and_the_checkpoints_choices_can_be_overridden(scored, tmp_path):
    """The checkpoint says oks_nms and score >= 0.2. --postprocess none keeps the duplicate crop; --min-score 0
    keeps the 0.19 box. The duplicate's joint scores are its twin's x 0.5 / box score: the heatmaps are equal."""
    video, ckpt, _, root = scored
    gt = read_video(video.gt_json)

    def run(*flags):
        out = tmp_path / f"pred{len(flags)}{'_'.join(flags)}.json"
        assert main([str(video.frames_dir), "--boxes", str(root / "dets_frames.json"), "--checkpoint", str(ckpt),
                     "--out", str(out), "--quiet", *flags]) == 0
        return _persons(out)

    counts = {flags: [len(f) for f in run(*flags)] for flags in [(), ("--postprocess", "none"),
                                                                  ("--postprocess", "none", "--min-score", "0")]}
    expected = [len(f.persons) + 1 if f.persons else 0 for f in gt.frames]
    assert counts[()] == expected
    assert counts[("--postprocess", "none")] == [n + 1 if n else 0 for n in expected]
    assert counts[("--postprocess", "none", "--min-score", "0")] == [n + 2 if n else 0 for n in expected]
    kept_all = run("--postprocess", "none")
    t = next(i for i, f in enumerate(gt.frames) if f.persons)
    first, duplicate = kept_all[t][0], kept_all[t][len(gt.frames[t].persons)]  # scores 0.9 and 0.5: best first
    np.testing.assert_array_equal(duplicate[0], first[0])  # the same crop: the same joints
    np.testing.assert_allclose(duplicate[1] * 0.9, first[1] * DUPLICATE_SCORE, rtol=1e-12)


def test_scored_coco_boxes_are_detections_listed_best_first_and_annotations_are_not(scored, tmp_path):
    video, _, _, root = scored
    names = probe(video.frames_dir).frame_names
    dets = load_boxes(root / "dets_frames.json", names, min_score=0.2)
    assert dets.detected
    assert all((np.diff(f.scores) <= 0).all() for f in dets.frames)
    assert all(BELOW_THRESHOLD not in f.scores and (AT_THRESHOLD in f.scores or not len(f.scores))
               for f in dets.frames)
    assert not load_boxes(video.gt_json, names).detected  # a PoseTrack json: annotated persons
    unscored = tmp_path / "unscored.json"
    unscored.write_text(json.dumps([{"image_id": 0, "category_id": 1, "bbox": [1, 2, 30, 40]}]))
    assert not load_boxes(unscored, names).detected
