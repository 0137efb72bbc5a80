"""Faults injected into real training runs of `pipeline/train.py` (smoke size, real MLflow sqlite, real Ray):
a Ray Train worker SIGKILLed mid-epoch, the driver SIGKILLed after its first checkpoint, the MLflow
server unreachable, and checkpoint writes failing with EFBIG (RLIMIT_FSIZE, which binds root too)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path
from typing import Callable

import psutil
import pytest
import torch

from reliability_fixtures import copy_mlflow_db, kill_group, stage_env, train_argv, wait_for
from vremd.config import load_config
from vremd.model.checkpoint import CheckpointError
from vremd.train.checkpoints import load_state

RUN = "fault"


@pytest.fixture
def run_setup(smoke_data, build_smoke_data, write_params, tmp_path) -> Callable[..., Path]:
    """`run_setup(**overrides)`: tmp_path gets a params.yaml, a ready MLflow store and the smoke data (linked), or
    data of its own when an override changes `data`."""

    def make(**overrides) -> Path:
        params = write_params(tmp_path, train__val_every=0, train__checkpoint_keep=5,
                              tracking__tracking_uri="sqlite:///mlflow.db", **overrides)
        if any(key.startswith("data__") for key in overrides):
            build_smoke_data(tmp_path, load_config(params))
        else:
            smoke_data.link_into(tmp_path)
        copy_mlflow_db(tmp_path)
        return params

    return make


def _checkpoint(tmp_path: Path, epoch: int) -> Path:
    return tmp_path / "ray_results" / RUN / f"checkpoint_epoch_{epoch:04d}"


def _readable_state(path: Path) -> dict | None:
    try:
        return load_state(path)
    except CheckpointError:  # not yet (completely) written
        return None


def _registered_by_ray(tmp_path: Path, epoch: int) -> bool:
    """Whether Ray Train's controller has recorded the checkpoint of `epoch` (its snapshot lists it)."""
    try:
        snap = json.loads((tmp_path / "ray_results" / RUN / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return any(r.get("checkpoint_dir_name") == _checkpoint(tmp_path, epoch).name for r in snap.get("checkpoint_results", []))


def _snapshot_first_checkpoint(tmp_path: Path, proc: subprocess.Popen, ray: bool = False,
                               also: Callable[[], None] = lambda: None) -> dict:
    """Wait for epoch 1's checkpoint (with Ray: recorded by the controller too); return its state.

    history[0] holds a measured, run-unique speed, so a later history[0] equal to it proves epoch 1
    was not trained again. `also` runs on every poll (e.g. to note the worker's pid).
    """
    state: dict = {}

    def ready() -> bool:
        also()
        if not state:
            state.update(_readable_state(_checkpoint(tmp_path, 1)) or {})
        return bool(state) and (not ray or _registered_by_ray(tmp_path, 1))

    wait_for(ready, proc, 300, "the first checkpoint")
    assert state["epoch"] == 1
    return state


def _final(tmp_path: Path) -> dict:
    return torch.load(tmp_path / "models" / "final.pt", map_location="cpu", weights_only=True)


def _start(tmp_path: Path, params: Path, **env) -> subprocess.Popen:
    """Start the training command in the background, its output going to `train.log` (a pipe could fill up)."""
    log = open(tmp_path / "train.log", "w")
    return subprocess.Popen(train_argv(tmp_path, params, RUN), cwd=tmp_path, env=stage_env(**env), stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _run(tmp_path: Path, params: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(train_argv(tmp_path, params, RUN), cwd=tmp_path, env=stage_env(**env),
                          capture_output=True, text=True, timeout=500)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "ray"])
def test_driver_killed_after_first_checkpoint_resumes_on_rerun(run_setup, tmp_path, workers):
    params = run_setup(train__epochs=3, train__num_workers=workers)
    proc = _start(tmp_path, params)
    try:
        first = _snapshot_first_checkpoint(tmp_path, proc, ray=workers > 0)
        proc.send_signal(signal.SIGKILL)  # the fault: the driver dies without any cleanup
    finally:
        kill_group(proc)
    assert proc.returncode == -9
    assert not (tmp_path / "models" / "final.pt").exists()
    mtime = (_checkpoint(tmp_path, 1) / "state.pt").stat().st_mtime_ns
    run_id = (tmp_path / "ray_results" / RUN / "mlflow_run_id").read_text()

    again = _run(tmp_path, params)
    assert again.returncode == 0, again.stdout + again.stderr
    final = _final(tmp_path)
    assert final["epoch"] == 3 and len(final["history"]) == 3
    # it resumed (started at epoch > 0): epoch 1's record, with its measured speed, is the killed run's
    assert final["history"][0] == first["history"][0]
    assert (_checkpoint(tmp_path, 1) / "state.pt").stat().st_mtime_ns == mtime
    assert final["mlflow_run_id"] == run_id  # and the same MLflow run continued


@pytest.mark.slow
def test_ray_worker_killed_mid_epoch_restarts_from_last_checkpoint(run_setup, tmp_path):
    params = run_setup(train__epochs=4, train__num_workers=1, train__max_failures=1,
                    data__synthetic__train_videos=4, data__synthetic__min_frames=10, data__synthetic__max_frames=12)
    proc = _start(tmp_path, params)
    workers: set[int] = set()

    def note_workers() -> None:
        try:
            workers.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True)
                           if "RayTrainWorker" in " ".join(p.cmdline()))
        except psutil.Error:  # a process ended while being listed
            pass

    try:
        first = _snapshot_first_checkpoint(tmp_path, proc, ray=True, also=note_workers)
        assert len(workers) == 1, f"expected one Ray Train worker among the driver's descendants, found {workers}"
        (killed,) = workers
        psutil.Process(killed).send_signal(signal.SIGKILL)  # the fault: epoch 2 is under way in this worker
        assert proc.poll() is None, "the run ended before the worker could be killed"
        wait_for(lambda: note_workers() or proc.poll() is not None, None, 400, "the end of the run")
    finally:
        kill_group(proc)
    out = (tmp_path / "train.log").read_text()
    assert proc.returncode == 0, out[-5000:]
    final = _final(tmp_path)
    assert final["epoch"] == 4 and [h["epoch"] for h in final["history"]] == [1, 2, 3, 4]
    assert final["history"][0] == first["history"][0]  # restored from checkpoint 1, not retrained
    assert workers - {killed}, "no replacement worker process was started"


@pytest.mark.slow
def test_unreachable_mlflow_server_training_completes_with_local_files(run_setup, free_port, tmp_path):
    params = run_setup(train__epochs=1, train__num_workers=0)
    port = free_port()  # a port nothing listens on
    done = _run(tmp_path, params, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"MLflow was not reachable (MLflow at http://127.0.0.1:{port}" in done.stdout
    assert "results are kept in local files only" in done.stderr  # the warning at the first failure
    assert "Traceback" not in done.stdout + done.stderr
    final = _final(tmp_path)
    assert final["epoch"] == 1 and final["mlflow_run_id"] is None
    assert (tmp_path / "metrics" / "train_curve.csv").read_text().count("\n") == 2
    assert load_state(_checkpoint(tmp_path, 1))["epoch"] == 1


def _ignore_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE then fail with EFBIG


@pytest.mark.slow
def test_checkpoint_write_failure_is_clear_and_keeps_previous_checkpoint(run_setup, tmp_path):
    params = run_setup(train__epochs=2, train__num_workers=0)
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(train_argv(tmp_path, params, RUN), cwd=tmp_path, env=stage_env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=_ignore_sigxfsz)
    try:
        first = _snapshot_first_checkpoint(tmp_path, proc)
        size = (_checkpoint(tmp_path, 1) / "state.pt").stat().st_size
        limit = size // 2  # the fault: from now on no file of this process may grow past half a checkpoint
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        proc.wait(timeout=300)
    finally:
        kill_group(proc)
    out = (tmp_path / "train.log").read_text()
    assert proc.returncode == 1, out[-5000:]
    assert "train: error:" in out and "state.pt: cannot write checkpoint" in out, out[-3000:]
    assert "the previous checkpoint is kept" in out and "Traceback" not in out
    assert not _checkpoint(tmp_path, 2).exists() and not (tmp_path / "models" / "final.pt").exists()
    assert not list((tmp_path / "ray_results" / RUN).glob(".*")), "staging or temp files left in the run folder"
    kept = load_state(_checkpoint(tmp_path, 1))
    assert kept["epoch"] == 1 and kept["history"] == first["history"]

    again = _run(tmp_path, params)  # the disk has room again: the same command resumes and finishes
    assert again.returncode == 0, again.stdout + again.stderr
    assert _final(tmp_path)["epoch"] == 2 and _final(tmp_path)["history"][0] == first["history"][0]
