"""PoseTrack-2018 json: real files parse and round-trip, malformed files fail naming file and field,
validate_layout lists what is missing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from poseval_fixtures import fixture_files, poseval_real
from vremd.data.joints import JOINT_NAMES
from vremd.data.posetrack import (
    POSETRACK18_SKELETON_1BASED, POSEVAL_FILE_NAME, Frame, Person, PoseTrackFormatError, Video,
    image_id_for, list_videos, read_video, validate_layout, write_video,
)

REAL_GT = poseval_real("gt")
REAL_FILES = fixture_files(REAL_GT)


def assert_same_video(a: Video, b: Video) -> None:
    assert (a.name, a.image_hw, a.nframes, len(a.frames)) == (b.name, b.image_hw, b.nframes, len(b.frames))
    for fa, fb in zip(a.frames, b.frames):
        assert (fa.image_id, fa.frame_index, fa.file_name, fa.is_labeled) == (fb.image_id, fb.frame_index, fb.file_name, fb.is_labeled)
        assert len(fa.ignore_regions) == len(fb.ignore_regions)
        for ra, rb in zip(fa.ignore_regions, fb.ignore_regions):
            np.testing.assert_array_equal(ra, rb)
        assert len(fa.persons) == len(fb.persons)
        for pa, pb in zip(fa.persons, fb.persons):
            assert (pa.track_id, pa.person_id, pa.bbox_xywh, pa.bbox_head_xywh, pa.scores) == (
                pb.track_id, pb.person_id, pb.bbox_xywh, pb.bbox_head_xywh, pb.scores)
            np.testing.assert_array_equal(pa.keypoints, pb.keypoints)


def test_real_files_parse_with_expected_contents():
    assert len(REAL_FILES) == 3
    video = read_video(REAL_GT / "009473_mpii_test.json")
    assert (video.name, video.split, video.image_hw) == ("009473_mpii_test", "gt", (1080, 1920))
    (frame,) = video.frames
    assert frame.image_id == 10094730000 == image_id_for(9473, 0)
    assert frame.file_name == "images/val/009473_mpii_test/000000.jpg" and frame.is_labeled
    assert [p.track_id for p in frame.persons] == [0, 1]
    first = frame.persons[0]
    assert first.keypoints.shape == (17, 3) and first.keypoints.dtype == np.float64
    np.testing.assert_allclose(first.keypoints[1], [734.1937256, 371.1997375, 1])  # head_bottom
    assert (first.keypoints[3:5] == 0).all()  # PoseTrack does not annotate ears
    assert first.bbox_head_xywh == (648.0, 253.0, 138.0, 103.0) and first.scores is None
    assert [r.shape for r in frame.ignore_regions] == [(25, 2), (21, 2)]
    for path in REAL_FILES:
        assert POSEVAL_FILE_NAME.search(read_video(path).frames[0].file_name)


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.stem)
def test_real_files_round_trip(path, tmp_path):
    original = read_video(path)
    out = tmp_path / "val" / path.name
    write_video(original, out)
    assert_same_video(original, read_video(out))
    written, real = json.loads(out.read_text()), json.loads(path.read_text())
    assert written["categories"][0]["keypoints"] == real["categories"][0]["keypoints"] == list(JOINT_NAMES)
    assert written["categories"][0]["skeleton"] == real["categories"][0]["skeleton"] == [list(e) for e in POSETRACK18_SKELETON_1BASED]
    for w, r in zip(written["images"], real["images"]):
        for key in ("id", "file_name", "frame_id", "vid_id", "is_labeled", "nframes", "ignore_regions_x", "ignore_regions_y"):
            assert w[key] == r[key], key
    for w, r in zip(written["annotations"], real["annotations"]):
        for key in ("id", "image_id", "track_id", "category_id", "keypoints", "bbox", "bbox_head", "num_keypoints"):
            assert w[key] == pytest.approx(r[key]), key
    assert not list(out.parent.glob(".*tmp*"))  # the atomic write leaves no temp file


def test_write_accepts_dicts_and_predictions_with_scores(tmp_path):
    base = read_video(REAL_FILES[0])
    person = base.frames[0].persons[0]
    pred = Person(track_id=3, person_id=7, keypoints=person.keypoints, bbox_xywh=None, bbox_head_xywh=None,
                  scores=tuple(np.linspace(0.1, 0.9, 17)))
    out = tmp_path / "pred" / f"{base.name}.json"
    video = Video(name=base.name, split="pred", json_path=out,
                  frames=(Frame(base.frames[0].image_id, 0, base.frames[0].file_name, True, (pred,), ()),))
    write_video(video, out)
    assert_same_video(video, read_video(out))
    assert json.loads(out.read_text())["annotations"][0]["scores"] == pytest.approx(list(np.linspace(0.1, 0.9, 17)))
    write_video(json.loads(REAL_FILES[0].read_text()), tmp_path / "d" / REAL_FILES[0].name)
    assert_same_video(base, read_video(tmp_path / "d" / REAL_FILES[0].name))


def _mutations():
    def ann(d):
        return d["annotations"][0]
    return {
        "missing_images": (lambda d: d.pop("images"), "root.images: missing"),
        "images_not_list": (lambda d: d.update(images={}), "root.images: expected list"),
        "keypoints_count": (lambda d: ann(d).update(keypoints=ann(d)["keypoints"][:50]), "annotations[0].keypoints: has 50 values, expected 51"),
        "keypoint_type": (lambda d: ann(d)["keypoints"].__setitem__(4, "7"), r"annotations[0].keypoints[4]: expected a number"),
        "nan_coordinate": (lambda d: ann(d)["keypoints"].__setitem__(3, float("nan")), r"annotations[0].keypoints[3]: not a finite"),
        "track_id_type": (lambda d: ann(d).update(track_id="1"), "annotations[0].track_id: expected int, found str"),
        "track_id_range": (lambda d: ann(d).update(track_id=10000), "annotations[0].track_id: must be in"),
        "missing_track_id": (lambda d: ann(d).pop("track_id"), "annotations[0].track_id: missing"),
        "zero_area_bbox": (lambda d: ann(d).update(bbox=[1, 2, 0, 5]), "annotations[0].bbox: width and height must be > 0"),
        "negative_head_box": (lambda d: ann(d).update(bbox_head=[1, 2, -3, 5]), "annotations[0].bbox_head: width and height"),
        "bbox_length": (lambda d: ann(d).update(bbox=[1, 2, 3]), "annotations[0].bbox: has 3 values, expected 4"),
        "duplicate_image_id": (lambda d: d["images"].append(copy.deepcopy(d["images"][0])), "images[1].id: duplicate image id"),
        "unknown_image_id": (lambda d: ann(d).update(image_id=123), "annotations[0].image_id: refers to unknown image id 123"),
        "is_labeled_type": (lambda d: d["images"][0].update(is_labeled=1), "images[0].is_labeled: expected bool, found int"),
        "missing_file_name": (lambda d: d["images"][0].pop("file_name"), "images[0].file_name: missing"),
        "ignore_region_mismatch": (lambda d: d["images"][0]["ignore_regions_y"].pop(), "images[0].ignore_regions_x: 2 polygons"),
        "coco_eye_names": (lambda d: d["categories"][0]["keypoints"].__setitem__(1, "left_eye"), "categories[0].keypoints: expected the 17"),
        "frame_listed_twice": (lambda d: d["images"].append({**copy.deepcopy(d["images"][0]), "id": 10094730004}),
                               "images[1].file_name: 'images/val/009473_mpii_test/000000.jpg' is frame 0, as is images[0]"),
        "file_name_without_frame_number": (lambda d: d["images"][0].update(file_name="images/val/x_mpii_test/first.jpg"),
                                           "images[0].file_name: 'images/val/x_mpii_test/first.jpg' holds no frame number"),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_malformed_files_name_file_and_field(case, tmp_path):
    mutate, message = _mutations()[case]
    data = json.loads((REAL_GT / "009473_mpii_test.json").read_text())
    mutate(data)
    path = tmp_path / "000001_mpii_train.json"
    path.write_text(json.dumps(data))  # json (not orjson) writes NaN, as a broken exporter would
    with pytest.raises(PoseTrackFormatError) as info:
        read_video(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize("payload", [b"", b'{"images": [', b"[1, 2]"], ids=["empty", "truncated", "not_object"])
def test_truncated_or_non_object_json(payload, tmp_path):
    path = tmp_path / "broken.json"
    path.write_bytes(payload)
    with pytest.raises(PoseTrackFormatError, match=r"broken\.json: (json: malformed or truncated|root: expected an object)"):
        read_video(path)
    with pytest.raises(PoseTrackFormatError, match="missing.json: file: cannot read"):
        read_video(tmp_path / "missing.json")


def _tiny_video(split: str, name: str, number: int, frames: int) -> Video:
    kps = np.zeros((17, 3))
    kps[:, 0], kps[:, 1], kps[:, 2] = np.arange(17) + 5.0, 20.0, 1.0
    person = Person(0, 0, kps, (1.0, 2.0, 30.0, 40.0), (3.0, 4.0, 5.0, 6.0))
    return Video(name=name, split=split, json_path=Path(f"{name}.json"), frames=tuple(
        Frame(image_id_for(number, t), t, f"images/{split}/{name}/{t:06d}.jpg", True, (person,), ())
        for t in range(frames)))


def test_validate_layout_lists_everything_missing(tmp_path):
    with pytest.raises(PoseTrackFormatError, match="dataset directory does not exist"):
        validate_layout(tmp_path / "nope")
    write_video(_tiny_video("val", "000007_mpii_test", 7, 3), tmp_path / "annotations/val/000007_mpii_test.json")
    write_video(_tiny_video("val", "000008_mpii_test", 8, 2), tmp_path / "annotations/val/000008_mpii_test.json")
    frames = tmp_path / "images/val/000007_mpii_test"
    frames.mkdir(parents=True)
    (frames / "000001.jpg").write_bytes(b"x")
    with pytest.raises(PoseTrackFormatError) as info:
        validate_layout(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{tmp_path}: layout: 4 problem(s)")
    assert "annotations/train/: missing folder" in text
    assert "images/val/000007_mpii_test/000000.jpg: frame file referenced by 000007_mpii_test.json is missing" in text
    assert "images/val/000007_mpii_test/000002.jpg: frame file" in text
    assert "000001.jpg" not in text
    assert "images/val/000008_mpii_test/: image folder referenced by 000008_mpii_test.json is missing" in text
    assert [p.name for p in list_videos(tmp_path, "val")] == ["000007_mpii_test.json", "000008_mpii_test.json"]


def test_validate_layout_passes_on_complete_layout(tmp_path):
    for split, name, number in (("train", "000001_mpii_train", 1), ("val", "000101_mpii_test", 101)):
        video = _tiny_video(split, name, number, 2)
        write_video(video, tmp_path / "annotations" / split / f"{name}.json")
        for frame in video.frames:
            (tmp_path / frame.file_name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / frame.file_name).write_bytes(b"jpeg")
    validate_layout(tmp_path)
    (tmp_path / "annotations/train/000001_mpii_train.json").write_text('{"images": []')
    with pytest.raises(PoseTrackFormatError, match="000001_mpii_train.json: json: malformed"):
        validate_layout(tmp_path)


def test_images_out_of_frame_order_are_read_in_frame_order_and_written_back_in_theirs(tmp_path):
    """Issue 32 item 7: frame order is the file names' frame numbers, whatever the json's list order."""
    path = tmp_path / "val" / "000007_mpii_test.json"
    write_video(_tiny_video("val", "000007_mpii_test", 7, 5), path)
    data = json.loads(path.read_text())
    listed = [3, 0, 4, 2, 1]  # the json lists frame 3 first, then 0, 4, 2, 1
    data["images"] = [data["images"][k] for k in listed]
    data["annotations"] = [data["annotations"][k] for k in listed]
    for k, ann in enumerate(data["annotations"]):
        ann["keypoints"][0] = 100.0 + listed[k]  # the person of frame t has nose x = 100 + t
    path.write_text(json.dumps(data))
    video = read_video(path)
    assert [f.file_name for f in video.frames] == [f"images/val/000007_mpii_test/{t:06d}.jpg" for t in range(5)]
    assert [f.frame_index for f in video.frames] == list(range(5)) and video.frame_numbers == (0, 1, 2, 3, 4)
    assert [f.image_id for f in video.frames] == [image_id_for(7, t) for t in range(5)]
    assert [f.persons[0].keypoints[0, 0] for f in video.frames] == [100.0 + t for t in range(5)]
    assert video.listed_order == tuple(listed)
    out = tmp_path / "pred" / path.name
    write_video(video, out)  # as a prediction file: poseval pairs it with the GT by position
    written = json.loads(out.read_text())
    assert [im["file_name"] for im in written["images"]] == [im["file_name"] for im in data["images"]]
    assert_same_video(video, read_video(out))


def test_a_json_listing_some_frames_keeps_their_numbers():
    video = read_video(REAL_GT / "003418_mpii_test.json")  # real: frame 0 of a 149-frame video
    assert video.frame_numbers == (0,) and video.nframes == 149 and video.listed_order is None
