"""The bad-input corpus (tests/data/bad/README.md is the table of cases) through the real `crops` stage,
the evaluator, and the other stage command lines.

Each crops case runs `pipeline/crops.py` with `data.on_bad_input=error` and `skip`: errors must name the
file and field with no traceback; skips must be counted; every kept sample must equal a sample of
the clean run (never a wrong sample); the companion good video is always complete. The stage cases
(train, evaluate, predict) must each end in one error line naming the file, option or key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

from pipeline import crops as crops_stage
from reliability_fixtures import REPO, copy_mlflow_db, stage_env, train_argv
from tests.predict.predict_fixtures import save_smoke_checkpoint
from vremd.config import smoke_config
from vremd.data.dataset import PoseTrackCrops
from vremd.data.index import build_index
from vremd.model.heads import HEATMAP_STRIDE

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
GOOD_VIDEO, COMPANION = "000001_mpii_train", "000002_mpii_train"
IMG_H, IMG_W = 96, 128


def read_table() -> list[dict[str, str]]:
    """Rows of the corpus README table: case, file, frames, what is wrong, error outcome, skip outcome."""
    rows = []
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("case", "---"):
            continue
        rows.append(dict(zip(("case", "file", "frames", "problem", "error", "skip"), cells)))
    return rows


CASES = read_table()


def frame_pixels(t: int) -> np.ndarray:
    """(H, W, 3) BGR frame t: smooth gradients that survive JPEG, different per frame."""
    y, x = np.mgrid[0:IMG_H, 0:IMG_W]
    return np.stack([2 * x % 256, 2 * y % 256, np.full_like(x, 40 + 60 * t)], -1).astype(np.uint8)


def _frame_names(text: str) -> list[str]:
    """The frame files a (possibly broken) case json refers to; the good file's when unreadable."""
    try:
        images = json.loads(text)["images"]
        names = [im["file_name"] for im in images if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    except (ValueError, KeyError, TypeError):
        names = []
    return names or _frame_names((CORPUS / "good.json").read_text())


def damage_frame(path: Path, how: str) -> None:
    """Apply a frames defect of the table to one written JPEG."""
    good = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif how == "garbage":
        path.write_bytes(b"\xff\xd8" + np.random.default_rng(0).bytes(len(good)) + b"\xff\xd9")
    elif how == "png":
        path.write_bytes(cv2.imencode(".png", frame_pixels(2))[1].tobytes())
    elif how.startswith("header"):
        side = int(how[len("header"):])
        data = bytearray(good)
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    else:
        raise AssertionError(f"unknown frames defect {how!r} in the corpus table")


def build_dataset(root: Path, case: dict[str, str]) -> tuple[Path, Path]:
    """raw/synthetic with the case video (+ defect) and a good companion; return (case json, damaged frame)."""
    dataset = root / "raw" / "synthetic"
    text = (CORPUS / case["file"]).read_text(encoding="utf-8")
    names = _frame_names(text)
    video = Path(names[0]).parent.name
    companion = (CORPUS / "good.json").read_text().replace(GOOD_VIDEO, COMPANION)
    for video_name, json_text, frame_names in ((video, text, names), (COMPANION, companion, _frame_names(companion))):
        ann = dataset / "annotations" / "train" / f"{video_name}.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json_text, encoding="utf-8")
        for t, name in enumerate(frame_names):
            (dataset / name).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imencode(".jpg", frame_pixels(t))[1].tofile(str(dataset / name)) is None
    (dataset / "annotations" / "val").mkdir(parents=True, exist_ok=True)
    damaged = dataset / "annotations" / "train" / f"{video}.json"
    if case["frames"] == "delete-folder":
        shutil.rmtree(dataset / Path(names[0]).parent)
        damaged = dataset / names[0]
    elif case["frames"] != "-":
        how, stem = case["frames"].split()
        damaged = dataset / Path(names[0]).parent / f"{stem}.jpg"
        damage_frame(damaged, how)
    return damaged, dataset / "annotations" / "train" / f"{video}.json"


def run_crops(write_params, root: Path, policy: str, workers: int = 1) -> int:
    params = write_params(root, {"data": {"source": "synthetic", "on_bad_input": policy},
                                 "crops": {"height": 32, "width": 24, "workers": workers},
                                 "model": {"img_height": 32, "img_width": 24}}, profile="t")
    return crops_stage.main(["--params", str(params), "--raw", str(root / "raw"),
                             "--out", str(root / "crops"), "--no-progress"])


def sample_key(row: dict) -> tuple:
    """What makes a sample: frame, person, box and joints (not the video name or shard layout)."""
    return (row["frame_index"], row["person_id"], row["track_id"], tuple(np.round(row["box_xywh"], 6)),
            tuple(np.round(row["joints_crop_xyv"], 6)))


@pytest.fixture(scope="module")
def clean_samples(write_params, tmp_path_factory) -> set[tuple]:
    root = tmp_path_factory.mktemp("clean")
    build_dataset(root, next(c for c in CASES if c["case"] == "good"))
    assert run_crops(write_params, root, "error") == 0
    record = orjson.loads((root / "crops" / "train" / f"{GOOD_VIDEO}.json").read_bytes())
    assert record["samples"] == 6
    return {sample_key(r) for r in record["rows"]}


def test_corpus_table_lists_every_file_and_enough_cases():
    files = {c["file"] for c in CASES}
    on_disk = {p.name for p in CORPUS.glob("*.json")}
    assert on_disk == files, f"corpus files without a table row: {on_disk - files}; rows without a file: {files - on_disk}"
    assert len(CASES) >= 20 and len({c["case"] for c in CASES}) == len(CASES)
    assert all(p.stat().st_size < 8_000 for p in CORPUS.glob("*.json"))


def _check_ok_or_skip(root: Path, case: dict, expected: str, video_json: Path, clean: set[tuple]) -> None:
    record = orjson.loads((root / "crops" / "train" / f"{video_json.stem}.json").read_bytes())
    companion = orjson.loads((root / "crops" / "train" / f"{COMPANION}.json").read_bytes())
    assert companion["samples"] == 6 and companion["skipped"] == {}
    if expected.startswith("ok "):
        assert record["skipped"] == {}, record["messages"]
        assert record["samples"] == int(expected.split()[1])
    else:
        m = re.fullmatch(r"skip (\d+) (\w+), (\d+) kept", expected)
        assert m, f"bad outcome cell {expected!r} for {case['case']}"
        assert record["skipped"] == {m[2]: int(m[1])}, record["messages"]
        assert record["samples"] == int(m[3])
        if m[2] != "bad_json":  # a per-sample skip says which file and why
            assert record["messages"] and all(str(video_json.parent.parent.parent.parent) in msg or ".jpg" in msg
                                              for msg in record["messages"])
    kept = {sample_key(r) for r in record["rows"]}
    assert kept <= clean, f"{case['case']}: samples that differ from the clean run: {kept - clean}"
    if record["samples"]:  # the kept samples load through the Dataset with sane values
        build_index(root / "crops", root / "index")
        dataset = PoseTrackCrops(root / "index" / "train.parquet", None, heatmap_stride=HEATMAP_STRIDE)
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["frames"].shape == (3, 3, 32, 24) and bool(item["frames"].isfinite().all())
            assert bool(item["heatmaps"].isfinite().all())


@pytest.mark.parametrize("policy", ["error", "skip"])
@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_bad_input_case(case, policy, write_params, tmp_path, capsys, clean_samples):
    damaged, video_json = build_dataset(tmp_path, case)
    expected = case[policy]
    rc = run_crops(write_params, tmp_path, policy)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if expected.startswith("error: "):
        assert rc == 1, f"{case['case']}: expected an error, got exit {rc}; stdout:\n{out}"
        assert expected[len("error: "):] in err, err
        assert damaged.name in err, f"the error does not name {damaged.name}: {err}"
        assert not (tmp_path / "crops" / "manifest.parquet").exists()  # no half-built output
        return
    assert rc == 0, err
    _check_ok_or_skip(tmp_path, case, expected, video_json, clean_samples)


@pytest.mark.parametrize("name", ["nan_keypoint", "large_jpeg_header"])
def test_errors_cross_the_worker_pool_intact(name, write_params, tmp_path, capsys):
    """With crops.workers=2 the error raised in a pool worker reaches the CLI with the same message."""
    case = next(c for c in CASES if c["case"] == name)
    damaged, _ = build_dataset(tmp_path, case)
    assert run_crops(write_params, tmp_path, "error", workers=2) == 1
    err = capsys.readouterr().err
    assert case["error"][len("error: "):] in err and damaged.name in err and "Traceback" not in err


# ------------------------------------------------------------------ the evaluator's inputs


def _prediction(mutate=None) -> str:
    pred = json.loads((CORPUS / "good.json").read_text())
    for ann in pred["annotations"]:
        ann["scores"] = [0.9] * 17
    if mutate is not None:
        mutate(pred)
    return json.dumps(pred)


def _drop_frame(pred: dict) -> None:
    pred["images"] = pred["images"][:2]


def _nan(pred: dict) -> None:
    pred["annotations"][0]["keypoints"][0] = float("nan")


def _short_scores(pred: dict) -> None:
    pred["annotations"][0]["scores"] = [0.9] * 5


@pytest.mark.parametrize("gt_file,pred_text,needle", [
    ("good.json", _prediction(), None),
    ("missing_bbox_head.json", _prediction(), "bbox_head: missing for a GT person (needed for PCKh)"),
    ("good.json", _prediction()[:500], "not valid json"),
    ("good.json", "", "not valid json"),
    ("good.json", _prediction(_nan), "not valid json"),
    ("good.json", _prediction(_short_scores), "annotations[0].scores: expected 17 numbers"),
    ("good.json", _prediction(_drop_frame), "2 prediction frames but 3 GT frames"),
    ("good.json", None, "prediction file does not exist"),
], ids=["good", "gt-without-head-box", "truncated-pred", "empty-pred", "nan-pred", "short-scores", "missing-frame",
        "missing-pred-file"])
def test_evaluator_bad_inputs_name_the_file(tmp_path, gt_file, pred_text, needle):
    from vremd.eval.posetrack_ap import PoseTrackEvalError, evaluate_dirs

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(CORPUS / gt_file, tmp_path / "gt" / f"{GOOD_VIDEO}.json")
    if pred_text is not None:
        (tmp_path / "pred" / f"{GOOD_VIDEO}.json").write_text(pred_text)
    if needle is None:
        assert evaluate_dirs(tmp_path / "gt", tmp_path / "pred").table["Total"] == 100.0
        return
    with pytest.raises(PoseTrackEvalError) as err:
        evaluate_dirs(tmp_path / "gt", tmp_path / "pred")
    assert needle in str(err.value) and f"{GOOD_VIDEO}.json" in str(err.value)


# ------------------------------------------------------------------ stage command lines (README: "Stage command lines")

STAGES = CORPUS / "stages"


@pytest.fixture(scope="module")
def smoke(smoke_data, write_params, tmp_path_factory) -> Path:
    """Smoke data (raw/, crops/, index/ linked; params.yaml) and models/final.pt, a random smoke model in training's
    format."""
    root = tmp_path_factory.mktemp("stages")
    smoke_data.link_into(root)
    write_params(root)
    save_smoke_checkpoint(root / "models" / "final.pt")
    return root


def run_train(root: Path, capsys, *extra: str, index: Path | None = None) -> tuple[int, str]:
    from pipeline import train

    rc = train.main(["--params", str(root / "params.yaml"), "--index", str(index or root / "index"), "--raw",
                     str(root / "raw"), "--out", str(root / "out"), "--storage", str(root / "runs"), "--no-progress",
                     *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.err


def run_evaluate(root: Path, capsys, *extra: str, index: Path | None = None, model: Path | None = None,
                 params: Path | None = None) -> tuple[int, str]:
    from pipeline import evaluate

    rc = evaluate.main(["--params", str(params or root / "params.yaml"), "--model", str(model or root / "models" / "final.pt"),
                        "--index", str(index or root / "index"), "--raw", str(root / "raw"), "--out",
                        str(root / "reports"), "--metrics", str(root / "ap.json"), "--no-progress", *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.err


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> Path:
    """MLflow goes to tmp_path/mlflow.db: the file exists only once a run was created."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return db


def test_malformed_set_value_is_an_error(smoke, capsys, tracking):
    for run in (run_train, run_evaluate):
        rc, err = run(smoke, capsys, "--set", "model.dim=[1")
        assert rc == 1 and "override 'model.dim=[1': the value is not valid YAML" in err, err
    assert not tracking.exists()


def test_missing_index_stops_train_before_any_mlflow_run(smoke, tmp_path, capsys, tracking):
    rc, err = run_train(smoke, capsys, index=tmp_path / "nope")
    assert rc == 1 and f"--index {tmp_path / 'nope'}: the folder does not exist, so it has no train.parquet" in err
    assert not tracking.exists() and not (smoke / "runs").exists()


def test_index_without_val_parquet_is_an_error(smoke, tmp_path, capsys, tracking):
    (tmp_path / "index").mkdir()
    shutil.copy(smoke / "index" / "train.parquet", tmp_path / "index")
    for run in (run_train, run_evaluate):
        rc, err = run(smoke, capsys, index=tmp_path / "index")
        assert rc == 1 and f"--index {tmp_path / 'index'}: the folder has no val.parquet" in err, err
    assert not tracking.exists()


def test_heatmap_stride_is_no_key(smoke, capsys, tracking):
    """The stride is the model's constant: a --set of it is an unknown key, before any work starts."""
    for run in (run_train, run_evaluate):
        rc, err = run(smoke, capsys, "--set", "augment.heatmap_stride=8")
        assert rc == 1 and "augment.heatmap_stride: unknown key" in err and len(err.strip().splitlines()) == 1, err
    assert not tracking.exists() and not (smoke / "ap.json").exists()


def test_augmentation_past_the_stored_margin_stops_train_before_any_work(smoke, capsys, tracking):
    """A zoom-out the stored train canvas cannot hold (the smoke crops keep 1.35 at any angle) is one line naming
    the index, its margin, crops.train_context_scale and the augment keys, before Ray or an MLflow run start."""
    rc, err = run_train(smoke, capsys, "--set", "augment.scale_max=1.5")
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{smoke / 'index' / 'train.parquet'}: its crops keep a margin of 30x22 px around each 48x64 crop " \
           "(crops.train_context_scale), but augment.borders frame with augment.scale_max 1.5" in err, err
    assert not tracking.exists() and not (smoke / "runs").exists() and not (smoke / "out").exists()


def test_evaluate_names_the_checkpoint_and_both_crop_sizes(smoke, tmp_path, capsys):
    cfg = smoke_config()
    big = dataclasses.replace(cfg, crops=dataclasses.replace(cfg.crops, height=128, width=96),
                              model=dataclasses.replace(cfg.model, img_height=128, img_width=96))
    ckpt = save_smoke_checkpoint(tmp_path / "big.pt", cfg=big)
    rc, err = run_evaluate(smoke, capsys, "--out", str(tmp_path / "reports"), "--metrics", str(tmp_path / "m" / "ap.json"),
                           model=ckpt)
    assert rc == 1 and f"{ckpt} takes 128x96 crops" in err and "holds 64x48 crops" in err, err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "m").exists()  # refused before any output


def test_evaluate_decodes_with_the_checkpoints_config_not_params(smoke, tmp_path, capsys):
    """A params.yaml describing another model (the demo profile) changes nothing: the checkpoint decides."""
    rc, _ = run_evaluate(smoke, capsys)
    assert rc == 0
    own = json.loads((smoke / "ap.json").read_text())
    demo = yaml.safe_load((REPO / "params.yaml").read_text())
    demo["profiles"]["demo"]["train"]["flip_test"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo))
    rc, err = run_evaluate(smoke, capsys, params=tmp_path / "params.yaml")
    assert rc == 0, err
    assert json.loads((smoke / "ap.json").read_text()) == own


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden temp files included) and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _previous_outputs(out: Path, metrics: Path) -> dict[str, bytes]:
    """An earlier evaluation's reports and metrics, standing where the next one writes."""
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    (out / "per_joint.md").write_text("earlier report\n")
    (out / "predictions" / "earlier.json").write_text("{}")
    metrics.write_text('{"Mean": 42.0}\n')
    return _tree(out)


def _one_error_line(err: str, path: Path, reason: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: error: ") and str(path) in lines[0], err
    assert reason in lines[0], err


def test_evaluate_metrics_under_a_file_is_refused_before_any_report_is_written(smoke, tmp_path, capsys):
    out, blocker = tmp_path / "reports", tmp_path / "metrics"
    blocker.write_text("a file where the metrics folder should be")
    before = _previous_outputs(out, tmp_path / "old.json")
    rc, err = run_evaluate(smoke, capsys, "--out", str(out), "--metrics", str(blocker / "ap.json"))
    assert rc == 1
    _one_error_line(err, blocker / "ap.json", f"{blocker} is a file, not a folder")
    assert _tree(out) == before  # no report replaced, no temp file left


def test_evaluate_into_a_read_only_folder_keeps_the_previous_metrics(smoke, tmp_path, capsys, small_disk):
    metrics, out = small_disk.path / "ap.json", tmp_path / "reports"
    before = _previous_outputs(out, metrics)
    small_disk.read_only()
    rc, err = run_evaluate(smoke, capsys, "--out", str(out), "--metrics", str(metrics))
    assert rc == 1
    _one_error_line(err, metrics, "Read-only file system")
    assert metrics.read_text() == '{"Mean": 42.0}\n' and _tree(out) == before


@pytest.mark.parametrize("full", ["metrics", "reports"])
def test_evaluate_on_a_full_disk_replaces_nothing(smoke, tmp_path, capsys, small_disk, full):
    """The disk fills while the outputs are written: the metrics json (written last) or a report. Every output
    was staged beside its target and none is renamed into place: the previous reports and metrics stay whole."""
    metrics = small_disk.path / "ap.json"
    out = small_disk.path / "reports" if full == "reports" else tmp_path / "reports"
    before = _previous_outputs(out, metrics)
    small_disk.fill(leave_bytes=0 if full == "metrics" else 4096)  # a report PNG needs more than one 4 KiB page
    rc, err = run_evaluate(smoke, capsys, "--out", str(out), "--metrics", str(metrics))
    assert rc == 1
    _one_error_line(err, metrics if full == "metrics" else out, "No space left on device")
    assert ".staging" not in err and ".tmp" not in err  # the output named, not its temp file
    assert metrics.read_text() == '{"Mean": 42.0}\n' and _tree(out) == before
    assert sorted(p.name for p in small_disk.path.iterdir()) == sorted([".filler", "ap.json"] + (
        ["reports"] if full == "reports" else []))  # no temp file or folder left behind
    if full == "reports":
        return
    (small_disk.path / ".filler").unlink()  # room again: the same command now writes everything
    rc, err = run_evaluate(smoke, capsys, "--out", str(out), "--metrics", str(metrics))
    assert rc == 0 and "Mean" in json.loads(metrics.read_text()) and (out / "ap_bar.png").stat().st_size > 0, err
    assert not (out / "predictions" / "earlier.json").exists()  # the predictions folder was replaced as a whole


def test_string_detection_score_is_an_error(smoke, tmp_path, capsys):
    from vremd.data.detections import DetectionFormatError, read_detections
    from vremd.predict.cli import main as predict

    dets = STAGES / "string_score_detections.json"
    with pytest.raises(DetectionFormatError, match=r"string_score_detections.json: entry 0: score: expected a finite"):
        read_detections(dets)  # the crops stage's data.val_boxes
    frames = next((smoke / "raw" / "synthetic" / "images" / "val").iterdir())
    rc = predict([str(frames), "--boxes", str(dets), "--checkpoint", str(smoke / "models" / "final.pt"),
                  "--out", str(tmp_path / "p.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "string_score_detections.json: [0]: score: expected a finite number, found '0.9'" in err, err
    assert not (tmp_path / "p.json").exists()


def test_predict_uses_the_checkpoints_config_beside_an_unrelated_params_yaml(smoke, tmp_path, capsys, monkeypatch):
    from vremd.predict.cli import main as predict

    shutil.copy(STAGES / "unrelated_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    video_json = next((smoke / "raw" / "synthetic" / "annotations" / "val").glob("*.json"))
    frames = smoke / "raw" / "synthetic" / "images" / "val" / video_json.stem
    argv = [str(frames), "--boxes", str(video_json), "--checkpoint", str(smoke / "models" / "final.pt"), "--quiet"]
    assert predict(argv + ["--out", "p.json"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "p.json").read_text())["annotations"]
    rc = predict(argv + ["--out", "q.json", "--set", "crops.enlarge=1.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "final.pt carries its own config, which predict uses" in err, err
    assert not (tmp_path / "q.json").exists()


@pytest.mark.slow
def test_worker_error_under_ray_is_one_line(smoke_data, write_params, tmp_path):
    """A crop shard truncated after the inputs were checked fails inside the Ray Train worker."""
    smoke_data.copy_to(tmp_path)  # this test damages its data
    index = pd.read_parquet(tmp_path / "index" / "train.parquet")
    shard = (tmp_path / "index" / index["shard"].iloc[-1]).resolve()
    assert shard != (tmp_path / "index" / index["shard"].iloc[0]).resolve()  # sample 0 is read by the input checks
    shard.write_bytes(shard.read_bytes()[:200])
    params = write_params(tmp_path, train__num_workers=1)
    copy_mlflow_db(tmp_path)
    proc = subprocess.run(train_argv(tmp_path, params), cwd=tmp_path, env=stage_env(), capture_output=True, text=True,
                          timeout=600)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("train: error:")]
    assert proc.returncode == 1 and len(errors) == 1, output
    assert errors[0].startswith("train: error: worker rank 0: ") and "worker_error.txt" in errors[0]
    assert "Error Snippet" not in output and "Error in training function" not in output, output
    assert "Traceback" in next(tmp_path.glob("ray_results/*/worker_error.txt")).read_text()
