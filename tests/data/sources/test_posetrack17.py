"""PoseTrack2017 annolist json (15 poseval joints) -> PoseTrack-2018 layout with 17 COCO-order slots."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.download import main
from vremd.data.joints import JOINT_NAMES
from vremd.data.posetrack import POSEVAL_FILE_NAME, PoseTrackFormatError, list_videos, read_video, validate_layout
from vremd.data.sources.posetrack17 import POSEVAL_NAMES, POSEVAL_TO_SLOT, convert_posetrack17

H, W = 48, 64


def _point(k: int, x: float, y: float, visible: int = 1) -> dict:
    return {"id": [k], "x": [x], "y": [y], "is_visible": [visible]}


def _rect(track: int, head: tuple[float, float, float, float], points: list[dict]) -> dict:
    x1, y1, x2, y2 = head
    return {"x1": [x1], "y1": [y1], "x2": [x2], "y2": [y2], "track_id": [track], "score": [1.0],
            "annopoints": [{"point": points}]}


def _all_points(offset: float) -> list[dict]:
    """One point per poseval id k at x = offset + k, y = 2 * k + 1 (distinct per joint)."""
    return [_point(k, offset + k, 2.0 * k + 1, visible=k % 2) for k in range(15)]


def write_posetrack17(root: Path) -> Path:
    """A tiny PoseTrack2017 tree: val video 000342_mpii (3 jpgs, 2 annotated frames, 2 people)."""
    data_root = root / "posetrack_data"
    image_dir = data_root / "images" / "bonn_5sec" / "000342_mpii"
    image_dir.mkdir(parents=True)
    for n in (1, 2, 3):
        cv2.imwrite(str(image_dir / f"{n:08d}.jpg"), np.full((H, W, 3), 40 * n, np.uint8))
    frame1 = {
        "image": [{"name": "images/bonn_5sec/000342_mpii/00000001.jpg"}], "imgnum": [1], "is_labeled": [1],
        "annorect": [_rect(0, (1, 2, 11, 14), _all_points(10.0)),
                     _rect(7, (30, 3, 40, 13), [_point(13, 33.5, 8.25), _point(0, 35.0, 40.0)])],
        "ignore_regions": [{"point": [{"x": [0], "y": [0]}, {"x": [5], "y": [0]}, {"x": [5], "y": [5]}]}],
    }
    frame3 = {
        "image": [{"name": "images/bonn_5sec/000342_mpii/00000003.jpg"}], "imgnum": [3], "is_labeled": [1],
        "annorect": [_rect(7, (31, 3, 41, 13), [_point(14, 36.0, 2.0), _point(12, 36.0, 12.0)]),
                     {"x1": [1], "y1": [1], "x2": [5], "y2": [5], "track_id": [3], "annopoints": []}],
    }
    ann_dir = data_root / "annotations" / "val"
    ann_dir.mkdir(parents=True)
    (ann_dir / "000342_mpii_relpath_5sec_testsub.json").write_text(json.dumps({"annolist": [frame1, frame3]}))
    # a train video (bonn) in a second images root, as when images come in a separate archive
    train_dir = root / "images_archive" / "posetrack_data" / "images" / "bonn_5sec" / "000001_bonn"
    train_dir.mkdir(parents=True)
    for n in (1, 2):
        cv2.imwrite(str(train_dir / f"{n:08d}.jpg"), np.zeros((H, W, 3), np.uint8))
    train = {"image": [{"name": "images/bonn_5sec/000001_bonn/00000002.jpg"}], "imgnum": [2],
             "annorect": [_rect(2, (1, 1, 9, 9), [_point(13, 5, 5)])]}
    (data_root / "annotations" / "train").mkdir()
    (data_root / "annotations" / "train" / "000001_bonn.json").write_text(json.dumps({"annolist": [train]}))
    return data_root


def test_joint_mapping_goes_by_name():
    assert [JOINT_NAMES[s] for s in POSEVAL_TO_SLOT] == list(POSEVAL_NAMES)
    assert POSEVAL_TO_SLOT[13] == 0 and POSEVAL_TO_SLOT[12] == 1 and POSEVAL_TO_SLOT[14] == 2
    assert POSEVAL_TO_SLOT[0] == 16 and POSEVAL_TO_SLOT[8] == 6 and POSEVAL_TO_SLOT[11] == 9
    assert sorted(POSEVAL_TO_SLOT) == [0, 1, 2] + list(range(5, 17))  # ears (3, 4) never filled


def test_convert_writes_2018_layout_with_keypoints_in_coco_slots(tmp_path):
    root = write_posetrack17(tmp_path / "src")
    dest = tmp_path / "out"
    roots = [root, tmp_path / "src" / "images_archive" / "posetrack_data"]
    assert convert_posetrack17(roots, dest, progress=False) == {"train": 1, "val": 1}
    (json_path,) = list_videos(dest, "val")
    assert json_path.name == "000342_mpii_test.json"
    video = read_video(json_path)
    assert [f.file_name for f in video.frames] == [f"images/val/000342_mpii_test/{i:06d}.jpg" for i in range(3)]
    assert all(POSEVAL_FILE_NAME.search(f.file_name) for f in video.frames)
    assert [f.is_labeled for f in video.frames] == [True, False, True]
    assert [len(f.persons) for f in video.frames] == [2, 0, 1]  # the point-less person is dropped
    # frame files are the right source images (brightness 40 * n)
    for i, frame in enumerate(video.frames):
        assert abs(cv2.imread(str(dest / frame.file_name)).mean() - 40 * (i + 1)) < 2

    full, partial = video.frames[0].persons
    assert (full.track_id, partial.track_id) == (0, 7)
    for k in range(15):
        np.testing.assert_allclose(full.keypoints[POSEVAL_TO_SLOT[k]], [10.0 + k, 2.0 * k + 1, k % 2])
    np.testing.assert_array_equal(full.keypoints[[3, 4]], 0.0)  # ears
    assert full.bbox_head_xywh == (1.0, 2.0, 10.0, 12.0)
    x, y, w, h = full.bbox_xywh
    assert x <= 10 and y <= 1 and x + w >= 24 and y + h >= 29  # covers every keypoint
    np.testing.assert_allclose(partial.keypoints[0], [33.5, 8.25, 1])  # nose -> slot 0
    np.testing.assert_allclose(partial.keypoints[16], [35.0, 40.0, 1])  # right ankle -> slot 16
    assert np.count_nonzero(partial.keypoints.any(axis=1)) == 2
    head_person = video.frames[2].persons[0]
    np.testing.assert_allclose(head_person.keypoints[[1, 2]], [[36.0, 12.0, 1], [36.0, 2.0, 1]])
    np.testing.assert_allclose(video.frames[0].ignore_regions[0], [[0, 0], [5, 0], [5, 5]])
    validate_layout(dest)
    train = read_video(dest / "annotations/train/000001_bonn_train.json")
    assert [f.is_labeled for f in train.frames] == [False, True]  # no is_labeled key: labeled if it has rects
    np.testing.assert_allclose(train.frames[1].persons[0].keypoints[0], [5, 5, 1])


def test_unknown_joint_id_names_file_and_point(tmp_path):
    root = write_posetrack17(tmp_path / "src")
    path = next((root / "annotations" / "val").glob("*.json"))
    data = json.loads(path.read_text())
    data["annolist"][0]["annorect"][1]["annopoints"][0]["point"][0]["id"] = [15]
    path.write_text(json.dumps(data))
    with pytest.raises(PoseTrackFormatError, match=r"annolist\[0\]: annorect\[1\]: point 0: id 15") as err:
        convert_posetrack17([root, tmp_path / "src/images_archive/posetrack_data"], tmp_path / "out", progress=False)
    assert path.name in str(err.value)


def test_missing_image_is_reported(tmp_path):
    root = write_posetrack17(tmp_path / "src")
    (root / "images/bonn_5sec/000342_mpii/00000003.jpg").unlink()
    with pytest.raises(PoseTrackFormatError, match="1 annotated images missing.*00000003.jpg"):
        convert_posetrack17([root, tmp_path / "src/images_archive/posetrack_data"], tmp_path / "out", progress=False)


def test_no_annotations_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoseTrackFormatError, match="no annotations"):
        convert_posetrack17([tmp_path / "empty"], tmp_path / "out", progress=False)


def test_download_stage_converts_posetrack17_archives(write_params, tmp_path, capsys):
    write_posetrack17(tmp_path / "src")
    main_archive = tmp_path / "posetrack17_val_and_annotations.tar.gz"
    with tarfile.open(main_archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "posetrack_data", "posetrack_data")
    images_archive = tmp_path / "posetrack17_train_images.zip"
    with zipfile.ZipFile(images_archive, "w") as zf:
        for path in sorted((tmp_path / "src" / "images_archive").rglob("*.jpg")):
            zf.write(path, path.relative_to(tmp_path / "src" / "images_archive").as_posix())
    params = write_params(tmp_path, {"data": {"source": "posetrack17",
                                              "urls": [str(main_archive), images_archive.as_uri()]}}, profile="p")
    argv = ["--params", str(params), "--out", str(tmp_path / "raw"), "--cache", str(tmp_path / "dl"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "train 1 videos, 2 frames, 1 labeled frames, 1 persons" in out
    assert "val   1 videos, 3 frames, 2 labeled frames, 3 persons" in out
    dataset = tmp_path / "raw" / "posetrack17"
    validate_layout(dataset)
    assert [p.name for p in list_videos(dataset, "val")] == ["000342_mpii_test.json"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["posetrack17"]  # staging removed
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["annolist"][0]["annorect"][0]["annopoints"][0]["point"][3].pop("x"),
     r"annorect\[0\]: point 3: x: missing"),
    (lambda d: d["annolist"][1].pop("image"), r"annolist\[1\]: image: missing"),
    (lambda d: d["annolist"][0]["annorect"][0].update(x1=["wide"]), r"annorect\[0\]: x1: expected a number"),
])
def test_malformed_fields_name_the_place(tmp_path, edit, needle):
    root = write_posetrack17(tmp_path / "src")
    path = next((root / "annotations" / "val").glob("*.json"))
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PoseTrackFormatError, match=needle):
        convert_posetrack17([root, tmp_path / "src/images_archive/posetrack_data"], tmp_path / "out", progress=False)


def test_single_person_stored_without_list_wrapping_is_read(tmp_path):
    root = write_posetrack17(tmp_path / "src")
    path = next((root / "annotations" / "val").glob("*.json"))
    data = json.loads(path.read_text())
    data["annolist"][1]["annorect"] = data["annolist"][1]["annorect"][0]  # Matlab's 1-element quirk
    path.write_text(json.dumps(data))
    convert_posetrack17([root, tmp_path / "src/images_archive/posetrack_data"], tmp_path / "out", progress=False)
    video = read_video(tmp_path / "out/annotations/val/000342_mpii_test.json")
    assert [len(f.persons) for f in video.frames] == [2, 0, 1]
