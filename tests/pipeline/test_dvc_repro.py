"""`dvc repro` runs the whole pipeline end to end in a temporary copy of the repo on a smoke-sized demo
profile; a second `dvc repro` does nothing; `dvc metrics show` prints the per-joint AP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fresh_clone import copy_checkout, smoke_demo_params

from vremd.predict.mlflow_model import tracking_uri_as

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("repo") / "clone", params=smoke_demo_params())


def test_repro_end_to_end_then_nothing_to_do(repo):
    first = _run(["dvc", "repro"], repo)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    metrics = json.loads((repo / "metrics" / "ap.json").read_text())
    assert {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "per_joint"} <= set(metrics)
    assert len(metrics["per_joint"]) == 15
    for name in ("final.pt",):
        assert (repo / "models" / name).is_file()
    for name in ("per_joint.md", "per_joint.csv", "per_joint.html", "ap_bar.png", "sample_masks.png"):
        assert (repo / "reports" / name).is_file(), name
    assert list((repo / "reports" / "predictions").glob("*.json"))
    curve = (repo / "metrics" / "train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,loss,lr") and len(curve) == 2
    assert (repo / "mlflow.db").is_file()
    # the demo's protocol: `pretrain` made the backbone, `weights` installed that file, `train` loaded it frozen
    pretrained = json.loads((repo / "pretrain" / "manifest.json").read_text())
    installed = json.loads((repo / "weights" / "manifest.json").read_text())
    assert pretrained["needed"] and installed["sha256"] == pretrained["sha256"]
    assert "Running stage 'pretrain'" in first.stdout
    _check_mlflow_model(repo, first.stdout)
    stamp = (repo / "models" / "final.pt").stat().st_mtime_ns

    second = _run(["dvc", "repro"], repo)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "up to date" in second.stdout, second.stdout
    assert "Running stage" not in second.stdout, second.stdout
    assert (repo / "models" / "final.pt").stat().st_mtime_ns == stamp

    shown = _run(["dvc", "metrics", "show"], repo)
    assert shown.returncode == 0 and "Head" in shown.stdout and "Mean" in shown.stdout, shown.stdout + shown.stderr
    plots = _run(["dvc", "plots", "show", "--json"], repo)
    assert plots.returncode == 0 and "train_curve.csv" in plots.stdout, plots.stderr[-2000:]


def test_untrained_floor_scores_random_weights_of_the_same_model(repo):
    if not (repo / "models" / "final.pt").is_file():
        assert _run(["dvc", "repro"], repo).returncode == 0
    trained = json.loads((repo / "metrics" / "ap.json").read_text())
    out = _run([str(BIN / "python"), "pipeline/evaluate.py", "--untrained", "--no-progress", "--out", "untrained",
                "--metrics", "untrained/ap.json"], repo)
    assert out.returncode == 0, out.stderr[-4000:]
    floor = json.loads((repo / "untrained" / "ap.json").read_text())
    assert set(floor) == set(trained)
    assert floor["per_joint"] != trained["per_joint"]  # other weights, other predictions
    assert (repo / "untrained" / "predictions").is_dir()
    alone = _run([str(BIN / "python"), "pipeline/evaluate.py", "--head", "motion", "--no-progress", "--out", "motion",
                  "--metrics", "motion/ap.json"], repo)
    assert alone.returncode == 0, alone.stderr[-4000:]
    motion = json.loads((repo / "motion" / "ap.json").read_text())
    assert motion["head"] == "motion" and trained["head"] == "both" and motion["per_joint"] != trained["per_joint"]


def _check_mlflow_model(repo: Path, stdout: str) -> None:
    """The train stage logged final.pt as its run's MLflow model: it loads from the store and predicts."""
    import mlflow
    import numpy as np
    import torch

    uri = next(w for line in stdout.splitlines() if line.startswith("MLflow model ") for w in line.split()
               if w.startswith("runs:/"))
    with tracking_uri_as(f"sqlite:///{repo / 'mlflow.db'}"):  # not left set for later tests in this process
        model = mlflow.pyfunc.load_model(uri)
    cfg = smoke_demo_params()["profiles"]["demo"]["model"]
    crops = np.zeros((2, 3, cfg["img_height"], cfg["img_width"], 3), dtype=np.uint8)
    joints = model.predict(crops)  # (B, 17, 3)
    assert joints.shape == (2, cfg["num_joints"], 3) and np.isfinite(joints).all()
    final = torch.load(repo / "models" / "final.pt", map_location="cpu", weights_only=True)
    assert uri == f"runs:/{final['mlflow_run_id']}/model"
