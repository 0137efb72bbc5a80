"""An ablation table on a real two-node Ray cluster on this machine, one node lost mid-trial.

A head (`ray start --head`, 1 CPU, resource `head_node`) and a second node that joins it (`ray start
--address`, 1 CPU, resource `second_node`), each a `ray start --block` child with its own temp dir and
process group (tests/ray_nodes.py). `pipeline/ablate.py --ray-address` runs table 6 unfused (4 one-CPU
trials, so two at a time: one per node) with its trainings in a `--storage` folder both nodes write (the
shared mount of a real cluster) and MLflow on the PostgreSQL-backed tracking server. When the second
node has finished one trial and is partway through another, its process group is SIGKILLed: Tune
retries that trial (`--max-failures 1`) on the head, where it resumes from the checkpoint the lost
node wrote, and the table completes. Every node id comes from the trials themselves (`node_id` in
trials.csv / results.json and in each run's attempts.jsonl).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_nodes import RayNode, node_env, node_ids, start_node, wait_for_nodes

from tests.tracking_server.test_tracking_server import team_server  # noqa: F401 (fixture: PostgreSQL + mlflow server)
from vremd.ablation.trials import ATTEMPTS_FILE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 8  # long enough to lose a node partway through a trial, short enough for a test
ROWS = {"DC", "DA", "DCA", "DCA+BS"}


@pytest.fixture
def two_nodes(free_port):
    """(address, head, second node, {"head_node": id, "second_node": id}); both nodes stopped afterwards."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_node("--head", f"--port={port}", "--num-cpus=1", '--resources={"head_node": 1}',
                      "--include-dashboard=false")
    second = None
    try:
        wait_for_nodes(address, 1, [head])
        second = start_node(f"--address={address}", "--num-cpus=1", '--resources={"second_node": 1}')
        wait_for_nodes(address, 2, [head, second])
        yield address, head, second, node_ids(address, ["head_node", "second_node"])
    finally:
        if second is not None:
            second.stop()
        head.stop()


def _attempt_nodes(run_dir: Path) -> list[str]:
    """The node id of each start of the trial training in `run_dir` (complete lines of attempts.jsonl)."""
    path = run_dir / ATTEMPTS_FILE
    lines = path.read_text().split("\n")[:-1] if path.is_file() else []
    return [json.loads(line)["node_id"] for line in lines]


def _epochs_done(run_dir: Path) -> int:
    return max((int(p.name.rsplit("_", 1)[1]) for p in run_dir.glob("checkpoint_epoch_*")), default=0)


def _lose_node_mid_trial(runs: Path, node: RayNode, node_id: str, driver: subprocess.Popen, log: Path,
                         timeout_s: float = 600) -> tuple[Path, int]:
    """Wait until `node` finished a trial and is partway through another, SIGKILL all of its processes (its
    workers too: see RayNode.kill); return that trial's run dir and its epochs done (checkpointed) by then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the table ended before a node was lost:\n{log.read_text()[-6000:]}"
        on_node = [d for d in runs.glob("*-seed0-*") if _attempt_nodes(d) == [node_id]]
        finished = [d for d in on_node if _epochs_done(d) == EPOCHS]
        partway = [d for d in on_node if 1 <= _epochs_done(d) < EPOCHS - 1]  # an epoch to spare before the kill
        if finished and partway:
            node.kill()
            return partway[0], _epochs_done(partway[0])
        time.sleep(0.25)
    pytest.fail(f"no second trial on the second node within {timeout_s:.0f} s:\n{log.read_text()[-6000:]}")


@pytest.mark.timeout(1200)
def test_a_table_runs_on_both_nodes_and_finishes_after_losing_one(smoke_data, team_server, two_nodes,  # noqa: F811
                                                                   tmp_path):
    uri, _ = team_server
    address, _, second, ids = two_nodes
    storage, out, log = tmp_path / "shared", tmp_path / "results", tmp_path / "ablate.log"
    cmd = [sys.executable, "pipeline/ablate.py", "--table", "6", "--profile", "smoke", "--seeds", "1", "--no-fuse",
           "--max-failures", "1", "--set", f"train.epochs={EPOCHS}", "--ray-address", address,
           "--index", str(smoke_data.index), "--raw", str(smoke_data.raw), "--storage", str(storage),
           "--out", str(out)]
    started = time.monotonic()
    with open(log, "w") as log_file:
        driver = subprocess.Popen(cmd, cwd=ROOT, env={**node_env(), "MLFLOW_TRACKING_URI": uri}, stdout=log_file,
                                  stderr=subprocess.STDOUT)
    try:
        lost, epochs_then = _lose_node_mid_trial(storage / "table6-smoke-runs", second, ids["second_node"], driver, log)
        lost_at = time.monotonic()
        rc = driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    print(f"table: {time.monotonic() - started:.0f} s; second node lost after {lost_at - started:.0f} s, "
          f"{lost.name} at epoch {epochs_then}/{EPOCHS}")
    text = log.read_text()
    assert rc == 0, text[-6000:]

    trials = {t["row"]: t for t in csv.DictReader((out / "table6" / "trials.csv").open())}
    assert set(trials) == ROWS and all(t["status"] == "finished" for t in trials.values()), trials
    assert {t["node_id"] for t in trials.values()} == set(ids.values())  # results came from both nodes
    (victim,) = [row for row, t in trials.items() if t["run_name"] == lost.name]
    assert trials[victim]["node_id"] == ids["head_node"]  # retried on the head ...
    assert _attempt_nodes(lost) == [ids["second_node"], ids["head_node"]]  # ... after its start on the lost node
    saved = json.loads((out / "table6" / "results.json").read_text())
    assert {t["row"]: t["node_id"] for t in saved["trials"]} == {row: t["node_id"] for row, t in trials.items()}
    for t in trials.values():  # every training's checkpoints are in the shared storage folder
        assert (storage / "table6-smoke-runs" / t["run_name"] / f"checkpoint_epoch_{EPOCHS:04d}" / "state.pt").is_file()

    client = MlflowClient(uri)  # the tracking server has the parent and one finished nested run per row
    parent = client.get_run(saved["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["ablation.row"]: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == ROWS and all(r.info.status == "FINISHED" for r in children.values())
    assert {row: r.info.run_id for row, r in children.items()} == {row: t["mlflow_run_id"] for row, t in trials.items()}
    steps = [m.step for m in client.get_metric_history(children[victim].info.run_id, "loss")]
    # the retry resumed from the lost node's checkpoint: epoch 1 was trained (and logged) once, every epoch is there
    assert steps.count(1) == 1 and sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
