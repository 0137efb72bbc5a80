"""Real PoseTrack18 annotations through download -> crops -> preprocess -> evaluate, as a new user runs them.

tests/fixtures/poseval_real/gt/ holds three real PoseTrack18 val annotation files (verbatim, see its
SOURCE.md): real ignore regions, 14 persons, and person 1012834000010 whose head_top is annotated at
(424.0, -24.9), above the 1920x1080 frame. The frames themselves cannot be shipped, so the test writes
real JPEG files of the real size at the paths the annotations give, packs a PoseTrack18 archive and
runs the stages with a smoke model. The pipeline's AP must be `python -m vremd.eval`'s on the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import orjson
import pandas as pd
import pytest

from pipeline import crops, download, evaluate, preprocess
from vremd.data.boxes import clip_box_xywh, crop_rect, pixels_to_box_xywh
from vremd.data.posetrack import read_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "predict"))
from predict_fixtures import save_smoke_checkpoint  # noqa: E402
from reliability_fixtures import REPO, stage_env  # noqa: E402

REAL_GT = Path(__file__).resolve().parents[1] / "fixtures" / "poseval_real" / "gt"
OUT_OF_FRAME_PERSON = 1012834000010  # head_top at (424.0380249, -24.93852425)

pytestmark = pytest.mark.slow


def _frame(path: Path, seed: int, hw: tuple[int, int]) -> None:
    """A real 1920x1080 JPEG: smooth colour ramps plus noise (PoseTrack frames are JPEGs of this size)."""
    h, w = hw
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    image = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 40 * seed % 255)], -1)
    image = np.clip(image + rng.integers(-20, 21, (h, w, 1)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85])


def _archive(root: Path) -> Path:
    """A PoseTrack18 archive of the real annotations: val verbatim, and the same files as train."""
    tree = root / "src" / "posetrack_data"
    for i, gt in enumerate(sorted(REAL_GT.glob("*.json"))):
        data = json.loads(gt.read_text())
        for image in data["images"]:
            _frame(tree / image["file_name"], i, (image["height"], image["width"]))
            _frame(tree / image["file_name"].replace("images/val/", "images/train/"), i, (image["height"], image["width"]))
        (tree / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        (tree / "annotations" / "val" / gt.name).write_bytes(gt.read_bytes())
        train = gt.read_text().replace("images/val/", "images/train/")
        (tree / "annotations" / "train").mkdir(parents=True, exist_ok=True)
        (tree / "annotations" / "train" / gt.name).write_text(train)
    archive = root / "posetrack18.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree.parent, arcname=".")
    return archive


def _annotated_persons() -> list[int]:
    """Annotation ids of the real GT persons with at least one annotated joint (poseval: not (0, 0, 0))."""
    ids = []
    for gt in sorted(REAL_GT.glob("*.json")):
        for ann in json.loads(gt.read_text())["annotations"]:
            if any(v != 0 for v in ann["keypoints"]):
                ids.append(ann["id"])
    return ids


def _official(gt_dir: Path, pred_dir: Path) -> dict:
    """`python -m vremd.eval GT PRED --json` in a subprocess: the evaluator as a user calls it."""
    out = subprocess.run([sys.executable, "-m", "vremd.eval", str(gt_dir), str(pred_dir), "--json"],
                         capture_output=True, text=True, cwd=REPO, env=stage_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _stages(root: Path, tag: str, *sets: str) -> tuple[dict, str]:
    """crops -> preprocess -> evaluate under `tag`; returns (metrics json, evaluate's stdout)."""
    params = ["--params", str(root / "params.yaml"), *[a for s in sets for a in ("--set", s)]]
    assert crops.main(params + ["--raw", str(root / "raw"), "--out", str(root / f"crops_{tag}"), "--no-progress"]) == 0
    assert preprocess.main(["--crops", str(root / f"crops_{tag}"), "--out", str(root / f"index_{tag}"),
                            "--stats", str(root / f"dataset_{tag}.json")]) == 0
    return _evaluate(root, tag, params)


def _evaluate(root: Path, tag: str, params: list[str]) -> tuple[dict, str]:
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = evaluate.main(params + ["--model", str(root / "final.pt"), "--index", str(root / f"index_{tag}"),
                                     "--raw", str(root / "raw"), "--out", str(root / f"reports_{tag}"),
                                     "--metrics", str(root / f"ap_{tag}.json"), "--no-progress"])
    assert rc == 0, stdout.getvalue()
    return orjson.loads((root / f"ap_{tag}.json").read_bytes()), stdout.getvalue()


def _assert_same_ap(ours: dict, official: dict) -> None:
    assert ours["Mean"] == pytest.approx(official["table"]["Total"], abs=1e-4)
    for name, ap in official["per_joint_ap"].items():
        assert (ours["per_joint"][name] is None) == (ap is None), name
        if ap is not None:
            assert ours["per_joint"][name] == pytest.approx(ap, abs=1e-4), name


@pytest.fixture(scope="module")
def real(write_params, tmp_path_factory):
    root = tmp_path_factory.mktemp("real18")
    archive = _archive(root)
    write_params(root, data__source="posetrack18", data__urls=[str(archive)], data__on_bad_input="error")
    assert download.main(["--params", str(root / "params.yaml"), "--out", str(root / "raw"),
                          "--cache", str(root / "cache"), "--no-progress"]) == 0
    save_smoke_checkpoint(root / "final.pt")
    return root


def test_real_annotations_with_gt_boxes(real):
    """`on_bad_input: error` (the demo default) accepts the real files; every scored person is predicted."""
    ours, out = _stages(real, "gt")
    index = pd.read_parquet(real / "index_gt" / "val.parquet")
    expected = _annotated_persons()
    assert len(index) == len(expected) == 14 and sorted(index["person_id"]) == sorted(expected)
    row = index[index["person_id"] == OUT_OF_FRAME_PERSON].iloc[0]  # kept, with its out-of-frame head_top
    joints = np.asarray(row["joints_crop_xyv"]).reshape(17, 3)
    c2i = np.asarray(row["crop_to_image"]).reshape(2, 3)
    assert joints[2, 2] == 1 and np.allclose(joints[2, :2] * np.diag(c2i[:, :2]) + c2i[:, 2], (424.0380249, -24.93852425))
    assert ours["unpredicted_persons"] == 0
    assert "0 GT person(s) without a prediction" in out
    official = _official(real / "raw" / "posetrack18" / "annotations" / "val", real / "reports_gt" / "predictions")
    _assert_same_ap(ours, official)
    video = read_video(real / "reports_gt" / "predictions" / "012834_mpii_test.json")
    assert len(video.frames[0].persons) == 11


def test_detector_boxes_are_taken_as_given(real):
    rng = np.random.default_rng(0)
    dets = []
    for gt in sorted(REAL_GT.glob("*.json")):
        data = json.loads(gt.read_text())
        size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            box = [x + rng.normal(0, 0.05 * w), y + rng.normal(0, 0.05 * h), w * rng.uniform(0.9, 1.1),
                   h * rng.uniform(0.9, 1.1)]
            dets.append({"image_id": ann["image_id"], "category_id": 1, "bbox": box,
                         "score": round(float(rng.uniform(0.3, 1.0)), 6), "_size": size[ann["image_id"]]})
    (real / "dets.json").write_text(json.dumps([{k: v for k, v in d.items() if k != "_size"} for d in dets]))
    ours, _ = _stages(real, "det", f"data.val_boxes={real / 'dets.json'}")
    index = pd.read_parquet(real / "index_det" / "val.parquet")
    assert len(index) == len(dets) and (index["source"] == "det").all()
    crop_wh = (48, 64)  # the smoke profile's crops
    got = sorted((int(r.image_id), round(float(r.score), 6), tuple(np.round(r.box_xywh, 6))) for r in index.itertuples())
    want = sorted((d["image_id"], d["score"], tuple(np.round(pixels_to_box_xywh(
        crop_rect(clip_box_xywh(d["bbox"], d["_size"]), 1.25, crop_wh)), 6))) for d in dets)
    assert got == want  # each detection's own box (clipped, enlarged 25%) and score, none added or lost
    official = _official(real / "raw" / "posetrack18" / "annotations" / "val", real / "reports_det" / "predictions")
    _assert_same_ap(ours, official)


def test_a_val_person_without_a_prediction_is_named(real):
    """A val frame that cannot be read: `error` stops naming it; `skip` goes on and evaluate names the
    two persons poseval still counts (they cost recall in the AP it reports)."""
    frame = real / "raw" / "posetrack18" / "images" / "val" / "009473_mpii_test" / "000000.jpg"
    saved = frame.read_bytes()
    frame.unlink()
    try:
        params = ["--params", str(real / "params.yaml")]
        assert crops.main(params + ["--raw", str(real / "raw"), "--out", str(real / "crops"), "--no-progress"]) == 1
        ours, out = _stages(real, "skip", "data.on_bad_input=skip")
    finally:
        frame.write_bytes(saved)
    assert ours["unpredicted_persons"] == 2
    assert (real / "reports_skip" / "unpredicted_persons.txt").read_text().splitlines()[1:] == [
        "  009473_mpii_test frame 0 (image 10094730000) track 0 person 1009473000000",
        "  009473_mpii_test frame 0 (image 10094730000) track 1 person 1009473000001"]
    assert "2 GT person(s) that poseval counts have no prediction" in out
    assert "009473_mpii_test frame 0 (image 10094730000) track 1 person 1009473000001" in out
    official = _official(real / "raw" / "posetrack18" / "annotations" / "val", real / "reports_skip" / "predictions")
    _assert_same_ap(ours, official)


def test_predict_on_a_five_frame_video_with_the_real_boxes(real, tmp_path):
    """`python -m vremd.predict` on a 5-frame 1920x1080 video whose frames carry the 11 real persons of
    012834_mpii_test: it writes PoseTrack json that `python -m vremd.eval` reads, and an overlay video."""
    data = json.loads((REAL_GT / "012834_mpii_test.json").read_text())
    (image,), persons = data["images"], data["annotations"]
    images, annotations = [], []
    for t in range(5):  # the real frame's annotation on 5 consecutive frames
        images.append({**image, "id": image["id"] + t, "frame_id": image["id"] + t,
                       "file_name": image["file_name"].replace("000000.jpg", f"{t:06d}.jpg")})
        annotations += [{**p, "image_id": image["id"] + t, "id": p["id"] + 100 * t} for p in persons]
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    (gt_dir / "012834_mpii_test.json").write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    mp4 = tmp_path / "012834_mpii_test.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 25, (image["width"], image["height"]))
    for t in range(5):
        _frame(tmp_path / "frame.jpg", t, (image["height"], image["width"]))
        writer.write(cv2.imread(str(tmp_path / "frame.jpg")))
    writer.release()
    out = subprocess.run([sys.executable, "-m", "vremd.predict", str(mp4), "--boxes", str(gt_dir / "012834_mpii_test.json"),
                          "--checkpoint", str(real / "final.pt"), "--out", str(pred_dir / "012834_mpii_test.json"),
                          "--overlay", str(tmp_path / "overlay.mp4"), "--quiet"],
                         capture_output=True, text=True, cwd=REPO, env=stage_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "5 frames, 55 person crops" in out.stdout
    pred = read_video(pred_dir / "012834_mpii_test.json")
    assert [len(f.persons) for f in pred.frames] == [11] * 5
    assert [f.file_name for f in pred.frames] == [i["file_name"] for i in images]
    official = _official(gt_dir, pred_dir)
    assert official["table"]["Total"] is not None and 0 <= official["table"]["Total"] <= 100
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    shapes = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        shapes.append(frame.shape)
    cap.release()
    assert shapes == [(image["height"], image["width"], 3)] * 5


def test_gt_box_and_detector_box_ap_side_by_side(real):
    for tag, sets in (("gt", ()), ("det", (f"data.val_boxes={real / 'dets.json'}",))):
        if not (real / f"index_{tag}").is_dir():
            if tag == "det":
                test_detector_boxes_are_taken_as_given(real)
            else:
                _stages(real, tag, *sets)
    gt, _ = _evaluate(real, "gt", ["--params", str(real / "params.yaml")])
    det, _ = _evaluate(real, "det", ["--params", str(real / "params.yaml")])
    both, out = _evaluate(real, "det", ["--params", str(real / "params.yaml"), "--also-index", str(real / "index_gt")])
    assert both["boxes"] == "det" and gt["boxes"] == "gt"
    assert set(both["by_boxes"]) == {"det", "gt"}
    assert both["by_boxes"]["det"]["Mean"] == det["Mean"] and both["by_boxes"]["gt"]["Mean"] == gt["Mean"]
    assert "| GT boxes |" in out and "| detector boxes |" in out
