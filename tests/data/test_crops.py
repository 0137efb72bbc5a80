"""3-frame crop extraction: known pixels, same box on all frames, clamping, bad input, incremental store."""

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from vremd.config import CropsConfig
from vremd.data import posetrack
from vremd.data.boxes import (
    apply_affine, compose_affine, crop_box_xywh, crop_to_image_affine, invert_affine, pixels_to_box_xywh,
    snap_box_to_pixels,
)
from vremd.data.crop_store import build_crops, read_manifest
from vremd.data.crops import CropInputError, crop_frames, crop_sample, extract_video
from vremd.data.shards import shard_sample
from vremd.data.jpeg import read_frame

IMG_H, IMG_W = 96, 128
CFG = CropsConfig(height=32, width=24, workers=1)
RAW = CropsConfig(height=32, width=24, workers=1, jpeg_quality=0)


def frame_pixels(t: int, h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    """(h, w, 3) RGB: R = x, G = y, B identifies the frame (20 + 40 t)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.minimum(x, 255), np.minimum(y, 255), np.full_like(x, 20 + 40 * t)], -1).astype(np.uint8)


def make_person(track_id: int, box_xywh, n_visible: int = 17, keypoints=None) -> posetrack.Person:
    x, y, w, h = box_xywh
    if keypoints is None:
        rng = np.random.default_rng(track_id)
        keypoints = np.zeros((17, 3))
        keypoints[:n_visible, 0] = rng.uniform(x + 1, x + w - 1, n_visible)
        keypoints[:n_visible, 1] = rng.uniform(y + 1, y + h - 1, n_visible)
        keypoints[:n_visible, 2] = 1
    return posetrack.Person(track_id=track_id, person_id=100 + track_id, keypoints=np.asarray(keypoints, float),
                            bbox_xywh=tuple(box_xywh), bbox_head_xywh=None)


def write_fixture_video(dataset_dir: Path, split: str, number: int, persons_per_frame: list[list],
                        labeled: list[bool] | None = None) -> posetrack.Video:
    """Write a video's JPEG frames and json (PoseTrack layout); frame t shows `frame_pixels(t)`."""
    name = f"{number:06d}_mpii_{'train' if split == 'train' else 'test'}"
    frames = []
    for t, persons in enumerate(persons_per_frame):
        file_name = f"images/{split}/{name}/{t:06d}.jpg"
        (dataset_dir / file_name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dataset_dir / file_name), cv2.cvtColor(frame_pixels(t), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 98])
        frames.append(posetrack.Frame(
            image_id=posetrack.image_id_for(number, t), frame_index=t, file_name=file_name,
            is_labeled=bool(persons) if labeled is None else labeled[t], persons=tuple(persons), ignore_regions=()))
    json_path = dataset_dir / "annotations" / split / f"{name}.json"
    video = posetrack.Video(name=name, split=split, json_path=json_path, frames=tuple(frames), image_hw=(IMG_H, IMG_W))
    posetrack.write_video(video, json_path)
    return posetrack.read_video(json_path, split)


def two_people(n_frames: int) -> list[list]:
    return [[make_person(0, (20, 10, 30, 50)), make_person(1, (70, 30, 40, 60))] for _ in range(n_frames)]


def test_known_box_gives_known_pixels():
    image = frame_pixels(0)
    box = (20.0, 10.0, 48.0, 64.0)  # crop 24x32 -> 2 image pixels per crop pixel
    c2i = crop_to_image_affine(box, (24, 32))
    out = crop_sample([image], invert_affine(c2i), (24, 32))
    u, v = np.meshgrid(np.arange(24), np.arange(32))
    assert np.array_equal(out[0, :, :, 0], 2 * u + 21)  # crop pixel u samples image x = 2u + 21
    assert np.array_equal(out[0, :, :, 1], 2 * v + 11)
    assert (out[0, :, :, 2] == 20).all()
    # pixels outside the image are black
    out = crop_sample([image], invert_affine(crop_to_image_affine((-40.0, 0.0, 48.0, 64.0), (24, 32))), (24, 32))
    assert (out[0, :, :10] == 0).all() and out[0, 5, 23, 2] == 20


def test_fast_crop_matches_warp_reference_inside_and_across_image_edges():
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (IMG_W, IMG_H), interpolation=cv2.INTER_CUBIC)
    frames = [smooth, np.ascontiguousarray(smooth[::-1]), frame_pixels(2)]
    for rect in [(20, 10, 48, 64), (30, 5, 17, 23), (-15, -20, 60, 80), (100, 70, 50, 66), (-5, 2, 150, 200)]:
        fast = crop_frames(frames, rect, (24, 32))
        ref = crop_sample(frames, invert_affine(crop_to_image_affine(pixels_to_box_xywh(rect), (24, 32))), (24, 32))
        diff = np.abs(fast.astype(int) - ref)
        assert diff[:, 1:-1, 1:-1].max() <= 2, rect  # interior: interpolation rounding only
        assert diff.mean() < 1.0, rect  # outermost half-pixel: resize replicates, warp reads beyond
    # known pixels: a 2x downscale of the x/y gradient averages pixel pairs
    fast = crop_frames([frame_pixels(0)], (20, 10, 48, 64), (24, 32))
    u, v = np.meshgrid(np.arange(24), np.arange(32))
    assert np.abs(fast[0, :, :, 0].astype(int) - (2 * u + 20.5)).max() <= 0.5
    assert np.abs(fast[0, :, :, 1].astype(int) - (2 * v + 10.5)).max() <= 0.5
    # the part outside the image is black
    fast = crop_frames([frame_pixels(0)], (-24, 0, 48, 64), (24, 32))
    assert (fast[0, :, :11] == 0).all() and (fast[0, :, 13:, 2] == 20).all()


@pytest.mark.parametrize("scale", [1, 2])
def test_margin_extends_the_crop_with_the_frame_at_the_same_scale(scale):
    """crop_frames with a margin: the crop (its centre window) as without, and around it the frame's own pixels at
    the crop's scale, as the reference warp of the crop affine shifted by the margin; black beyond the frame."""
    image = frame_pixels(0, 192, 256)
    frame = image if scale == 1 else cv2.resize(image, (128, 96), interpolation=cv2.INTER_AREA)
    for rect in [(40, 20, 96, 128), (-30, 60, 96, 128), (200, 100, 48, 64)]:
        canvas = crop_frames([frame], rect, (24, 32), scales=(scale,), margin_px=(15, 11))
        assert canvas.shape == (1, 54, 54, 3)
        crop = crop_frames([frame], rect, (24, 32), scales=(scale,))
        assert np.abs(canvas[:, 11:-11, 15:-15].astype(int) - crop).max() <= 2, rect
        shifted = np.array([[1.0, 0, 15], [0, 1.0, 11]])  # crop pixel -> canvas pixel
        image_to_canvas = compose_affine(shifted, invert_affine(crop_to_image_affine(pixels_to_box_xywh(rect), (24, 32))))
        ref = crop_sample([image], image_to_canvas, (54, 54))
        diff = np.abs(canvas.astype(int) - ref)
        assert np.percentile(diff, 99) <= (2 if scale == 1 else 4) and diff.mean() < 1.0, (rect, scale)
    assert (canvas[0, :, -10:] == 0).all()  # rect (200, 100, 48, 64): its right margin lies beyond the 256 px frame


def test_same_box_on_three_frames_clamped_at_ends_and_joints_round_trip(tmp_path):
    video = write_fixture_video(tmp_path, "train", 1, two_people(4))
    res = extract_video(video, "train", tmp_path, CFG, "error")
    assert res.crops.ndim == 1 and len(res.rows) == 8  # JPEG bytes (crops.jpeg_quality 95)
    assert res.frames_decoded == 4  # frame-major: every JPEG decoded once
    for row in res.rows:
        t = row["frame_index"]
        expected_frames = [max(t - 1, 0), t, min(t + 1, 3)]
        canvas = res.sample(row["row"])  # train crops keep the frame around them (crops.train_context_scale 1.35)
        assert canvas.shape == (3, 32 + 2 * 11, 24 + 2 * 15, 3) and row["margin_px"] == [15, 11]
        crop = canvas[:, 11:-11, 15:-15]
        assert [int(np.median(crop[k, :, :, 2])) // 10 for k in range(3)] == [(20 + 40 * i) // 10 for i in expected_frames]
        assert row["neighbour_clamped"] == (t in (0, 3))
        # same box on all frames: R and G (x, y gradients) agree across the 3 crops
        assert np.abs(crop[0, :, :, :2].astype(int) - crop[2, :, :, :2]).mean() <= 2
        person = video.frames[t].persons[row["track_id"]]
        c2i = np.array(row["crop_to_image"]).reshape(2, 3)
        joints = np.array(row["joints_crop_xyv"]).reshape(17, 3)
        assert apply_affine(c2i, joints[:, :2]) == pytest.approx(person.keypoints[:, :2])
        exact = crop_box_xywh(person.bbox_xywh, 1.25, (24, 32))
        assert row["box_xywh"] == list(pixels_to_box_xywh(snap_box_to_pixels(exact)))
        assert row["box_xywh"] == pytest.approx(exact, abs=0.5)
    assert res.clamped_neighbours == 4


def test_fast_path_equals_per_sample_reference(tmp_path):
    video = write_fixture_video(tmp_path, "val", 2, two_people(3))
    res = extract_video(video, "val", tmp_path, RAW, "error")
    res_jpeg = extract_video(video, "val", tmp_path, CFG, "error")
    assert res.crops.shape == (6, 3, 32, 24, 3)
    for row in res.rows:
        t = row["frame_index"]
        frames = [read_frame(tmp_path / video.frames[i].file_name) for i in (max(t - 1, 0), t, min(t + 1, 2))]
        i2c = invert_affine(np.array(row["crop_to_image"]).reshape(2, 3))
        ref = crop_sample(frames, i2c, (24, 32))[..., ::-1]  # BGR -> RGB
        assert np.abs(ref.astype(int) - res.sample(row["row"])).max() <= 2
        assert np.abs(ref.astype(int) - res_jpeg.sample(row["row"])).mean() <= 2


def test_one_frame_video_uses_key_frame_three_times(tmp_path):
    video = write_fixture_video(tmp_path, "train", 3, two_people(1))
    res = extract_video(video, "train", tmp_path, CFG, "error")
    assert res.clamped_neighbours == 2 and res.frames_decoded == 1
    crops = res.sample(0)
    assert np.array_equal(crops[0], crops[1]) and np.array_equal(crops[2], crops[1])


def test_unlabeled_frames_and_persons_without_joints(tmp_path):
    persons = two_people(3)
    persons[1] = [make_person(0, (20, 10, 30, 50), n_visible=0)]  # no joints: nothing to train on
    video = write_fixture_video(tmp_path, "train", 4, persons, labeled=[True, True, False])
    res = extract_video(video, "train", tmp_path, CFG, "error")
    assert sorted(r["frame_index"] for r in res.rows) == [0, 0]
    assert res.skipped == Counter(no_visible_joints=1)
    # val: every GT person poseval counts, also in the unlabeled frame 2 (poseval does not read is_labeled);
    # the person without joints is not counted by poseval, so it gets no prediction (17 false positives)
    val = extract_video(video, "val", tmp_path, CFG, "error")
    assert sorted(r["frame_index"] for r in val.rows) == [0, 0, 2, 2]
    assert val.skipped == Counter(no_joints=1) and "person 100 (track 0): keypoints: none annotated" in val.messages[0]


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\xff\xd8" + b"garbage" * 20 + b"\xff\xd9")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("damage, reason, message", [
    (_corrupt, "corrupt_frame", "corrupt JPEG"),
    (_truncate, "corrupt_frame", "truncated JPEG"),
    (Path.unlink, "missing_frame", "missing frame file"),
])
def test_bad_frame_files(tmp_path, damage, reason, message):
    video = write_fixture_video(tmp_path, "train", 5, two_people(4))
    damage(tmp_path / video.frames[3].file_name)
    with pytest.raises(CropInputError, match=f"000003.jpg: {message}"):
        extract_video(video, "train", tmp_path, CFG, "error")
    res = extract_video(video, "train", tmp_path, CFG, "skip")
    assert res.skipped == Counter({reason: 4})  # key frames 2 and 3 need frame 3
    assert sorted(r["frame_index"] for r in res.rows) == [0, 0, 1, 1]


@pytest.mark.parametrize("person, reason, message", [
    (make_person(0, (300, 10, 30, 50), keypoints=np.tile([120.0, 20, 1], (17, 1))), "box_outside",
     "bbox: .* outside the 128x96"),
    (make_person(0, (20, 10, 30, 50), keypoints=np.tile([500.0, 20, 1], (17, 1))), "keypoints_far_outside",
     "keypoints: nose at \\(500, 20\\) is more than 1 image size\\(s\\) outside the 128x96 image"),
    (make_person(0, (20, 10, 30, 50), keypoints=np.tile([30.0, -97.0, 0], (17, 1))), "keypoints_far_outside",
     "keypoints: nose at \\(30, -97\\) is more than 1"),  # v=0 with coordinates: poseval scores it
])
def test_bad_boxes_and_keypoints(tmp_path, person, reason, message):
    persons = two_people(2)
    persons[1][0] = person
    video = write_fixture_video(tmp_path, "val", 6, persons)
    with pytest.raises(CropInputError, match=f"{video.json_path}: .*000001.jpg person 100 .*{message}"):
        extract_video(video, "val", tmp_path, CFG, "error")
    res = extract_video(video, "val", tmp_path, CFG, "skip")
    assert res.skipped == Counter({reason: 1}) and len(res.rows) == 3


def test_zero_area_box_from_detections_and_from_gt(tmp_path):
    from vremd.data.detections import Detection
    video = write_fixture_video(tmp_path, "val", 7, two_people(2))
    dets = {video.frames[0].image_id: [Detection(video.frames[0].image_id, (10.0, 10.0, 0.0, 20.0), 0.9),
                                       Detection(video.frames[0].image_id, (10.0, 10.0, 30.0, 20.0), 0.8)]}
    with pytest.raises(CropInputError, match="bbox: .*zero area"):
        extract_video(video, "val", tmp_path, CFG, "error", dets)
    res = extract_video(video, "val", tmp_path, CFG, "skip", dets)
    assert res.skipped == Counter(box_zero_area=1)
    assert [(r["source"], r["score"], r["track_id"]) for r in res.rows] == [("det", 0.8, -1)]
    # a zero-area GT box is rejected by the json reader, naming the field
    raw = video.json_path.read_text().replace('"bbox":[20,10,30,50]', '"bbox":[20,10,0,50]', 1)
    video.json_path.write_text(raw)
    with pytest.raises(posetrack.PoseTrackFormatError, match=r"annotations\[0\].bbox: width and height"):
        build_crops(tmp_path, tmp_path / "crops", CFG, "error")
    stats = build_crops(tmp_path, tmp_path / "crops", CFG, "skip")
    assert stats["splits"]["val"]["skipped"] == {"bad_json": 1}


def test_store_is_incremental_and_drops_removed_videos(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "crops"
    write_fixture_video(raw, "train", 10, two_people(3))
    write_fixture_video(raw, "val", 11, two_people(2))
    stats = build_crops(raw, out, CFG, "error")
    assert stats["processed"] == ["train/000010_mpii_train", "val/000011_mpii_test"]
    first = read_manifest(out)
    assert len(first) == 10 and set(first["split"]) == {"train", "val"}
    shard = np.load(out / first["shard"][0], mmap_mode="r")
    assert shard.ndim == 1 and shard.dtype == np.uint8
    assert shard_sample(shard, 5, first["jpeg_offsets"][5]).shape == (3, 32 + 2 * 11, 24 + 2 * 15, 3)  # train canvas
    mtime = (out / "train/000010_mpii_train.npy").stat().st_mtime_ns
    # re-run: nothing to do; add a video: only it is extracted
    assert build_crops(raw, out, CFG, "error")["processed"] == []
    write_fixture_video(raw, "train", 12, two_people(2))
    assert build_crops(raw, out, CFG, "error")["processed"] == ["train/000012_mpii_train"]
    assert (out / "train/000010_mpii_train.npy").stat().st_mtime_ns == mtime
    assert len(read_manifest(out)) == 14
    # changing a crop parameter redoes everything; removing a video drops it
    (raw / "annotations/val/000011_mpii_test.json").unlink()
    stats = build_crops(raw, out, CropsConfig(height=32, width=24, enlarge=1.5), "error")
    assert stats["removed"] == ["val/000011_mpii_test"] and len(stats["processed"]) == 2
    manifest = read_manifest(out)
    assert set(manifest["video"]) == {"000010_mpii_train", "000012_mpii_train"}
    assert not (out / "val/000011_mpii_test.npy").exists()
    assert isinstance(manifest, pd.DataFrame) and manifest["row"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    build_crops(raw, out, RAW, "error")  # raw pixels instead of JPEG
    assert np.load(out / "train/000010_mpii_train.npy", mmap_mode="r").shape == (6, 3, 54, 54, 3)  # with margins


def test_val_boxes_from_detection_json(tmp_path):
    import orjson
    video = write_fixture_video(tmp_path, "val", 20, two_people(2))
    dets = [{"image_id": video.frames[1].image_id, "category_id": 1, "bbox": [30, 20, 20, 40], "score": 0.7},
            {"image_id": video.frames[1].image_id, "category_id": 2, "bbox": [30, 20, 20, 40], "score": 0.9},
            {"image_id": 999, "category_id": 1, "bbox": [30, 20, 20, 40], "score": 0.9}]
    (tmp_path / "dets.json").write_bytes(orjson.dumps(dets))
    build_crops(tmp_path, tmp_path / "crops", CFG, "error", val_boxes=str(tmp_path / "dets.json"))
    manifest = read_manifest(tmp_path / "crops")
    assert manifest[["frame_index", "source", "score"]].values.tolist() == [[1, "det", 0.7]]
    from vremd.data.detections import DetectionFormatError
    (tmp_path / "dets.json").write_bytes(orjson.dumps([{"image_id": 1, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(DetectionFormatError, match=r"dets.json: entry 0: bbox: expected 4 finite numbers"):
        build_crops(tmp_path, tmp_path / "crops", CFG, "error", val_boxes=str(tmp_path / "dets.json"))
    (tmp_path / "dets.json").write_bytes(orjson.dumps([{"image_id": 999, "bbox": [1, 2, 3, 4], "score": 1}]))
    with pytest.raises(DetectionFormatError, match=r"dets.json: image_id: none of its 1 image ids \(e.g. 999\) is a val"):
        build_crops(tmp_path, tmp_path / "crops", CFG, "error", val_boxes=str(tmp_path / "dets.json"))


def test_detection_json_boxes_are_cropped_at_or_above_the_score_threshold(tmp_path):
    """DCPose keeps a box unless `score < IMAGE_THRE` (0.2): 0.2 is cropped, 0.1999 is not; the threshold is
    detect.score_threshold, and changing it re-extracts the video."""
    import orjson
    video = write_fixture_video(tmp_path, "val", 20, two_people(2))
    image_id = video.frames[1].image_id
    dets = [{"image_id": image_id, "category_id": 1, "bbox": [30, 20, 20, 40], "score": score}
            for score in (0.2, 0.1999, 0.6)]
    (tmp_path / "dets.json").write_bytes(orjson.dumps(dets))
    build_crops(tmp_path, tmp_path / "crops", CFG, "error", val_boxes=str(tmp_path / "dets.json"), min_box_score=0.2)
    assert read_manifest(tmp_path / "crops")["score"].tolist() == [0.6, 0.2]  # best first
    stats = build_crops(tmp_path, tmp_path / "crops", CFG, "error", val_boxes=str(tmp_path / "dets.json"),
                        min_box_score=0.6)
    assert stats["processed"] == [f"val/{video.name}"] and read_manifest(tmp_path / "crops")["score"].tolist() == [0.6]


def _smooth_jpeg(rng, hw, path: Path) -> None:
    h, w = hw
    coarse = rng.integers(0, 255, (h // 24 + 1, w // 24 + 1, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 98])


@pytest.mark.parametrize("scale", [2, 4])
def test_crop_of_reduced_decode_matches_full_resolution_reference(tmp_path, scale):
    rng = np.random.default_rng(scale)
    _smooth_jpeg(rng, (240, 320), tmp_path / "f.jpg")
    full, reduced = read_frame(tmp_path / "f.jpg"), read_frame(tmp_path / "f.jpg", scale)
    assert reduced.shape == (240 // scale, 320 // scale, 3)
    crop_wh = (24, 32)
    for rect in [(40, 20, 4 * 24, 4 * 32), (33, 17, 101, 135), (-30, -25, 120, 160), (250, 150, 100, 130)]:
        fast = crop_frames([reduced, full], rect, crop_wh, scales=(scale, 1))
        ref = crop_sample([full], invert_affine(crop_to_image_affine(pixels_to_box_xywh(rect), crop_wh)), crop_wh)[0]
        diff = np.abs(fast[0].astype(int) - ref)
        # image position of each crop pixel; within `scale` pixels of the image border the
        # reduced pixel blends with the black outside over a wider band: compare away from it
        col, row, rw, rh = rect
        x = col - 0.5 + (np.arange(24) + 0.5) * rw / 24
        y = row - 0.5 + (np.arange(32) + 0.5) * rh / 32
        inside_x, inside_y = (x >= scale) & (x <= 320 - 1 - scale), (y >= scale) & (y <= 240 - 1 - scale)
        away = np.logical_or(inside_y[:, None] & inside_x[None, :], ~(((x >= -1) & (x <= 320))[None, :]
                                                                       & ((y >= -1) & (y <= 240))[:, None]))
        assert diff[away].mean() < 2.0 and np.percentile(diff[away], 99) <= 8, (rect, diff[away].mean())
        assert diff.mean() < 4.0, rect
        assert np.abs(fast[1].astype(int) - ref)[1:-1, 1:-1].max() <= 2, rect  # scale 1 in the same call
    # outside the image stays black in the reduced path too
    fast = crop_frames([reduced], (-96, 0, 96, 128), crop_wh, scales=(scale,))
    assert (fast[0, :, :11] == 0).all()


def test_reduced_decode_keeps_boxes_and_pixels_of_full_decode(tmp_path):
    small = CropsConfig(height=12, width=9, workers=1)  # boxes >= 4x the crop: frames decode at 1/4
    video = write_fixture_video(tmp_path, "train", 30, two_people(4))
    fast = extract_video(video, "train", tmp_path, small, "error", reduced_decode="always")
    full = extract_video(video, "train", tmp_path, small, "error", reduced_decode="never")
    assert fast.decode_scales == Counter({4: 4}) and full.decode_scales == Counter({1: 4})
    assert fast.frames_decoded == full.frames_decoded == 4
    assert [{k: v for k, v in r.items() if k != "jpeg_offsets"} for r in fast.rows] == \
        [{k: v for k, v in r.items() if k != "jpeg_offsets"} for r in full.rows]
    for row in fast.rows:
        assert np.abs(fast.sample(row["row"]).astype(int) - full.sample(row["row"])).mean() <= 2.0
    # one small box forces full resolution on its frame and the frames its samples need
    persons = two_people(4)
    persons[1].append(make_person(2, (60, 40, 8, 12)))
    video = write_fixture_video(tmp_path, "train", 31, persons)
    mixed = extract_video(video, "train", tmp_path, small, "error", reduced_decode="always")
    assert mixed.decode_scales == Counter({1: 3, 4: 1})  # frames 0, 1, 2 full; frame 3 at 1/4
    # "auto" reduces only frames few crops are taken from: one person per frame here, not two
    one = write_fixture_video(tmp_path, "train", 32, [[make_person(0, (20, 10, 30, 50))] for _ in range(4)])
    assert extract_video(one, "train", tmp_path, small, "error").decode_scales == Counter({4: 4})
    assert extract_video(video, "train", tmp_path, small, "error").decode_scales == Counter({1: 4})
    with pytest.raises(ValueError, match="reduced_decode: expected auto"):
        extract_video(video, "train", tmp_path, small, "error", reduced_decode="sometimes")


def _window_frames(crops: np.ndarray) -> list[int]:
    """Which fixture frames a (3, H, W, 3) RGB window shows: frame t has blue 20 + 40 t (`frame_pixels`)."""
    return [int(round((np.median(crops[k, :, :, 2]) - 20) / 40)) for k in range(3)]


def _rewrite_images(video: posetrack.Video, keep_listed: list[int]) -> posetrack.Video:
    """The video's json with only the images at positions `keep_listed`, listed in that order (and their persons)."""
    data = json.loads(video.json_path.read_text())
    images = [data["images"][k] for k in keep_listed]
    ids = {im["id"] for im in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    video.json_path.write_text(json.dumps(data))
    return posetrack.read_video(video.json_path, video.split)


def test_a_json_listing_images_out_of_frame_order_crops_the_real_neighbours(tmp_path):
    """Issue 32 item 7: the images list is not in frame order; t-1 and t+1 are still the frames numbered so."""
    video = write_fixture_video(tmp_path, "val", 5, two_people(5))
    expected = extract_video(video, "val", tmp_path, RAW, "error")
    shuffled = _rewrite_images(video, [3, 0, 4, 2, 1])
    got = extract_video(shuffled, "val", tmp_path, RAW, "error")
    keys = ("frame_index", "image_id", "file_name", "track_id", "box_xywh", "neighbour_clamped", "crop_to_image")
    assert [{k: r[k] for k in keys} for r in got.rows] == [{k: r[k] for k in keys} for r in expected.rows]
    np.testing.assert_array_equal(got.crops, expected.crops)
    for row in got.rows:
        t = row["frame_index"]
        assert row["file_name"].endswith(f"{t:06d}.jpg")
        assert _window_frames(got.sample(row["row"])) == [max(t - 1, 0), t, min(t + 1, 4)]


def test_a_neighbour_the_json_does_not_list_is_clamped_never_a_farther_frame(tmp_path):
    """A json listing every 2nd frame: the neighbours of frame 2 are frames 1 and 3, which it does not list, so
    the key frame stands in for them (as at the video's ends), never frames 0 and 4."""
    video = write_fixture_video(tmp_path, "val", 6, two_people(5))
    sparse = _rewrite_images(video, [0, 2, 4])
    assert sparse.frame_numbers == (0, 2, 4)
    res = extract_video(sparse, "val", tmp_path, RAW, "error")
    windows = {(r["file_name"][-10:-4], r["track_id"]): _window_frames(res.sample(r["row"])) for r in res.rows}
    assert windows == {(f"{t:06d}", p): [t, t, t] for t in (0, 2, 4) for p in (0, 1)}
    assert all(r["neighbour_clamped"] for r in res.rows) and res.clamped_neighbours == 6
