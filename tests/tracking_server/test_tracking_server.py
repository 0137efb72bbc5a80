"""The team tracking server (PostgreSQL + `mlflow server`), 8 concurrent writers, and the MLflow UI in Chromium.

The server tests start a real PostgreSQL 15 cluster and `mlflow server` (tens of seconds on a shared
2-core machine: marked slow); the fixture stops both even when a test fails. Chromium is the Debian
package `chromium`, installed when missing (we run as root in CI; elsewhere install it yourself).
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


from vremd.eval.posetrack_ap import METRIC_NAMES
from vremd.train.tracking import Tracker, resolve_tracking_uri
from vremd.tracking_server.load import concurrent_writers
from vremd.tracking_server.server import TrackingServerError, mlflow_server, postgres
from vremd.tracking_server.ui_snapshot import ablation_runs, compare_url, render, screenshot, shared_view_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def team_server(free_port):
    """PostgreSQL + mlflow server on free ports; yields (http URI, artifacts dir). Both stopped on exit.

    The folder is a fresh /tmp/vts* (mode 755), not pytest's tmp_path: PostgreSQL runs as the `postgres`
    user, who cannot enter root's 0700 pytest folders.
    """
    root = Path(tempfile.mkdtemp(prefix="vts", dir="/tmp"))
    root.chmod(0o755)
    try:
        with postgres(root / "postgres", free_port()) as db_uri:
            with mlflow_server(db_uri, root / "artifacts", free_port(), log=root / "server.log") as uri:
                yield uri, root / "artifacts"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_new_experiment_opens_on_training_runs_and_runs_record_their_dataset(tmp_path):
    uri = resolve_tracking_uri("sqlite:///mlflow.db", tmp_path)
    tracker = Tracker.start(uri, "vremd-kind", "run", {}, {})
    tracker.log_dataset("synthetic", "0123456789abcdef0123456789abcdef.dir", tmp_path, {"train": 12, "val": 5})
    tracker.log_dataset("synthetic", "0123456789abcdef0123456789abcdef.dir", tmp_path, {"train": 12, "val": 5})
    client = MlflowClient(tracking_uri=uri)
    # MLflow 3's UI reads this tag: without it an experiment opens on the GenAI overview (traces)
    assert client.get_experiment_by_name("vremd-kind").tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = client.get_run(tracker.run_id).inputs.dataset_inputs
    assert len(inputs) == 1, "the same dataset logged twice is one input"
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == ("synthetic", "0123456789abcdef0123456789abcdef.dir")
    assert json.loads(dataset.profile) == {"train_samples": 12, "val_samples": 5}
    assert json.loads(dataset.source)["uri"] == tmp_path.as_uri()


def test_an_experiment_made_without_the_kind_gets_it(tmp_path):
    uri = resolve_tracking_uri("sqlite:///mlflow.db", tmp_path)
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("old")
    Tracker.start(uri, "old", "run", {}, {})
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_postgres_refuses_a_user_that_does_not_exist(tmp_path, free_port):
    import os

    if os.geteuid() != 0:
        pytest.skip("the unprivileged user is only needed when running as root")
    with pytest.raises(TrackingServerError, match="no-such-vremd-user: no such user"):
        with postgres(tmp_path / "pg", free_port(), os_user="no-such-vremd-user"):
            pass


@pytest.mark.slow
def test_eight_writers_on_sqlite_lose_nothing(tmp_path):
    """A new database: the first writers race its schema creation, then SQLite's single writer lock."""
    result = concurrent_writers(resolve_tracking_uri("sqlite:///mlflow.db", tmp_path), writers=8, epochs=10,
                                metrics_per_epoch=8)
    assert result.failures == ()
    assert result.found == result.expected == 8 * 10 * 8


@pytest.mark.slow
def test_eight_writers_on_the_postgres_server_lose_nothing(team_server, tmp_path):
    uri, artifacts = team_server
    result = concurrent_writers(uri, writers=8, epochs=10, metrics_per_epoch=8)
    assert result.failures == ()
    assert result.found == result.expected == 8 * 10 * 8
    tracker = Tracker.start(uri, "vremd-artifacts", "with-artifact", {}, {})
    (tmp_path / "table.md").write_text("| Head |\n")
    tracker.log_artifact(tmp_path / "table.md", "tables")
    assert tracker.failure is None
    assert [p.name for p in artifacts.rglob("table.md")] == ["table.md"], "served artifacts land on the server"


def log_two_runs(uri: str, experiment: str) -> tuple[str, list[str], dict[str, list[float]]]:
    """Two finished runs with per-joint AP metrics; returns (experiment id, run ids, metric -> values)."""
    values = {name: [] for name in METRIC_NAMES.values()}
    run_ids = []
    for k, run in enumerate(("baseline", "vremd")):
        tracker = Tracker.start(uri, experiment, run, {"model.bmd": str(bool(k))}, {})
        metrics = {name: round(50.0 + 3.1 * i + 11.7 * k, 1) for i, name in enumerate(METRIC_NAMES.values())}
        tracker.log_metrics(metrics, step=1)
        tracker.finish()
        run_ids.append(tracker.run_id)
        for name, value in metrics.items():
            values[name].append(value)
    return MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment).experiment_id, run_ids, values


@pytest.mark.slow
def test_the_ui_shows_per_joint_ap_of_both_runs(team_server, tmp_path):
    """The runs table opens on training runs (MLflow 3.17 hides metric columns there until chosen, so it
    lists the runs); the compare view shows every per-joint AP of both runs."""
    uri, _ = team_server
    exp_id, run_ids, values = log_two_runs(uri, "vremd-ui")
    table = render(f"{uri}/#/experiments/{exp_id}/runs")
    (tmp_path / "runs_table.html").write_text(table)
    for text in ("Training runs", "baseline", "vremd", "Dataset"):
        assert text in table, f"runs table: {text!r} not in the page ({tmp_path / 'runs_table.html'})"
    screenshot(compare_url(uri, exp_id, run_ids), tmp_path / "compare.png")
    compare = render(compare_url(uri, exp_id, run_ids))
    (tmp_path / "compare.html").write_text(compare)
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    for name, per_run in values.items():
        assert name in compare, f"compare view: metric {name} not in the page ({tmp_path / 'compare.html'})"
        for value in per_run:
            assert f"{value:g}" in compare, f"compare view: {name} = {value:g} not in the page"


@pytest.mark.slow
def test_ui_screenshot_shows_an_ablation_tables_trial_runs(tmp_path, monkeypatch, free_port):
    """`pipeline/ui_screenshot.py --table N` finds the table's newest parent run and its nested trials in a
    SQLite store, serves it, and writes the compare view as a PNG; a table never run is a one-line error."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker.start(uri, "vremd", "table6-smoke", {}, {"ablation.table": "6"})
    for k, row in enumerate(("DC", "DCA+BS")):
        trial = Tracker.start(uri, "vremd", f"table6/{row}/seed0", {}, {"mlflow.parentRunId": parent.run_id})
        trial.log_metrics({"ap/mean": 40.0 + 7.3 * k}, step=1)
        trial.finish()
    parent.finish()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "shot" / "compare.png"
    proc = subprocess.run([sys.executable, "pipeline/ui_screenshot.py", "--table", "6", "--out", str(out),
                           "--port", str(free_port()), "--view", "compare"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 trial runs" in proc.stdout and out.stat().st_size > 10_000
    exp_id, parent_id, runs = ablation_runs(uri, "vremd", 6)
    assert parent_id == parent.run_id and len(runs) == 2

    # the default view: Mean AP and per-joint AP of the trials, in the model-training view, stored on the experiment
    proc = subprocess.run([sys.executable, "pipeline/ui_screenshot.py", "--table", "6", "--out", str(out),
                           "--port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Mean AP and per-joint AP of table 6's 2 trial runs" in proc.stdout, proc.stderr
    assert f"open http://127.0.0.1:5000/#/experiments/{exp_id}/runs?viewStateShareKey=table6-ap" in proc.stdout
    state = json.loads(MlflowClient(uri).get_experiment(exp_id).tags["mlflow.sharedViewState.table6-ap"])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    assert state["selectedColumns"][2:4] == ["metrics.`ap/mean`", "metrics.`ap/head`"]
    with mlflow_server(uri, tmp_path / "artifacts", free_port()) as server:
        page = render(shared_view_url(server, exp_id, "table6-ap", chart=False))
    (tmp_path / "ap_view.html").write_text(page)
    for text in ("shared view", "table6/DC/seed0", "table6/DCA+BS/seed0", "ap/mean", "47.3"):
        assert text in page, f"shared AP view: {text!r} not in the page ({tmp_path / 'ap_view.html'})"

    missing = subprocess.run([sys.executable, "pipeline/ui_screenshot.py", "--table", "5", "--out", str(out)],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1 and "has no run of table 5" in missing.stderr, missing.stderr
    assert missing.stderr.startswith(f"ui_screenshot: error: {uri}:"), missing.stderr  # the user's store
