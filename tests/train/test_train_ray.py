"""The real Ray Train TorchTrainer on a local Ray (num_cpus=2): two DDP workers, MLflow, resume, worker failure.

Each run starts a Ray Train controller and worker group: tens of seconds on a shared 2-core machine,
so the tests here are marked slow.
"""

import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from test_train_loop import with_train

from vremd.train.ray_train import fit, train_and_track
from vremd.train.tracking import CONTINUES_TAG, resolve_tracking_uri

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(smoke_data):
    cfg = with_train(smoke_data.cfg, num_workers=2, max_failures=1)
    return cfg, smoke_data.run_paths(), smoke_data.dataset_dir


def test_two_workers_one_epoch_logged_to_mlflow(local_ray, smoke, tmp_path):
    cfg, paths, dataset_dir = smoke
    uri = resolve_tracking_uri("sqlite:///mlflow.db", tmp_path)
    outcome = train_and_track(cfg, paths, tmp_path / "runs", "two", uri, tmp_path, dataset_dir)
    result = outcome.fit
    assert outcome.tracking_failure is None
    assert result.checkpoint_dir == tmp_path / "runs" / "two" / "checkpoint_epoch_0001"
    assert result.state["epoch"] == 1 and len(result.history) == 1
    assert (result.checkpoint_dir / "predictions").is_dir()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("loss", "lr", "samples_per_s", "ap/head", "ap/shoulder", "ap/elbow", "ap/wrist", "ap/hip",
                 "ap/knee", "ap/ankle", "ap/mean"):
        assert name in metrics, name
    assert metrics["loss"] == pytest.approx(result.history[0]["loss"])
    artifacts = {a.path for a in client.list_artifacts(outcome.mlflow_run_id)}
    assert {"tables", "figures", "overlays", "predictions"} <= artifacts
    tables = {a.path for a in client.list_artifacts(outcome.mlflow_run_id, "tables")}
    assert {"tables/per_joint.md", "tables/per_joint.csv", "tables/per_joint.html", "tables/per_joint.png"} <= tables
    assert client.list_artifacts(outcome.mlflow_run_id, "overlays")

    # the same run name resumes: epoch 1 comes from the checkpoint, only epoch 2 trains. MLflow params cannot say
    # 2 epochs on the finished 1-epoch run: a new MLflow run continues it, its curve from epoch 1
    more = train_and_track(with_train(cfg, epochs=2), paths, tmp_path / "runs", "two", uri, tmp_path, dataset_dir)
    assert more.mlflow_run_id != outcome.mlflow_run_id
    assert client.get_run(more.mlflow_run_id).data.tags[CONTINUES_TAG] == outcome.mlflow_run_id
    assert [h["epoch"] for h in more.fit.history] == [1, 2]
    assert more.fit.history[0] == result.history[0]
    assert [m.step for m in client.get_metric_history(more.mlflow_run_id, "loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(outcome.mlflow_run_id, "loss")] == [1]  # as it finished


def _kill_a_worker_after(first_checkpoint: Path, killed: list) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (first_checkpoint / "state.pt").exists():
        time.sleep(0.05)
    # only this test's own Ray (started by ray.init in this process) is searched: its workers are our descendants
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()) and proc.pid not in killed:
                proc.kill()
                killed.append(proc.pid)
                return
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def test_worker_killed_mid_run_resumes_and_finishes_all_epochs(local_ray, smoke, tmp_path):
    cfg, paths, _ = smoke
    cfg = with_train(cfg, epochs=4, val_every=0, max_failures=2)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after,
                              args=(tmp_path / "runs" / "killed" / "checkpoint_epoch_0001", killed))
    killer.start()
    result = fit(cfg, paths, tmp_path / "runs", "killed")
    killer.join()
    assert killed, "no Ray Train worker process was found to kill"
    assert result.state["epoch"] == 4
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
