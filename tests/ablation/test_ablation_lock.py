"""vremd.ablation.lock: one `ablate.py` per table; a second one stops at once naming the lock file and its holder,
and a holder that died blocks nobody."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipeline.ablate as ablate
from tests.reliability.reliability_fixtures import REPO, stage_env
from vremd.ablation.lock import LockHeldError, exclusive_lock, lock_table, table_lock_paths


def _ablate_argv(data, work: Path, profile_args: tuple[str, ...] = ("--profile", "smoke")) -> list[str]:
    return ["--table", "6", *profile_args, "--index", str(data.index), "--raw", str(data.raw),
            "--storage", str(work / "ray_results"), "--out", str(work / "results"),
            "--set", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}"]


@pytest.mark.slow  # the second process's imports and input checks: about 15 s alone, a minute on a busy machine
def test_a_second_ablate_process_stops_at_once_naming_the_lock_and_its_holder(smoke_data, tmp_path):
    """The first run is this test process holding the table's locks (the same library call ablate.py makes); the
    second is a real `pipeline/ablate.py` process on the same --storage and --out."""
    experiment_lock, _ = table_lock_paths(tmp_path / "ray_results", tmp_path / "results", 6, "smoke")
    with lock_table(tmp_path / "ray_results", tmp_path / "results", 6, "smoke", "ablate.py --table 6 (the first)"):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(REPO / "pipeline" / "ablate.py"), *_ablate_argv(smoke_data, tmp_path)],
                              cwd=tmp_path, env=stage_env(), capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - start
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(errors) == 1, proc.stdout + proc.stderr
    assert errors[0].startswith(f"ablate: error: {experiment_lock}: the Tune experiment table6-smoke is in use by "
                                f"pid {os.getpid()} on {socket.gethostname()} since "), errors[0]
    assert errors[0].endswith(": ablate.py --table 6 (the first); wait for it to end (a holder that died has "
                              "released the lock)"), errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr and seconds < 120  # no Ray, no trial: the imports only
    # nothing touched: no Tune experiment, no results folder, no MLflow store
    assert sorted(p.name for p in (tmp_path / "ray_results").iterdir()) == [experiment_lock.name]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [".table6.lock"]
    assert not (tmp_path / "mlflow.db").exists()


def test_the_results_folder_has_its_own_lock(smoke_data, tmp_path, capsys):
    """Another profile (or another --storage) runs another Tune experiment but writes the same results folder."""
    _, results_lock = table_lock_paths(tmp_path / "other_storage", tmp_path / "results", 6, "demo")
    with exclusive_lock(results_lock, "the results folder", "ablate.py --profile demo"):
        assert ablate.main(_ablate_argv(smoke_data, tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"ablate: error: {results_lock}: the results folder {tmp_path / 'results' / 'table6'} is in use by " in err
    assert err.strip().endswith("released the lock)") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ray_results" / "table6-smoke").exists() and not (tmp_path / "results" / "table6").exists()


def test_a_holder_that_died_blocks_nobody(tmp_path):
    """flock is released by the kernel when its holder's descriptors close, which any exit does (here SIGKILL):
    the next run takes the lock at once and records itself over the dead holder's line."""
    storage, out = tmp_path / "ray_results", tmp_path / "results"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vremd.ablation.lock import lock_table\n"
         f"with lock_table({str(storage)!r}, {str(out)!r}, 6, 'smoke', 'the doomed holder'):\n"
         "    print('holding', flush=True)\n    time.sleep(600)\n"],
        cwd=REPO, env=stage_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(LockHeldError, match=rf"pid {holder.pid} on .*: the doomed holder"):
            with lock_table(storage, out, 6, "smoke", "me"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    for lock in table_lock_paths(storage, out, 6, "smoke"):
        assert json.loads(lock.read_text())["pid"] == holder.pid  # the dead holder's line stays ...
    with lock_table(storage, out, 6, "smoke", "me"):
        for lock in table_lock_paths(storage, out, 6, "smoke"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()  # ... until the next holder writes its own
            assert json.loads(lock.read_text())["command"] == "me"
