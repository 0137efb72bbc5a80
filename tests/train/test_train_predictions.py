"""vremd.eval.predictions: PoseTrack json the evaluator reads; GT poses written as predictions score AP 100."""

import math

import numpy as np
import orjson
import pytest

from vremd.eval.posetrack_ap import evaluate_dirs
from vremd.eval.predictions import PredictionError, read_gt_videos, write_predictions


@pytest.fixture(scope="module")
def gt_dir(smoke_data):
    return smoke_data.gt_dir


def _gt_as_predictions(videos):
    rows, joints, scores = [], [], []
    for video in videos:
        for frame in video.frames:
            for person in frame.persons:
                rows.append({"video": video.name, "frame_index": frame.frame_index, "box_xywh": person.bbox_xywh})
                joints.append(person.keypoints[:, :2])
                annotated = np.any(person.keypoints != 0, axis=1)
                scores.append(np.where(annotated, 0.9, 0.1))  # absent joints rank below every real one
    return rows, np.array(joints), np.array(scores)


def test_gt_written_as_predictions_scores_100(gt_dir, tmp_path):
    videos = read_gt_videos(gt_dir)
    rows, joints, scores = _gt_as_predictions(videos)
    written = write_predictions(tmp_path / "pred", videos, rows, joints, scores)
    assert sorted(p.name for p in written) == sorted(p.name for p in gt_dir.glob("*.json"))
    result = evaluate_dirs(gt_dir, tmp_path / "pred")
    assert math.isclose(result.table["Total"], 100.0)


def test_files_mirror_gt_images_with_unique_track_ids(gt_dir, tmp_path):
    videos = read_gt_videos(gt_dir)
    rows, joints, scores = _gt_as_predictions(videos)
    write_predictions(tmp_path, videos, rows, joints, scores)
    for video in videos:
        gt = orjson.loads(video.json_path.read_bytes())
        pred = orjson.loads((tmp_path / video.json_path.name).read_bytes())
        assert [im["file_name"] for im in pred["images"]] == [im["file_name"] for im in gt["images"]]
        per_image = {}
        for ann in pred["annotations"]:
            per_image.setdefault(ann["image_id"], []).append(ann["track_id"])
            assert len(ann["keypoints"]) == 51 and ann["keypoints"][2::3] == [1] * 17
            assert len(ann["scores"]) == 17
        assert all(len(ids) == len(set(ids)) for ids in per_image.values())
        assert sum(len(ids) for ids in per_image.values()) == sum(len(f.persons) for f in video.frames)


def test_bad_inputs_name_the_problem(gt_dir, tmp_path):
    videos = read_gt_videos(gt_dir)
    rows = [{"video": "999999_mpii_test", "frame_index": 0}]
    with pytest.raises(PredictionError, match="999999_mpii_test"):
        write_predictions(tmp_path, videos, rows, np.zeros((1, 17, 2)), np.zeros((1, 17)))
    rows = [{"video": videos[0].name, "frame_index": 10_000}]
    with pytest.raises(PredictionError, match="frame_index 10000"):
        write_predictions(tmp_path, videos, rows, np.zeros((1, 17, 2)), np.zeros((1, 17)))
    with pytest.raises(PredictionError, match=r"\(S, 17, 2\)"):
        write_predictions(tmp_path, videos, rows, np.zeros((1, 15, 2)), np.zeros((1, 17)))
    with pytest.raises(PredictionError, match="NaN"):
        write_predictions(tmp_path, videos, [{"video": videos[0].name, "frame_index": 0}],
                          np.full((1, 17, 2), np.nan), np.zeros((1, 17)))
    with pytest.raises(PredictionError, match="no GT"):
        read_gt_videos(tmp_path / "empty")
