"""The MLflow UI as a user sees it: pages rendered by headless Chromium, and an ablation's compare view.

Chromium is the Debian package `chromium` (`apt-get install -y chromium`); `chromium()` installs it
when missing and we are root, and otherwise names the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from mlflow.tracking import MlflowClient


class UISnapshotError(RuntimeError):
    """Chromium is missing, or the store holds no such ablation table."""


def chromium() -> str:
    """The chromium binary, installed with apt-get when missing (as root only)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True)
        found = shutil.which("chromium")
    if found is None:
        raise UISnapshotError("chromium not found: install the Debian package `chromium` (apt-get install -y chromium)")
    return found


def _headless(url: str, action: str, budget_ms: int, size: str) -> str:
    """Headless Chromium on `url` for `budget_ms` of virtual time with window `size` ("width,height"), then `action`."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--virtual-time-budget={budget_ms}", f"--window-size={size}", action, url]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=180).stdout


def render(url: str, budget_ms: int = 30000, size: str = "1600,1000") -> str:
    """The DOM of `url` after headless Chromium ran its scripts for `budget_ms` of virtual time."""
    return _headless(url, "--dump-dom", budget_ms, size)


def screenshot(url: str, png: Path, budget_ms: int = 30000, size: str = "1600,1000") -> None:
    """`url` as the PNG `png`, after its scripts ran for `budget_ms` of virtual time."""
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    _headless(url, f"--screenshot={png}", budget_ms, size)


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    """The UI's compare view of `run_ids` (all in experiment `experiment_id`)."""
    return f"{server}/#/compare-runs?runs={json.dumps(run_ids)}&experiments={json.dumps([experiment_id])}"


SHARE_TAG = "mlflow.sharedViewState."  # + key: an experiment tag the UI opens as a view (its "Share" button)


def metrics_view_state(parent_run_id: str, metrics: Sequence[str], chart_filter: str, tags: Sequence[str] = ()) -> dict:
    """A view of the experiment's runs as the MLflow 3 UI restores it from a shared view state: the nested runs
    of `parent_run_id`, best `metrics[0]` first, the columns `metrics` and `tags`, every run shown in the charts,
    and only the charts whose metric name contains `chart_filter`."""
    quoted = lambda kind, name: f"{kind}.`{name}`"  # noqa: E731  (the UI's column keys)
    return {"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            "orderByKey": quoted("metrics", metrics[0]), "orderByAsc": False,
            "selectedColumns": [quoted("tags", t) for t in tags] + [quoted("metrics", m) for m in metrics],
            "runsHiddenMode": "SHOW_ALL", "chartsSearchFilter": chart_filter, "hideEmptyCharts": True}


def share_view(tracking_uri: str, experiment_id: str, key: str, state: dict) -> None:
    """Store `state` (`metrics_view_state`) as the experiment's shared view `key`."""
    MlflowClient(tracking_uri=tracking_uri).set_experiment_tag(experiment_id, SHARE_TAG + key, json.dumps(state))


def shared_view_url(server: str, experiment_id: str, key: str, chart: bool = True) -> str:
    """The UI's page of experiment `experiment_id` opened on its shared view `key`: the model-training (not GenAI)
    view, its runs as charts (`chart`) or as the table."""
    mode = "CHART" if chart else "TABLE"
    return (f"{server}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode={mode}"
            "&workflowType=machine_learning")


def ablation_runs(tracking_uri: str, experiment: str, table: int,
                  store: str | None = None) -> tuple[str, str, list[str]]:
    """The newest MLflow parent run of ablation table `table`: (experiment id, parent run id, its nested run ids).

    Errors name `store` (the user's store, where `tracking_uri` is a server in front of it), else `tracking_uri`.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    store = store or tracking_uri
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UISnapshotError(f"{store}: no experiment {experiment!r}")
    tagged = client.search_runs([exp.experiment_id], f"tags.`ablation.table` = '{table}'",
                                order_by=["attributes.start_time DESC"], max_results=500)
    parents = [r.info.run_id for r in tagged if "mlflow.parentRunId" not in r.data.tags]  # trials carry the tag too
    if not parents:
        raise UISnapshotError(f"{store}: experiment {experiment!r} has no run of table {table} "
                              f"(run `python pipeline/ablate.py --table {table}` first)")
    parent = parents[0]
    nested = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                order_by=["attributes.run_name ASC"], max_results=200)
    if not nested:
        raise UISnapshotError(f"{store}: table {table}'s parent run {parent} has no nested trial runs yet")
    return exp.experiment_id, parent, [r.info.run_id for r in nested]
