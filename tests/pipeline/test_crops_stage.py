"""Stages `crops` and `preprocess` through their CLIs: outputs, incremental re-run, bad-input policy."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import orjson
import pandas as pd

from pipeline import crops as crops_stage
from pipeline import preprocess as preprocess_stage
from vremd.data import posetrack
from vremd.data.dataset import PoseTrackCrops
from vremd.model.heads import HEATMAP_STRIDE
from tests.reliability.reliability_fixtures import REPO, stage_env


def write_video(dataset_dir: Path, split: str, number: int, n_frames: int) -> None:
    """A small PoseTrack-layout video: noise frames, two persons in every other frame."""
    rng = np.random.default_rng(number)
    name = f"{number:06d}_mpii_{'train' if split == 'train' else 'test'}"
    frames = []
    for t in range(n_frames):
        file_name = f"images/{split}/{name}/{t:06d}.jpg"
        (dataset_dir / file_name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dataset_dir / file_name), rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
        persons = []
        for track, (x, y) in enumerate([(10, 8), (50, 20)]):
            kps = np.concatenate([rng.uniform([x, y], [x + 30, y + 40], (17, 2)), np.ones((17, 1))], axis=1)
            persons.append(posetrack.Person(track, 10 * t + track, kps, (x, y, 30.0, 40.0), None))
        frames.append(posetrack.Frame(posetrack.image_id_for(number, t), t, file_name, t % 2 == 0,
                                      tuple(persons) if t % 2 == 0 else (), ()))
    posetrack.write_video(posetrack.Video(name, split, dataset_dir / f"annotations/{split}/{name}.json",
                                          tuple(frames)), dataset_dir / f"annotations/{split}/{name}.json")


def setup(write_params, tmp_path: Path) -> tuple[Path, list[str]]:
    params = write_params(tmp_path, {"data": {"source": "synthetic", "on_bad_input": "error"},
                                     "crops": {"height": 32, "width": 24, "workers": 2},
                                     "model": {"img_height": 32, "img_width": 24}}, profile="t")
    for split, number in (("train", 1), ("train", 2), ("val", 3)):
        write_video(tmp_path / "raw/synthetic", split, number, 5)
    return tmp_path, ["--params", str(params), "--raw", str(tmp_path / "raw"),
                      "--out", str(tmp_path / "crops"), "--no-progress"]


def test_crops_then_preprocess(write_params, tmp_path, capsys):
    root, args = setup(write_params, tmp_path)
    assert crops_stage.main(args) == 0
    assert "3 video(s) extracted" in capsys.readouterr().out
    index_args = ["--crops", str(root / "crops"), "--out", str(root / "index"), "--stats", str(root / "m/dataset.json")]
    assert preprocess_stage.main(index_args) == 0
    metrics = orjson.loads((root / "m/dataset.json").read_bytes())
    assert metrics["train"]["samples"] == 12 and metrics["val"]["samples"] == 6
    assert metrics["train"]["videos"] == 2 and metrics["train"]["persons"] == 4 and metrics["train"]["frames"] == 6
    assert metrics["val"]["visible_per_joint"]["left_wrist"] == 6
    index = pd.read_parquet(root / "index/val.parquet")
    assert index["sample_id"].tolist() == list(range(6)) and (index["score"] == 1.0).all()
    item = PoseTrackCrops(root / "index/val.parquet", None, heatmap_stride=HEATMAP_STRIDE)[5]
    assert item["frames"].shape == (3, 3, 32, 24)
    # adding a video re-extracts only that one
    write_video(root / "raw/synthetic", "val", 4, 3)
    assert crops_stage.main(args) == 0
    out = capsys.readouterr().out
    assert "1 video(s) extracted" in out and "val   2 videos, 10 samples" in out


def test_bad_input_error_and_skip(write_params, tmp_path, capsys):
    root, args = setup(write_params, tmp_path)
    bad = root / "raw/synthetic/images/train/000002_mpii_train/000002.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[:100])
    assert crops_stage.main(args) == 1
    assert f"{bad}: truncated JPEG" in capsys.readouterr().err
    assert crops_stage.main(args + ["--set", "data.on_bad_input=skip"]) == 0
    out = capsys.readouterr().out
    assert "skipped: 2 corrupt_frame" in out  # the 2 persons of key frame 2 (frames 0 and 4 do not need it)
    stats = orjson.loads((root / "crops/stats.json").read_bytes())
    assert stats["splits"]["train"]["skipped"] == {"corrupt_frame": 2} and stats["splits"]["train"]["samples"] == 10
    bad.write_bytes(good)
    (root / "raw/synthetic/annotations/val/000003_mpii_test.json").write_text('{"images": [')
    assert crops_stage.main(args) == 1
    assert "000003_mpii_test.json: json: malformed or truncated" in capsys.readouterr().err
    assert crops_stage.main(args + ["--set", "data.on_bad_input=skip"]) == 0
    assert "val   1 videos, 0 samples, 0 with clamped neighbours; skipped: 1 bad_json" in capsys.readouterr().out
    assert crops_stage.main(args + ["--set", "crops.jpeg_quality=101"]) == 1
    assert "crops.jpeg_quality: expected an integer in [0, 100], found 101" in capsys.readouterr().err
    assert crops_stage.main(args[:3] + [str(root / "nowhere")] + args[4:]) == 1
    assert "no annotations/{train,val}/*.json (run pipeline/download.py first)" in capsys.readouterr().err


def _shards(crops: Path) -> dict[str, bytes]:
    return {str(p.relative_to(crops)): p.read_bytes() for p in sorted(crops.rglob("*.npy"))}


def test_edited_crop_code_re_extracts_every_video_and_says_why(write_params, tmp_path, capsys):
    """Issue 32 item 2: `INTER_LINEAR` -> `INTER_AREA` in vremd/data/crops.py, then the crops stage. Before, the
    per-video key hashed inputs and params, not code: 0 videos were re-extracted and the stale shards stayed."""
    root, args = setup(write_params, tmp_path)
    assert crops_stage.main(args) == 0
    assert "new video: extracted 3 video(s)" in capsys.readouterr().out
    before = _shards(root / "crops")
    code = tmp_path / "code"  # this checkout's code, with the crop resize edited as in the issue
    for folder in ("vremd", "pipeline"):
        shutil.copytree(REPO / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    crops_py = code / "vremd" / "data" / "crops.py"
    resize = "dst=out[k], interpolation=cv2.INTER_LINEAR)"
    assert crops_py.read_text().count(resize) == 1
    crops_py.write_text(crops_py.read_text().replace(resize, "dst=out[k], interpolation=cv2.INTER_AREA)"))
    command = [sys.executable, str(code / "pipeline" / "crops.py"), *args]
    proc = subprocess.run(command, cwd=root, env=stage_env(PYTHONPATH=str(code)), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 video(s) extracted" in proc.stdout and "crop code changed: re-extracted 3 video(s)" in proc.stdout
    after = _shards(root / "crops")
    assert after.keys() == before.keys() and any(after[k] != before[k] for k in before)  # other pixels now
    proc = subprocess.run(command, cwd=root, env=stage_env(PYTHONPATH=str(code)), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "0 video(s) extracted" in proc.stdout  # the same code again: all kept
    assert crops_stage.main(args + ["--set", "crops.enlarge=1.5"]) == 0  # back to this checkout, other settings
    assert "crop code changed: re-extracted 3 video(s)" in capsys.readouterr().out  # code counts first
    assert crops_stage.main(args) == 0
    assert "crop settings changed: re-extracted 3 video(s)" in capsys.readouterr().out
