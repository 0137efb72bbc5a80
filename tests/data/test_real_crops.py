"""Crops on real pixels: the three real 1920x1080 PoseTrack18 val frames of tests/fixtures/poseval_real (see its
SOURCE.md), cut with their GT boxes (the crops library, as the stage calls it) and with MMPose's 278 real person
detections (`pipeline/crops.py` with `data.val_boxes` the detection json).

Facts checked against the frames and files themselves, not against our own geometry: every GT person poseval
counts gets a sample; each crop's rectangle is its box enlarged by 25% and widened to the crop's aspect, computed
here by hand; each stored crop equals a direct cv2 warp of the fully decoded frame up to JPEG and reduced-decode
error, and matches it better than the same warp shifted by one crop pixel; detections scoring below
`detect.score_threshold` get no crop; a head annotated above the frame stays a joint of its sample.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline import crops as crops_stage
from poseval_fixtures import POSEVAL_REAL, fixture_files
from vremd.config import CropsConfig, DetectConfig
from vremd.data.crop_store import build_crops, read_manifest
from vremd.data.joints import JOINT_NAMES
from vremd.data.shards import shard_sample

DETECTIONS = POSEVAL_REAL / "detections" / "test_posetrack18_human_detections.json"
IMAGE_WH = (1920, 1080)
OUT_OF_FRAME = (1012834000010, "head_top", (424.0380249, -24.93852425))  # annotated 25 px above the frame


@pytest.fixture(scope="module")
def real_raw(tmp_path_factory) -> Path:
    """data/raw with the real frames in PoseTrack18 layout: raw/posetrack18/{annotations,images}/val."""
    dataset = tmp_path_factory.mktemp("real") / "raw" / "posetrack18"
    (dataset / "annotations" / "val").mkdir(parents=True)
    for gt in fixture_files(POSEVAL_REAL / "gt"):
        shutil.copy(gt, dataset / "annotations" / "val")
    assert len(fixture_files(POSEVAL_REAL / "images", "val/*/000000.jpg")) == 3
    (dataset / "images").symlink_to(POSEVAL_REAL / "images", target_is_directory=True)  # read only
    return dataset.parent


def _gt_annotations() -> list[dict]:
    return [a for gt in fixture_files(POSEVAL_REAL / "gt") for a in json.loads(gt.read_text())["annotations"]]


def _enlarged(box_xywh, crop_wh: tuple[int, int], enlarge: float = 1.25) -> np.ndarray:
    """The box clipped to the frame, widened to the crop's aspect about its centre, then enlarged: by hand."""
    x, y, w, h = box_xywh
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, IMAGE_WH[0]), min(y + h, IMAGE_WH[1])
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    aspect = crop_wh[0] / crop_wh[1]
    w, h = (w, w / aspect) if w > aspect * h else (h * aspect, h)
    return np.array([cx - w * enlarge / 2, cy - h * enlarge / 2, w * enlarge, h * enlarge])


def _val_rows(crops: Path) -> pd.DataFrame:
    rows = read_manifest(crops)
    return rows[rows["split"] == "val"].reset_index(drop=True)


def _check_pixels(crops: Path, raw: Path, rows: pd.DataFrame) -> None:
    """Each stored crop (every frame of the sample) against cv2.warpAffine of the fully decoded frame."""
    frames: dict[str, np.ndarray] = {}
    for _, row in rows.iterrows():
        crop = shard_sample(np.load(crops / row["shard"], mmap_mode="r"), int(row["row"]), row["jpeg_offsets"])
        name = row["file_name"]
        if name not in frames:
            frames[name] = cv2.cvtColor(cv2.imread(str(raw / "posetrack18" / name)), cv2.COLOR_BGR2RGB)
        image_to_crop = cv2.invertAffineTransform(np.asarray(row["crop_to_image"]).reshape(2, 3))
        h, w = crop.shape[1:3]

        def difference(dx: float, dy: float) -> float:
            shifted = image_to_crop + [[0, 0, dx], [0, 0, dy]]
            warp = cv2.warpAffine(frames[name], shifted, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # (H, W, 3)
            return float(np.abs(crop.astype(np.int16) - warp[None].astype(np.int16)).mean())

        exact = difference(0, 0)
        assert exact < 4.0, f"{name} person {row['person_id']}: mean |difference| {exact:.2f} / 255"  # JPEG q95
        shifted = min(difference(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
        assert exact < shifted, f"{name} person {row['person_id']}: a crop one pixel off matches better"


def test_gt_boxes_on_real_frames(real_raw, tmp_path):
    cfg = CropsConfig(workers=1)  # the paper's 256x192, JPEG q95
    stats = build_crops(real_raw / "posetrack18", tmp_path / "crops", cfg, "error", "gt", progress=False)
    rows = _val_rows(tmp_path / "crops")
    counted = {a["id"]: a for a in _gt_annotations() if any(v != 0 for v in a["keypoints"])}  # poseval's persons
    assert len(counted) == 14 and stats["splits"]["val"]["skipped"] == {}
    assert sorted(rows["person_id"]) == sorted(counted) and set(rows["source"]) == {"gt"}
    for _, row in rows.iterrows():  # the rectangle: on whole pixels, within half a pixel of the enlarged box
        expected = _enlarged(counted[row["person_id"]]["bbox"], (cfg.width, cfg.height))
        assert np.abs(np.asarray(row["box_xywh"]) - expected).max() <= 0.5 + 1e-9, (row["person_id"], expected)
    _check_pixels(tmp_path / "crops", real_raw, rows)

    person, joint, image_xy = OUT_OF_FRAME  # kept as data: visible, and where the annotation puts it
    row = rows[rows["person_id"] == person].iloc[0]
    joints = np.asarray(row["joints_crop_xyv"]).reshape(len(JOINT_NAMES), 3)  # (J, 3) crop pixels + visibility
    crop_to_image = np.asarray(row["crop_to_image"]).reshape(2, 3)
    k = JOINT_NAMES.index(joint)
    assert joints[k, 2] == 1 and np.allclose(crop_to_image[:, :2] @ joints[k, :2] + crop_to_image[:, 2], image_xy)
    assert 0 <= joints[k, 1] < cfg.height  # above the frame, inside the enlarged crop: a training target
    crop = shard_sample(np.load(tmp_path / "crops" / row["shard"], mmap_mode="r"), int(row["row"]), row["jpeg_offsets"])
    above = int(np.floor((-0.5 - row["box_xywh"][1]) * cfg.height / row["box_xywh"][3]))  # crop rows above the frame
    assert above > 10 and crop[:, :above - 2].max() <= 8  # black (JPEG ringing aside) where the frame has no pixels


def test_detector_boxes_on_real_frames_drop_those_below_the_threshold(real_raw, tmp_path, write_params, capsys):
    """The crops stage with `data.val_boxes` = MMPose's real detections: 186 of 278 score at least 0.2."""
    threshold = DetectConfig().score_threshold
    detections = json.loads(DETECTIONS.read_text())
    kept = sorted((d["image_id"], round(d["score"], 6)) for d in detections if d["score"] >= threshold)
    assert len(detections) == 278 and len(kept) == 186 and min(d["score"] for d in detections) < threshold
    paper = CropsConfig()  # 256x192: the crops are the model's input, so the smoke model takes that size here
    params = write_params(tmp_path, data__source="posetrack18", data__val_boxes=str(DETECTIONS),
                          crops__height=paper.height, crops__width=paper.width, model__img_height=paper.height,
                          model__img_width=paper.width)
    rc = crops_stage.main(["--params", str(params), "--raw", str(real_raw), "--out", str(tmp_path / "crops"),
                           "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rows = _val_rows(tmp_path / "crops")
    crop_wh = (paper.width, paper.height)
    assert set(rows["source"]) == {"det"} and rows["score"].min() >= threshold
    assert sorted(zip(rows["image_id"], rows["score"].round(6))) == kept  # every box above it, none below
    boxes = {(d["image_id"], round(d["score"], 6)): d["bbox"] for d in detections}
    for _, row in rows.iterrows():
        expected = _enlarged(boxes[row["image_id"], round(row["score"], 6)], crop_wh)
        assert np.abs(np.asarray(row["box_xywh"]) - expected).max() <= 0.5 + 1e-9, expected
    _check_pixels(tmp_path / "crops", real_raw, rows)
