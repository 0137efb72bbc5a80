"""pipeline/protocol_switches.py's own parts (its trainings are the benchmark, not a test): the simulated detector
boxes that give OKS-NMS something to remove, and the paired table, against a hand-computed t interval."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline import protocol_switches as ps
from vremd.config import ConfigError, load_config
from vremd.data.posetrack import read_video
from vremd.eval.posetrack_ap import COLUMNS, MEAN


def test_simulated_boxes_cover_every_labeled_person_with_duplicates_and_false_positives(smoke_data):
    gt_boxes = Counter()
    for path in sorted(smoke_data.gt_dir.glob("*.json")):
        for frame in read_video(path, "val").frames:
            if frame.is_labeled:
                gt_boxes[frame.image_id] += sum(p.bbox_xywh is not None for p in frame.persons)
    boxes = ps.simulated_detections(smoke_data.gt_dir, seed=0)
    per_image = Counter(b["image_id"] for b in boxes)
    assert set(per_image) <= set(gt_boxes)  # only labeled frames
    assert all(per_image[i] >= n for i, n in gt_boxes.items() if n)  # every GT person has a box
    extra = sum(per_image.values()) - sum(gt_boxes.values())
    assert extra > 0.3 * sum(gt_boxes.values())  # looser duplicates (half the persons) and false positives
    assert all(0.0 < b["score"] <= 1.0 and b["bbox"][2] > 0 and b["bbox"][3] > 0 for b in boxes)
    assert ps.simulated_detections(smoke_data.gt_dir, seed=0) == boxes  # one seed, one box file
    assert ps.simulated_detections(smoke_data.gt_dir, seed=1) != boxes


def _scores(reference: float, shifts: dict[str, tuple[float, float, float]]) -> dict[int, dict[str, dict[str, float]]]:
    labels = {"reference, GT boxes": (0.0, 0.0, 0.0), "reference, simulated boxes": (-1.0, -1.0, -1.0), **shifts}
    return {seed: {label: {col: reference + seed + by_seed[seed] for col in COLUMNS} for label, by_seed in labels.items()}
            for seed in range(3)}


def test_the_table_pairs_each_switch_with_its_reference_by_seed():
    table = ps.table(_scores(30.0, {
        "flip test, GT boxes": (0.5, 0.7, 0.6),  # mean +0.6, sd 0.1: t(0.975, 2) 4.303 x 0.1 / sqrt(3) = 0.248
        "OKS-NMS, simulated boxes": (-1.0, -0.5, -1.5),  # -1 + (0, 0.5, -0.5): mean 0, not resolved
        "old augmentation, GT boxes": (-2.0, -2.0, -2.0),  # zero spread, -2: resolved
        "all three, simulated boxes": (-1.0, 0.0, -2.0)}))  # against the simulated reference: 0, +1, -1
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["flip test on"].startswith("| flip test on | +0.60 | [+0.35, +0.85] | resolved | +0.50 / +0.70 / +0.60 |")
    assert " | +0.00 | [-1.24, +1.24] | not resolved | +0.00 / +0.50 / -0.50 |" in rows["OKS-NMS on (simulated detector boxes)"]
    assert " | -2.00 | [-2.00, -2.00] | resolved | " in rows["old augmentation"]
    assert " | +0.00 | [-2.48, +2.48] | not resolved | +0.00 / +1.00 / -1.00 |" in rows[
        "all three (before issue 28), simulated boxes"]
    assert len(rows["flip test on"].split(" | ")) == 5 + len(COLUMNS) - 1  # a column per joint group besides Mean
    assert "reference, GT boxes: 30.00 / 31.00 / 32.00" in table


def test_the_switches_are_the_ones_issue_28_turned_off():
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    cfg = load_config(params, profile="demo", overrides=[*ps.OLD_AUGMENT, ps.FLIP, ps.OKS_NMS])
    assert (cfg.augment.sampling, cfg.augment.borders) == ("uniform", "crop")
    assert cfg.train.flip_test and cfg.detect.postprocess == "oks_nms"
    assert load_config(params, profile="demo", overrides=[ps.NO_NMS]).detect.postprocess == "none"  # the reference
    now = load_config(params, profile="demo")  # the reference: what the demo profile does since issue 28
    assert (now.augment.sampling, now.augment.borders, now.train.flip_test) == ("dcpose", "frame", False)
    assert MEAN == COLUMNS[-1]
    with pytest.raises(ConfigError, match="augment.sampling"):
        load_config(params, profile="demo", overrides=["augment.sampling=bogus"])


def test_a_result_is_reused_only_for_the_same_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "write.py").write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(sys.argv[2])\n")
    result, log = tmp_path / "ap.json", tmp_path / "log.txt"
    ps._run_once(["write.py", str(result), "1"], result, log)
    assert result.read_text() == "1"
    result.write_text("kept")
    ps._run_once(["write.py", str(result), "1"], result, log)  # the same command: reused
    assert result.read_text() == "kept"
    ps._run_once(["write.py", str(result), "2"], result, log)  # another command (e.g. another --set): made again
    assert result.read_text() == "2"
    (tmp_path / "other.json").write_text("made before argv files existed")
    ps._run_once(["write.py", str(tmp_path / "other.json"), "3"], tmp_path / "other.json", log)
    assert (tmp_path / "other.json").read_text() == "3"
    with pytest.raises(SystemExit, match="failed"):
        ps._run_once(["missing.py"], tmp_path / "x.json", log)
