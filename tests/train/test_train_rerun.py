"""Re-running a finished run's name: a refusal leaves the run and its folder untouched, and training further ends
with the newest model behind `runs:/<id>/model` (issue 32, items 4 and 5), through `pipeline/train.py` on smoke
data with a real SQLite MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.reliability.reliability_fixtures import copy_mlflow_db
from tests.train.test_train_loop import with_train
from vremd.predict.mlflow_model import tracking_uri_as
from vremd.train.checkpoints import load_state
from vremd.train.tracking import CONTINUES_TAG


@pytest.fixture(scope="module")
def other_data(smoke_data, build_smoke_data, tmp_path_factory):
    """The smoke recipe with another synthetic seed: other data under the same config keys."""
    cfg = smoke_data.cfg
    seeded = dataclasses.replace(cfg.data, synthetic=dataclasses.replace(cfg.data.synthetic, seed=1))
    return build_smoke_data(tmp_path_factory.mktemp("rerun-b"), dataclasses.replace(cfg, data=seeded))


def _train(root: Path, data, capsys, *extra: str) -> tuple[int, str, str]:
    from pipeline import train

    rc = train.main(["--params", str(root / "params.yaml"), "--index", str(data.index), "--raw", str(data.raw),
                     "--out", str(root / "models"), "--curve", str(root / "curve.csv"), "--storage",
                     str(root / "runs"), "--run-name", "mine", "--no-progress", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def finished(smoke_data, write_params, tmp_path, capsys, monkeypatch):
    """A finished 1-epoch run named `mine`, tracked in tmp_path/mlflow.db: (root, store URI, its MLflow run id)."""
    torch.set_num_threads(1)
    write_params(tmp_path, with_train(smoke_data.cfg, epochs=1, val_every=0))
    copy_mlflow_db(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc, _, err = _train(tmp_path, smoke_data, capsys)
    assert rc == 0, err
    run_id = torch.load(tmp_path / "models" / "final.pt", weights_only=True)["mlflow_run_id"]
    return tmp_path, uri, run_id


def _run_record(uri: str, run_id: str) -> dict:
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    return {"status": run.info.status, "end_time": run.info.end_time, "params": run.data.params,
            "datasets": sorted((d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs)}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_a_refused_rerun_leaves_the_finished_run_and_its_folder_as_they_were(finished, other_data, capsys):
    root, uri, run_id = finished
    before, folder = _run_record(uri, run_id), _tree(root / "runs" / "mine")
    rc, _, err = _train(root, other_data, capsys)  # the same --run-name on other data
    assert rc == 1 and f"{root / 'runs' / 'mine'}: holds checkpoints of a different configuration or inputs (data: " \
        in err and len(err.strip().splitlines()) == 1, err
    assert _run_record(uri, run_id) == before  # before: reopened, FAILED, and listing the other data set
    assert before["status"] == "FINISHED" and len(before["datasets"]) == 1
    assert _tree(root / "runs" / "mine") == folder
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # and no other run was created


def _logged_weights(uri: str, run_id: str) -> dict[str, torch.Tensor]:
    with tracking_uri_as(uri):
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model().model
    return model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_training_a_finished_run_further_logs_its_newest_model(finished, smoke_data, capsys):
    root, uri, first_id = finished
    epoch1 = load_state(root / "runs" / "mine" / "checkpoint_epoch_0001")["model"]
    rc, out, err = _train(root, smoke_data, capsys, "--set", "train.epochs=2")  # resumes the folder: one more epoch
    assert rc == 0, err
    assert "epoch 2/2" in out and "epoch 1/2" not in out
    final = torch.load(root / "models" / "final.pt", weights_only=True)
    epoch2 = load_state(root / "runs" / "mine" / "checkpoint_epoch_0002")["model"]
    assert final["epoch"] == 2 and _same(final["model"], epoch2) and not _same(epoch2, epoch1)
    run_id = final["mlflow_run_id"]
    assert f"MLflow model runs:/{run_id}/model" in out
    assert _same(_logged_weights(uri, run_id), epoch2)  # before: the epoch-1 model stayed behind runs:/<id>/model
    client = MlflowClient(tracking_uri=uri)
    run, first = client.get_run(run_id), client.get_run(first_id)
    assert run_id != first_id and run.data.tags[CONTINUES_TAG] == first_id  # MLflow params cannot change: a new run
    assert run.data.params["train.epochs"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]  # its curve from epoch 1
    assert first.data.params["train.epochs"] == "1" and first.info.status == "FINISHED"
    assert _same(_logged_weights(uri, first_id), epoch1)  # the 1-epoch run keeps the model it trained
