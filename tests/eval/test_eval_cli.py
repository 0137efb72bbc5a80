"""`python -m vremd.eval GT_DIR PRED_DIR`: json output, readable table, and exit 2 with clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poseval_fixtures import poseval_real
from vremd.eval.__main__ import main

REAL = poseval_real()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path):
    """Writable copies of the real GT and perturbed predictions."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(REAL / "gt", gt)
    shutil.copytree(REAL / "perturbed" / "pred", pred)
    return gt, pred


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output_subprocess():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "vremd.eval", str(REAL / "gt"), str(REAL / "perturbed" / "pred"),
                           "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out["table"]) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"]
    assert round(out["table"]["Total"], 2) == 81.16
    assert list(out["per_joint_ap"])[0] == "right_ankle" and "neck" in out["per_joint_ap"]
    assert len(out["per_joint_ap"]) == 15


def test_json_null_for_nan_and_coco(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    gt_doc = json.loads((REAL / "gt" / "009473_mpii_test.json").read_text())
    for a in gt_doc["annotations"]:
        a["keypoints"][0:3] = [0, 0, 0]  # GT has no nose at all
    (gt / "009473_mpii_test.json").write_text(json.dumps(gt_doc))
    shutil.copy(REAL / "copy" / "pred" / "009473_mpii_test.json", pred)  # predicts the nose: NaN
    code, out, _ = run_main(capsys, gt, pred, "--json", "--coco")
    assert code == 0
    parsed = json.loads(out)
    assert parsed["per_joint_ap"]["nose"] is None and parsed["table"]["Head"] is None
    assert parsed["table"]["Total"] == pytest.approx(100.0)
    assert parsed["coco"]["AP"] is not None and parsed["coco"]["APm"] is None


def test_readable_table(capsys):
    code, out, _ = run_main(capsys, REAL / "gt", REAL / "perturbed" / "pred")
    assert code == 0
    assert "Total" in out and " 81.2 \\\\" in out and "head_top" in out


def test_protocol_flag(capsys):
    code, out, _ = run_main(capsys, REAL / "gt", REAL / "copy" / "pred", "--json", "--protocol", "posetrack21")
    assert code == 0 and json.loads(out)["table"]["Total"] == pytest.approx(100.0)


def _expect_error(capsys, *argv, match: str) -> str:
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert match in err, err
    return err


def test_missing_prediction_file(dirs, capsys):
    gt, pred = dirs
    (pred / "009473_mpii_test.json").unlink()
    _expect_error(capsys, gt, pred, match="009473_mpii_test.json: prediction file does not exist")


def test_missing_directory(tmp_path, capsys):
    _expect_error(capsys, tmp_path / "nope", tmp_path, match="GT directory does not exist")


def test_empty_gt_directory(tmp_path, capsys):
    _expect_error(capsys, tmp_path, tmp_path, match="no *.json GT files")


def test_different_number_of_frames(dirs, capsys):
    gt, pred = dirs
    doc = json.loads((pred / "003418_mpii_test.json").read_text())
    doc["images"].append({**doc["images"][0], "id": 5, "file_name": "images/val/003418_mpii_test/000001.jpg"})
    (pred / "003418_mpii_test.json").write_text(json.dumps(doc))
    err = _expect_error(capsys, gt, pred, match="003418_mpii_test.json: images: 2 prediction frames but 1 GT frames")
    assert "frames pair by position" in err


def test_truncated_json(dirs, capsys):
    gt, pred = dirs
    path = pred / "012834_mpii_test.json"
    path.write_text(path.read_text()[:200])
    _expect_error(capsys, gt, pred, match="012834_mpii_test.json: not valid json")


def test_bad_keypoint_arrays(dirs, capsys):
    gt, pred = dirs
    doc = json.loads((pred / "009473_mpii_test.json").read_text())
    doc["annotations"][1]["keypoints"] = doc["annotations"][1]["keypoints"][:-3]
    (pred / "009473_mpii_test.json").write_text(json.dumps(doc))
    _expect_error(capsys, gt, pred, match="009473_mpii_test.json: annotations[1].keypoints: expected 51 numbers, found 48")
    doc["annotations"][1]["keypoints"] = ["x"] * 51
    (pred / "009473_mpii_test.json").write_text(json.dumps(doc))
    _expect_error(capsys, gt, pred, match="annotations[1].keypoints: non-numeric value")


def test_missing_track_id_and_bad_file_name(dirs, capsys):
    gt, pred = dirs
    doc = json.loads((pred / "009473_mpii_test.json").read_text())
    del doc["annotations"][0]["track_id"]
    (pred / "009473_mpii_test.json").write_text(json.dumps(doc))
    _expect_error(capsys, gt, pred, match="annotations[0].track_id: missing")
    doc = json.loads((REAL / "perturbed" / "pred" / "009473_mpii_test.json").read_text())
    doc["images"][0]["file_name"] = "images/val/video/000000.jpg"
    (pred / "009473_mpii_test.json").write_text(json.dumps(doc))
    _expect_error(capsys, gt, pred, match="images[0]: file_name: folder 'video'")


def test_duplicate_track_id_only_rejected_with_strict(dirs, capsys):
    gt, pred = dirs
    doc = json.loads((pred / "009473_mpii_test.json").read_text())
    for a in doc["annotations"]:
        a["track_id"] = 7
    (pred / "009473_mpii_test.json").write_text(json.dumps(doc))
    code, _, _ = run_main(capsys, gt, pred, "--json")
    assert code == 0  # DCPose's copy of poseval accepts repeated track ids
    _expect_error(capsys, gt, pred, "--strict", match="009473_mpii_test.json: images[0]: track_id: repeated")
