"""`pipeline/train.py --ray-address` joins an existing Ray cluster started with `ray start --head`.

The head is started with `--block` as this test's own child process (tests/ray_nodes.py) and stopped by
terminating its process group, so no other Ray instance on the machine is touched (a plain `ray stop`
would stop them all).
"""

import pytest
import torch
from ray_nodes import start_node, wait_for_nodes

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(monkeypatch, free_port):
    port = free_port()
    # `ray start --head` enables token authentication (token in ~/.ray/auth_token); clients must opt in
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    head = start_node("--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false")
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1, [head], timeout_s=120)
        yield f"127.0.0.1:{port}"
    finally:
        head.stop()


def test_train_cli_joins_existing_cluster(no_local_ray, ray_head, smoke_data, write_params, tmp_path, monkeypatch):
    from pipeline import train

    write_params(tmp_path, smoke_data.cfg, train__num_workers=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rc = train.main(["--params", "params.yaml", "--index", str(smoke_data.index), "--raw", str(smoke_data.raw),
                     "--out", "models", "--curve", "curve.csv", "--storage", "runs", "--run-name", "cluster",
                     "--ray-address", ray_head, "--no-progress"])
    assert rc == 0
    saved = torch.load(tmp_path / "models" / "final.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["config"]["train"]["num_workers"] == 2
    assert (tmp_path / "runs" / "cluster" / "checkpoint_epoch_0001" / "state.pt").is_file()
    assert (tmp_path / "curve.csv").read_text().startswith("epoch,loss")
    assert (tmp_path / "mlflow.db").is_file()
