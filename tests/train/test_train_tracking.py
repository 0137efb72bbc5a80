"""MLflow tracking on a real sqlite store read back with MlflowClient; a down server never raises."""

from pathlib import Path
import warnings

import pytest
from mlflow.tracking import MlflowClient

from vremd.config import flatten, smoke_config
from vremd.train.identity import RunIdentity, dvc_dir_md5
from vremd.train.tracking import CONTINUES_TAG, VERSION_TAGS, Tracker, resolve_tracking_uri, run_tags


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one runs MLflow's schema migrations: seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return root, resolve_tracking_uri("sqlite:///mlflow.db", root)


def test_resolve_tracking_uri(tmp_path):
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()


def test_run_holds_params_tags_metrics_and_artifacts(store, tmp_path):
    root, uri = store
    cfg = smoke_config()
    tracker = Tracker.start(uri, "vremd-test", "smoke", flatten(cfg), run_tags(cfg, tmp_path))
    assert tracker.active, tracker.failure
    for step, loss in enumerate([0.5, 0.25], start=1):
        tracker.log_metrics({"loss": loss, "ap/mean": float("nan") if step == 1 else 42.0}, step=step)
    (tmp_path / "table.md").write_text("| Head |\n")
    tracker.log_artifact(tmp_path / "table.md", "tables")
    tracker.finish()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert run.data.params["model.bmd"] == "True" and run.data.params["train.batch_size"] == "2"
    assert run.data.tags["profile"] == "smoke" and run.data.tags["dataset"] == "synthetic"
    assert {"git_commit", "git_dirty", "host", "torch_version", "ray_version", "mlflow_version",
            "dvc_data_hash"} <= set(run.data.tags)
    assert [m.value for m in client.get_metric_history(tracker.run_id, "loss")] == [0.5, 0.25]
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "ap/mean")] == [(2, 42.0)]
    assert [a.path for a in client.list_artifacts(tracker.run_id, "tables")] == ["tables/table.md"]
    # artifacts live beside the database, not in the working directory
    assert (root / "mlartifacts").is_dir()


def test_resume_reopens_the_same_run(store):
    _, uri = store
    first = Tracker.start(uri, "e", "r", {"a": 1}, {})
    first.finish("FAILED")
    again = Tracker.start(uri, "e", "r", {"a": 1}, {}, resume_run_id=first.run_id)
    assert again.run_id == first.run_id
    assert MlflowClient(tracking_uri=uri).get_run(first.run_id).info.status == "RUNNING"


def test_an_id_file_reopens_its_run_and_a_stale_one_starts_afresh(store, tmp_path):
    """The one "reopen the MLflow run named in an id file" rule (a training's run folder, a trial, a table's
    parent run): the second start reopens the first run; an id from another store starts a new run."""
    _, uri = store
    id_file = tmp_path / "mlflow_run_id"
    first = Tracker.start_or_resume(id_file, uri, "e", "r", {"a": 1}, {})
    assert not first.resumed and id_file.read_text() == first.run_id
    first.finish("FAILED")
    again = Tracker.start_or_resume(id_file, uri, "e", "r", {"a": 1}, {})
    assert again.resumed and again.run_id == first.run_id
    id_file.write_text("0" * 32)  # a run of another store
    fresh = Tracker.start_or_resume(id_file, uri, "e", "r", {"a": 1}, {})
    assert not fresh.resumed and fresh.run_id != first.run_id and id_file.read_text() == fresh.run_id


def test_a_run_is_reopened_only_under_its_own_params(store, tmp_path):
    """MLflow params cannot change: a run trained further (train.epochs 1 -> 2) would keep saying 1 epoch. It is
    left as it was, and a new run names it; a deleted run is never reopened."""
    _, uri = store
    id_file = tmp_path / "mlflow_run_id"
    first = Tracker.start_or_resume(id_file, uri, "e", "r", {"train.epochs": 1}, {})
    first.finish()
    longer = Tracker.start_or_resume(id_file, uri, "e", "r", {"train.epochs": 2}, {"profile": "smoke"})
    client = MlflowClient(tracking_uri=uri)
    assert not longer.resumed and longer.continues == first.run_id and id_file.read_text() == longer.run_id
    run = client.get_run(longer.run_id)
    assert run.data.params == {"train.epochs": "2"} and run.data.tags[CONTINUES_TAG] == first.run_id
    assert run.data.tags["profile"] == "smoke"
    assert client.get_run(first.run_id).info.status == "FINISHED"  # untouched
    client.delete_run(longer.run_id)
    again = Tracker.start_or_resume(id_file, uri, "e", "r", {"train.epochs": 2}, {})
    assert not again.resumed and again.continues is None and again.run_id not in (first.run_id, longer.run_id)


def test_down_server_warns_once_and_never_raises(monkeypatch, free_port):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker.start(uri, "e", "r", {"a": 1}, {})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_artifact(__file__)
        tracker.finish()
    assert not tracker.active and "127.0.0.1" in tracker.failure
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1


def test_recorded_data_hash_is_the_index_trained_on_not_dvc_lock(tmp_path):
    index = tmp_path / "other-index"
    index.mkdir()
    (index / "train.parquet").write_bytes(b"rows of another data set")
    (tmp_path / "dvc.lock").write_text(  # what DVC last recorded for data/index: not what this run read
        "schema: '2.0'\nstages:\n  preprocess:\n    cmd: x\n    outs:\n    - path: data/index\n"
        "      md5: abc123.dir\n      size: 1\n      nfiles: 2\n")
    identity = RunIdentity(data="d" * 64, code="c" * 64, lock="l" * 64, threads=1)
    tags = run_tags(smoke_config(), tmp_path, index, identity)
    assert tags["dvc_data_hash"] == dvc_dir_md5(index) != "abc123.dir"
    assert (tags["data_hash"], tags["code_hash"], tags["weights_hash"]) == ("d" * 64, "c" * 64, "none")
    (index / "train.parquet").write_bytes(b"rows of a third data set")
    assert run_tags(smoke_config(), tmp_path, index, identity)["dvc_data_hash"] != tags["dvc_data_hash"]
    assert run_tags(smoke_config(), tmp_path)["dvc_data_hash"] == "unknown"  # no index: never dvc.lock's guess


def test_runs_record_python_and_library_versions():
    import importlib.metadata
    import platform

    tags = run_tags(smoke_config(), Path("."))
    assert set(VERSION_TAGS) <= set(tags)
    assert tags["python_version"] == platform.python_version()
    for tag, dist in (("torch_version", "torch"), ("timm_version", "timm"), ("numpy_version", "numpy"),
                      ("dvc_version", "dvc"), ("opencv_version", "opencv-python-headless")):
        assert tags[tag] == importlib.metadata.version(dist) and tags[tag][0].isdigit()


def test_runs_record_the_lock_file_hash(tmp_path):
    import hashlib

    repo = Path(__file__).resolve().parents[2]
    lock = (repo / "requirements.lock").read_bytes()
    assert run_tags(smoke_config(), repo)["lock_sha256"] == hashlib.sha256(lock).hexdigest()
    assert run_tags(smoke_config(), tmp_path)["lock_sha256"] == "none"  # no lock file there
