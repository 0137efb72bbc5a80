"""How each Ray node gets the data (docs/ray_cluster.md, "The data on every node"): `dvc push` where the data
stages ran, `git clone` + `dvc pull --with-deps preprocess` on the node, with a local folder as the DVC remote.

Real DVC and git in temporary copies of the repo on the smoke-sized demo profile. The node's clone starts with
an empty DVC cache, so everything it has came through the remote; it must get the same bytes the stages made.
"""

import hashlib
import subprocess
from pathlib import Path

import pytest
from fresh_clone import copy_checkout, smoke_demo_params
from test_dvc_repro import _run

pytestmark = pytest.mark.slow

DATA = ("data/raw", "data/crops", "data/index")  # what a training node reads


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _md5s(repo: Path) -> dict[str, str]:
    """md5 of every file under DATA, by path relative to the repo."""
    return {str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
            for folder in DATA for p in sorted((repo / folder).rglob("*")) if p.is_file()}


def test_a_node_pulls_the_stages_data_from_the_remote(tmp_path):
    producer = copy_checkout(tmp_path / "producer", params=smoke_demo_params())
    remote = tmp_path / "remote"  # a real cluster: a shared mount, s3://, ssh://, ...
    _ok(_run(["dvc", "repro", "preprocess"], producer))  # download -> crops -> preprocess
    _ok(_run(["dvc", "remote", "add", "-d", "nodes", str(remote)], producer))
    pushed = _ok(_run(["dvc", "push", "--with-deps", "preprocess"], producer))
    _ok(_run(["git", "add", "-A"], producer))  # dvc.lock (the data's md5s) and .dvc/config (the remote)
    _ok(_run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "data"], producer))

    node = tmp_path / "node"
    _ok(_run(["git", "clone", "-q", str(producer), str(node)], tmp_path))
    assert not (node / "data" / "index").exists() and not (node / ".dvc" / "cache").exists()
    pulled = _ok(_run(["dvc", "pull", "--with-deps", "preprocess"], node))
    assert "files added" in pulled or "fetched" in pulled, pulled
    made = _md5s(producer)
    assert made == _md5s(node), "the node's data differs from the data the stages made"
    assert {"data/index/train.parquet", "data/index/val.parquet"} <= set(made)
    assert any(name.startswith("data/crops/") for name in made) and any(name.startswith("data/raw/") for name in made)
    status = _ok(_run(["dvc", "status", "--with-deps", "preprocess"], node))
    assert "up to date" in status, status  # the pulled outs are the ones dvc.lock records: nothing to re-run
    assert not list((node / "models").glob("*.pt")), "only the data stages' outs were pulled"
    print(f"pushed: {pushed.strip().splitlines()[-1]}; pulled: {pulled.strip().splitlines()[-1]}; {len(made)} files")
