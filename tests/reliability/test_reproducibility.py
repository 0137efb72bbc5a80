"""Reproducibility: recorded params round-trip to the config, provenance checks, and end to end
through real DVC + MLflow: a `dvc repro` of the smoke pipeline records git commit, DVC data hash,
params and versions; `pipeline/reproduce.py RUN_ID` re-runs it to the same per-joint AP; a second
independent run with the same seed gives identical per-joint AP and weights; changed data is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fresh_clone import copy_files
from reliability_fixtures import REPO, copy_mlflow_db, stage_env
from vremd.config import flatten, load_config, smoke_config
from vremd.ablation.reproduce import compare_ap, dvc_dir_md5, params_to_config, provenance_problems
from vremd.eval.posetrack_ap import METRIC_NAMES


@pytest.mark.parametrize("cfg", [smoke_config(), load_config(REPO / "params.yaml", "demo"),
                                 load_config(REPO / "params.yaml", "paper")], ids=["smoke", "demo", "paper"])
def test_recorded_params_rebuild_the_same_config(cfg):
    params = {k: str(v) for k, v in flatten(cfg).items()}  # what MLflow stores: strings
    assert params_to_config(params) == cfg


def test_recorded_params_from_another_checkout_fail_clearly():
    params = {k: str(v) for k, v in flatten(smoke_config()).items()}
    with pytest.raises(ValueError, match="model.motion_atention: recorded param is not a config key"):
        params_to_config({**params, "model.motion_atention": "dca"})
    with pytest.raises(ValueError, match="train.epochs: recorded param 'many' is not a valid int"):
        params_to_config({**params, "train.epochs": "many"})


def test_recorded_params_with_retired_keys_rebuild_the_config():
    """Runs of earlier checkouts recorded data.raw_dir, augment.heatmap_stride and model.num_frames."""
    params = {k: str(v) for k, v in flatten(smoke_config()).items()}
    old = {**params, "data.raw_dir": "/x/data/raw", "augment.heatmap_stride": "4", "model.num_frames": "3"}
    assert params_to_config(old) == smoke_config()
    with pytest.raises(ValueError, match="model.num_frames: saved as '5', but this code fixes it at 3"):
        params_to_config({**old, "model.num_frames": "5"})


def test_provenance_checks():
    tags = {"git_commit": "a" * 40, "git_dirty": "false", "dvc_data_hash": "1.dir", "torch_version": "2.14.1"}
    assert provenance_problems(tags, tags) == ([], [])
    errors, warnings = provenance_problems(tags, {**tags, "git_commit": "b" * 40, "dvc_data_hash": "2.dir",
                                                  "torch_version": "2.15.0"})
    assert errors == ["data changed: the run trained on data/index 1.dir, the present data is 2.dir"]
    assert any("git commit differs" in w for w in warnings) and any("torch_version" in w for w in warnings)
    _, warnings = provenance_problems({**tags, "dvc_data_hash": "unknown"}, tags)
    assert any("no data hash" in w for w in warnings)
    _, warnings = provenance_problems({**tags, "python_version": "3.11.9", "timm_version": "1.0.31"},
                                      {**tags, "python_version": "3.12.1", "timm_version": "1.0.31"})
    assert warnings == ["python_version differs: run 3.11.9, now 3.12.1"]


def test_ap_comparison_tolerance_and_nan():
    rec = {c: 50.0 for c in METRIC_NAMES} | {"Ankle": float("nan")}
    rows, equal = compare_ap(rec, {**rec, "Head": 50.0 + 5e-7}, 1e-6)
    assert equal and len(rows) == 8
    rows, equal = compare_ap(rec, {**rec, "Head": 50.001}, 1e-6)
    assert not equal and [r[0] for r in rows if not r[3]] == ["Head"]
    assert not compare_ap(rec, {**rec, "Ankle": 0.0}, 1e-6)[1]


def _project(root: Path, write_params) -> Path:
    """A DVC + git project in `root`: this checkout's stages and code, a smoke-sized params.yaml."""
    # weights/, detections/: stage input folders dvc.yaml depends on (their README.md)
    copy_files(root, only=("vremd", "pipeline", "experiments", "weights", "detections", "dvc.yaml"))
    write_params(root, train__epochs=2, train__val_every=0, train__num_workers=0,
                 tracking__tracking_uri="sqlite:///mlflow.db", tracking__run_name="repro")
    (root / ".gitignore").write_text("mlflow.db\nmlartifacts/\nray_results/\n")
    copy_mlflow_db(root)
    env = stage_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "smoke project"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def _run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=root, env=stage_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dvc_pipeline_run_is_recorded_and_reproduced(write_params, tmp_path):
    root = _project(tmp_path, write_params)
    repro = subprocess.run(["dvc", "repro", "-q"], cwd=root, env=stage_env(), capture_output=True, text=True, timeout=900)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]

    # every run records git commit, DVC data hash (== DVC's own), params and package versions
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    index_md5 = next(o["md5"] for o in lock["stages"]["preprocess"]["outs"] if o["path"] == "data/index")
    assert dvc_dir_md5(root / "data" / "index") == index_md5
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("vremd").experiment_id])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    tags = run.data.tags
    assert tags["git_commit"] == head and tags["dvc_data_hash"] == index_md5
    assert {"torch_version", "ray_version", "mlflow_version"} <= tags.keys()
    assert set(run.data.params) == set(flatten(smoke_config()))
    assert run.data.metrics["ap/mean"] == pytest.approx(json.loads((root / "metrics" / "ap.json").read_text())["Mean"], abs=1e-4)

    # pipeline/reproduce.py RUN_ID re-runs it from the record to the same numbers
    out = _run(root, "pipeline/reproduce.py", run.info.run_id, "--index", "data/index", "--raw", "data/raw", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| Mean |" in out.stdout and "reproduced: every column within 1e-06" in out.stdout
    assert "data changed" not in out.stderr and "git commit differs" not in out.stderr

    # a second independent run with the same seed: identical per-joint AP (all 15 poseval joints) and weights
    second = _run(root, "pipeline/train.py", "--run-name", "second", "--out", "models2", "--curve", "m2.csv",
                  "--index", "data/index", "--raw", "data/raw", "--no-progress")
    assert second.returncode == 0, second.stderr
    ev = _run(root, "pipeline/evaluate.py", "--model", "models2/final.pt", "--out", "reports2", "--metrics", "ap2.json",
              "--index", "data/index", "--raw", "data/raw", "--no-progress")
    assert ev.returncode == 0, ev.stderr
    first_ap, second_ap = (json.loads((root / p).read_text()) for p in ("metrics/ap.json", "ap2.json"))
    assert len(first_ap["per_joint"]) == 15 and first_ap == second_ap
    w1, w2 = (torch.load(root / p, weights_only=True)["model"] for p in ("models/final.pt", "models2/final.pt"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)

    # changed data: refused before any training (exit 2), or re-run with a warning when allowed
    val = pd.read_parquet(root / "data" / "index" / "val.parquet")
    val.iloc[:-1].to_parquet(root / "data" / "index" / "val.parquet", index=False)
    refused = _run(root, "pipeline/reproduce.py", run.info.run_id, "--index", "data/index", "--raw", "data/raw")
    assert refused.returncode == 2 and f"data changed: the run trained on data/index {index_md5}" in refused.stderr


def test_reproduce_unknown_run_is_a_clear_error(tmp_path, capsys):
    from pipeline import reproduce

    db = copy_mlflow_db(tmp_path)
    (tmp_path / "index").mkdir()
    rc = reproduce.main(["no-such-run", "--tracking-uri", f"sqlite:///{db}", "--index", str(tmp_path / "index")])
    err = capsys.readouterr().err
    assert rc == 2 and "reproduce: error: run no-such-run at sqlite:///" in err and "not found" in err
