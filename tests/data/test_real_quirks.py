"""Real PoseTrack annotation quirks through crops, targets and evaluation: each works or is a counted error.

Out-of-frame joints, persons without joints, ignore regions touching the frame border, one-frame
videos, `is_labeled` frames without persons, and val persons that get no prediction (named).
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vremd.data import posetrack
from vremd.data.crop_store import build_crops, read_manifest
from vremd.data.crops import CropInputError, extract_video
from vremd.data.detections import Detection
from vremd.data.heatmaps import encode
from vremd.eval.posetrack_ap import APResult, evaluate_dirs
from vremd.eval.predictions import describe_unpredicted, unpredicted_gt_persons, write_predictions
from vremd.train.tracking import Tracker
from vremd.train.validate import UNPREDICTED_METRIC, UNPREDICTED_TAG, Validation, ap_metrics
from test_crops import CFG, IMG_H, IMG_W, make_person, write_fixture_video


NAN_AP = APResult(table={}, per_joint={}, precision={}, recall={}, n_gt={}, n_frames=0, protocol="posetrack18")


def _person(track_id: int, keypoints, box=(20.0, 10.0, 40.0, 60.0)) -> posetrack.Person:
    person = make_person(track_id, box, keypoints=np.asarray(keypoints, float))
    return posetrack.Person(person.track_id, person.person_id, person.keypoints, person.bbox_xywh,
                            bbox_head_xywh=(box[0] + 10, box[1], 12.0, 12.0))


def _body(x0: float, y0: float) -> np.ndarray:
    """(17, 3) visible joints in a 30x50 px region at (x0, y0)."""
    rng = np.random.default_rng(int(x0 * 7 + y0))
    return np.concatenate([rng.uniform([x0, y0], [x0 + 30, y0 + 50], (17, 2)), np.ones((17, 1))], axis=1)


def _copy_predictions(pred_dir: Path, gt_dir: Path, rows: list[dict]) -> None:
    """Each row predicts exactly its GT person's keypoints (score 1): what a perfect model would write."""
    gt_videos = [posetrack.read_video(p) for p in sorted(gt_dir.glob("*.json"))]
    joints = {(v.name, f.frame_index, p.person_id): p.keypoints[:, :2]
              for v in gt_videos for f in v.frames for p in f.persons}
    xy = np.stack([joints[r["video"], r["frame_index"], r["person_id"]] for r in rows])
    write_predictions(pred_dir, gt_videos, rows, xy, np.ones((len(rows), 17)))


# ---------------------------------------------------------------- joints outside the image


def test_out_of_frame_joints_are_targets_inside_the_crop_and_ignored_outside_it(tmp_path):
    keypoints = _body(30, 20)
    keypoints[2, :2] = (40.0, -4.0)  # head_top just above the frame, inside the 25%-enlarged crop
    keypoints[16, :2] = (45.0, 2.0 * IMG_H)  # right_ankle far below the frame (1 image height): outside the crop
    keypoints[15, :2] = (-float(IMG_W), 50.0)  # left_ankle exactly 1 image width left: the bound is inclusive
    video = write_fixture_video(tmp_path, "train", 1, [[_person(0, keypoints, (30, 0, 30, 70))]])
    res = extract_video(video, "train", tmp_path, CFG, "error")  # no error: out-of-frame joints are data
    (row,) = res.rows
    joints = np.asarray(row["joints_crop_xyv"]).reshape(17, 3)
    assert joints[[2, 15, 16], 2].tolist() == [1.0, 1.0, 1.0]  # kept with their positions
    c2i = np.asarray(row["crop_to_image"]).reshape(2, 3)
    assert np.allclose(joints[2, :2] * np.diag(c2i[:, :2]) + c2i[:, 2], (40.0, -4.0))
    _, weight = encode(joints[:, :2], joints[:, 2], (CFG.height // 4, CFG.width // 4), 4, 2.0)
    assert weight[2] == 1 and weight[15] == 0 and weight[16] == 0  # target inside the crop, ignored outside
    assert weight.sum() == 15
    val_video = write_fixture_video(tmp_path, "val", 2, [[_person(0, keypoints, (30, 0, 30, 70))]])
    val = extract_video(val_video, "val", tmp_path, CFG, "error")
    assert len(val.rows) == 1 and not val.skipped  # and the val person gets a prediction
    # scored as poseval scores them: a prediction on the out-of-frame joints is a true positive
    gt_dir = Path(val_video.json_path).parent
    _copy_predictions(tmp_path / "pred", gt_dir, val.rows)
    result = evaluate_dirs(gt_dir, tmp_path / "pred")
    assert result.n_gt["head_top"] == 1 and result.per_joint["head_top"] == 100.0 and result.table["Total"] == 100.0


@pytest.mark.parametrize("xy, name", [((-IMG_W - 1.0, 30.0), "nose"), ((30.0, 2 * IMG_H + 0.5), "nose")])
def test_joints_more_than_an_image_size_outside_are_a_named_counted_error(tmp_path, xy, name):
    keypoints = _body(30, 20)
    keypoints[0, :2] = xy
    video = write_fixture_video(tmp_path, "train", 3, [[_person(0, keypoints), _person(1, _body(70, 20))]])
    with pytest.raises(CropInputError, match=f"person 100 \\(track 0\\): keypoints: {name} at .* is more than 1 image"):
        extract_video(video, "train", tmp_path, CFG, "error")
    res = extract_video(video, "train", tmp_path, CFG, "skip")
    assert res.skipped == Counter(keypoints_far_outside=1) and len(res.rows) == 1


# ---------------------------------------------------------------- persons without joints (FIDELITY B3)


def test_val_persons_without_joints_get_no_prediction_as_poseval_counts_them(tmp_path):
    """A GT file with persons that have no annotated joint: poseval never matches them and counts no GT
    joint for them, so predicting them could only add 17 false positives each. They get no crop, the
    skip is counted, and a perfect model then scores 100 on every joint."""
    empty = np.zeros((17, 3))
    frames = [[_person(0, _body(20, 10)), _person(1, empty, (70, 20, 30, 50))],
              [_person(0, _body(22, 12)), _person(1, empty, (70, 20, 30, 50))],
              [_person(1, empty, (70, 20, 30, 50))]]  # a frame whose only GT person has no joints
    video = write_fixture_video(tmp_path / "raw", "val", 4, frames)
    stats = build_crops(tmp_path / "raw", tmp_path / "crops", CFG, "error", progress=False)
    assert stats["splits"]["val"]["samples"] == 2 and stats["splits"]["val"]["skipped"] == {"no_joints": 3}
    rows = read_manifest(tmp_path / "crops").to_dict("records")
    assert {r["person_id"] for r in rows} == {100}
    gt_dir = tmp_path / "raw" / "annotations" / "val"
    _copy_predictions(tmp_path / "pred", gt_dir, rows)
    result = evaluate_dirs(gt_dir, tmp_path / "pred")
    assert result.table["Total"] == 100.0 and all(ap == 100.0 for ap in result.per_joint.values())
    assert result.n_frames == 3  # the frame with only a jointless person is evaluated: and costs nothing
    assert unpredicted_gt_persons([video], rows) == []


# ---------------------------------------------------------------- ignore regions at the frame border


def test_ignore_regions_touching_the_frame_border(tmp_path):
    """A region from beyond the top-left corner into the frame: joints strictly inside it are removed on both
    sides, a joint on its edge is kept (poseval's `contains`), and a person all inside it needs no prediction."""
    region = np.array([[-20.0, -20.0], [60.0, -20.0], [60.0, 40.0], [-20.0, 40.0]])  # (4, 2): crosses x=0 and y=0
    covered = _body(5, 0) * [1, 0.5, 1]  # every joint inside the region (y in [0, 25])
    partly = _body(60, 30)
    partly[0, :2] = (60.0, 35.0)  # nose on the region's edge: kept
    partly[1, :2] = (30.0, 10.0)  # head_bottom strictly inside: removed
    name = "000005_mpii_test"
    frames = []
    for t in range(2):
        file_name = f"images/val/{name}/{t:06d}.jpg"
        persons = (_person(0, covered, (0, 0, 40, 30)), _person(1, partly, (55, 25, 40, 60)))
        frames.append(posetrack.Frame(posetrack.image_id_for(5, t), t, file_name, True, persons, (region,)))
    gt_dir = tmp_path / "gt"
    video = posetrack.Video(name, "val", gt_dir / f"{name}.json", tuple(frames), image_hw=(IMG_H, IMG_W))
    posetrack.write_video(video, gt_dir / f"{name}.json")
    video = posetrack.read_video(gt_dir / f"{name}.json", "val")
    assert np.array_equal(video.frames[0].ignore_regions[0], region)
    assert [(p.frame_index, p.track_id) for p in unpredicted_gt_persons([video], [])] == [(0, 1), (1, 1)]
    rows = [{"video": name, "frame_index": t, "person_id": 101, "source": "gt"} for t in range(2)]
    assert unpredicted_gt_persons([video], rows) == []  # the covered person is not counted by poseval
    _copy_predictions(tmp_path / "pred", gt_dir, rows)
    result = evaluate_dirs(gt_dir, tmp_path / "pred")
    assert result.n_gt["neck"] == 0 and result.n_gt["nose"] == 2  # head_bottom (poseval "neck") removed
    # the predicted head_bottom is removed as well: no GT and no prediction gives poseval's 0 (not NaN)
    assert result.per_joint["nose"] == 100.0 and result.per_joint["neck"] == 0.0
    assert result.table["Total"] == pytest.approx(100.0 * 14 / 15)


# ---------------------------------------------------------------- one-frame videos, labeled frames without persons


def test_one_frame_videos(tmp_path):
    """Real PoseTrack18 val files may list a single image of the video (`nframes` says 149): the frame's
    neighbours are clamped to it, counted, and it is decoded once."""
    one = write_fixture_video(tmp_path, "val", 6, [[_person(0, _body(20, 10))]])
    res = extract_video(one, "val", tmp_path, CFG, "error")
    assert len(res.rows) == 1 and res.clamped_neighbours == 1 and res.frames_decoded == 1
    stats = build_crops(tmp_path, tmp_path / "crops", CFG, "error", progress=False)
    assert stats["splits"]["val"]["single_frame_videos"] == 1


def test_labeled_frames_without_persons(tmp_path):
    """A labeled frame without persons gives no GT sample; poseval drops it, so a detection there costs nothing."""
    video = write_fixture_video(tmp_path, "val", 7, [[_person(0, _body(20, 10))], [], [_person(0, _body(24, 10))]],
                                labeled=[True, True, True])
    res = extract_video(video, "val", tmp_path, CFG, "error")
    assert sorted(r["frame_index"] for r in res.rows) == [0, 2] and not res.skipped
    dets = {f.image_id: [Detection(f.image_id, (20.0, 10.0, 30.0, 50.0), 0.9)] for f in video.frames}
    res = extract_video(video, "val", tmp_path, CFG, "error", dets)
    assert sorted(r["frame_index"] for r in res.rows) == [0, 1, 2]
    gt_videos = [posetrack.read_video(video.json_path)]
    rows = [{**r, "person_id": 100} for r in res.rows if r["frame_index"] != 1]  # perfect on frames 0 and 2
    joints = np.stack([gt_videos[0].frames[r["frame_index"]].persons[0].keypoints[:, :2] for r in rows]
                      + [np.full((17, 2), 5.0)])  # frame 1: a confident detection where no GT person is
    rows.append(next(r for r in res.rows if r["frame_index"] == 1))
    write_predictions(tmp_path / "pred", gt_videos, rows, joints, np.ones((3, 17)))
    result = evaluate_dirs(Path(video.json_path).parent, tmp_path / "pred")
    assert result.n_frames == 2 and result.table["Total"] == 100.0


# ---------------------------------------------------------------- val persons without a prediction are named


def test_skipped_val_persons_are_named_and_counted_and_tagged_in_mlflow(tmp_path):
    video = write_fixture_video(tmp_path, "val", 8, [[_person(0, _body(20, 10)), _person(1, _body(70, 20))]] * 3)
    (tmp_path / video.frames[2].file_name).unlink()
    res = extract_video(video, "val", tmp_path, CFG, "skip")  # skip keeps the run going ...
    assert res.skipped == Counter(missing_frame=4)
    missing = unpredicted_gt_persons([video], res.rows)  # ... but never hides a val person
    assert [(p.frame_index, p.track_id) for p in missing] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    text = describe_unpredicted(missing, limit=3)
    assert text.splitlines()[0].startswith("4 GT person(s) that poseval counts have no prediction")
    assert "000008_mpii_test frame 1 (image 10000080001) track 0 person 100" in text and "... and 1 more" in text
    dets = [{"video": video.name, "frame_index": 1, "source": "det", "person_id": -1}]
    assert [p.frame_index for p in unpredicted_gt_persons([video], dets)] == [0, 0, 2, 2]  # by frame with detections


@pytest.mark.slow  # a fresh MLflow SQLite store migrates its schema (about 20 s)
def test_the_training_run_tags_the_names_of_unpredicted_val_persons(tmp_path):
    """The MLflow run carries the names as a tag; the count is the metric `val/unpredicted_persons`."""
    from vremd.train.loop import _report_unpredicted

    video = write_fixture_video(tmp_path, "val", 8, [[_person(0, _body(20, 10)), _person(1, _body(70, 20))]])
    missing = unpredicted_gt_persons([video], [])
    assert ap_metrics(Validation(ap=NAN_AP, unpredicted=tuple(missing)))[UNPREDICTED_METRIC] == 2
    tracker = Tracker.start(f"sqlite:///{tmp_path / 'mlflow.db'}", "quirks", "run", {}, {})
    _report_unpredicted(Validation(ap=NAN_AP, unpredicted=tuple(missing)), tracker)
    assert tracker.client().get_run(tracker.run_id).data.tags[UNPREDICTED_TAG] == describe_unpredicted(missing)
