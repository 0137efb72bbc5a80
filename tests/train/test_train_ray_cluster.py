"""`pipeline/train.py --ray-address` joins an existing Ray cluster started with `ray start --head`.

The head is started with `--block` as this test's own child process and stopped by terminating it,
so no other Ray instance on the machine is touched (a plain `ray stop` would stop them all).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from vremd.config import config_to_dict, smoke_config
from vremd.data.crop_store import build_crops
from vremd.data.dataset import build_index
from vremd.data.download import prepare_synthetic

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    port = _free_port()
    # `ray start --head` enables token authentication (token in ~/.ray/auth_token); clients must opt in
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # a private --temp-dir: `ray start` writes its address file there, not in /tmp/ray where every
    # later argument-less ray.init() on this machine would try to join this (soon stopped) head
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            status = subprocess.run([str(RAY), "status", f"--address=127.0.0.1:{port}"], env=env,
                                    capture_output=True, text=True)
            if status.returncode == 0:
                break
            assert head.poll() is None, head.stdout.read()
            time.sleep(2)
        else:
            pytest.fail("ray start --head did not come up within 120 s")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head's own process group: only what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_train_cli_joins_existing_cluster(ray_head, tmp_path, monkeypatch):
    from pipeline import train

    cfg = smoke_config()
    root = tmp_path / "data"
    dataset_dir = root / "raw" / "synthetic"
    prepare_synthetic(cfg.data.synthetic, dataset_dir, progress=False)
    build_crops(dataset_dir, root / "crops", cfg.crops, "error", progress=False)
    build_index(root / "crops", root / "index")
    profile = config_to_dict(cfg)
    profile.pop("profile")
    profile["train"]["num_workers"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke", "profiles": {"smoke": profile}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rc = train.main(["--params", "params.yaml", "--index", str(root / "index"), "--raw", str(root / "raw"),
                     "--out", "models", "--curve", "curve.csv", "--storage", "runs", "--run-name", "cluster",
                     "--ray-address", ray_head, "--no-progress"])
    assert rc == 0
    saved = torch.load(tmp_path / "models" / "final.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["config"]["train"]["num_workers"] == 2
    assert (tmp_path / "runs" / "cluster" / "checkpoint_epoch_0001" / "state.pt").is_file()
    assert (tmp_path / "curve.csv").read_text().startswith("epoch,loss")
    assert (tmp_path / "mlflow.db").is_file()
