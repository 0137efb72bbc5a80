"""A finished run is reused only for the same data, code, weights and result-changing settings.

Before: the run name hashed config keys only, so training on another index or after a code change
returned the first run's checkpoint. Now every checkpoint records its `RunIdentity`, run names and
ablation training ids hash it, and a run folder of other inputs is refused (or, by default name,
never even looked at).
"""

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vremd.config import config_to_dict, smoke_config
from vremd.ablation.grid import build_grid, identities, load_tables
from vremd.ablation.reuse import adopt_finished_twin
from vremd.train.checkpoints import load_state, save_state
from vremd.train.identity import code_hash, data_hash, run_identity, training_digest, training_keys
from vremd.train.loop import RunPaths
from vremd.train.ray_train import fit
from vremd.train.checkpoints import latest_checkpoint
from vremd.train.runs import RunMismatchError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "reliability"))
from fresh_clone import copy_files  # noqa: E402
from reliability_fixtures import copy_mlflow_db, stage_env  # noqa: E402
from test_train_loop import with_train  # noqa: E402




@pytest.fixture(scope="module")
def two_datasets(smoke_data, build_smoke_data, tmp_path_factory):
    """The smoke data, and the same recipe with another synthetic seed: other data, same config keys."""
    torch.set_num_threads(1)
    cfg = with_train(smoke_data.cfg, val_every=0)
    other = dataclasses.replace(cfg.data.synthetic, seed=1)
    b = build_smoke_data(tmp_path_factory.mktemp("identity-b"),
                         dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic=other)))
    return cfg, smoke_data.run_paths(), b.run_paths()


@pytest.fixture()
def code_copy(tmp_path):
    """A copy of this checkout's vremd/ and pipeline/ sources: a code root the test may edit."""
    return copy_files(tmp_path / "code", only=("vremd", "pipeline"))


def test_identity_follows_data_code_and_weights(two_datasets, code_copy, tmp_path):
    cfg, a, b = two_datasets
    assert data_hash(Path(a.index_dir), Path(a.gt_dir)) == data_hash(Path(a.index_dir), Path(a.gt_dir))
    assert data_hash(Path(a.index_dir), Path(a.gt_dir)) != data_hash(Path(b.index_dir), Path(b.gt_dir))
    before = code_hash(code_copy)
    assert before == code_hash(REPO)  # the copy is this checkout's code
    (code_copy / "vremd" / "__pycache__").mkdir(exist_ok=True)
    (code_copy / "vremd" / "__pycache__" / "x.py").write_text("# compiled cache: not code\n")
    assert code_hash(code_copy) == before
    heads = code_copy / "vremd" / "model" / "heads.py"
    heads.write_text(heads.read_text() + "\n# a changed source file\n")
    assert code_hash(code_copy) != before
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"one")
    with_weights = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=str(weights)))
    first = run_identity(with_weights, Path(a.index_dir), Path(a.gt_dir), threads=1).weights
    weights.write_bytes(b"two")  # replaced weights at the same path
    assert run_identity(with_weights, Path(a.index_dir), Path(a.gt_dir), threads=1).weights not in ("", first)


def test_the_lock_file_and_the_thread_count_are_part_of_the_identity(two_datasets, code_copy, tmp_path):
    """Issue 32 item 11: a different torch pin returned the old finished run, and a 1-thread run returned the
    2-thread run (weights differ by 5.7e-7): neither was part of the identity."""
    cfg, a, _ = two_datasets
    ours = run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=1)
    assert ours.lock == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    (code_copy / "requirements.lock").write_text("torch==0.0.1\n")  # the same code under another pin
    pinned = run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=1, code_root=code_copy)
    assert pinned.code == ours.code and pinned.lock == hashlib.sha256(b"torch==0.0.1\n").hexdigest()
    name = training_digest(config_to_dict(cfg), ours)  # the default run name's hash
    assert training_digest(config_to_dict(cfg), pinned) != name
    assert training_digest(config_to_dict(cfg), dataclasses.replace(ours, threads=2)) != name

    fit(cfg, a, tmp_path, "run", identity=ours)
    with pytest.raises(RunMismatchError, match=r"\(torch threads: 1 -> 2\)"):
        fit(cfg, a, tmp_path, "run", identity=dataclasses.replace(ours, threads=2))
    lock_diff = rf"\(lock file requirements.lock: {ours.lock[:12]} -> {pinned.lock[:12]}\)"
    with pytest.raises(RunMismatchError, match=lock_diff):
        fit(cfg, a, tmp_path, "run", identity=pinned)
    latest = latest_checkpoint(tmp_path / "run")
    state = load_state(latest)  # as an older checkout wrote it: no lock file or thread count recorded
    state["identity"] = {k: v for k, v in state["identity"].items() if k not in ("lock", "threads")}
    save_state(latest, state)
    with pytest.raises(RunMismatchError, match=r"lock file requirements.lock: not recorded \(an older run\) -> "
                                                r"[0-9a-f]{12}, torch threads: not recorded \(an older run\) -> 1"):
        fit(cfg, a, tmp_path, "run", identity=ours)  # never taken as equal


def test_the_training_runs_on_the_thread_count_of_its_identity(two_datasets, tmp_path):
    cfg, a, _ = two_datasets
    two = run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=2)
    try:
        fit(cfg, a, tmp_path, "two", identity=two)  # this process runs with 1 thread (the module's fixture)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert load_state(latest_checkpoint(tmp_path / "two"))["identity"]["threads"] == 2


def test_settings_that_change_results_name_the_training():
    keys = training_keys(config_to_dict(smoke_config()))
    assert "train.num_workers" in keys and "train.use_gpu" in keys  # per-worker batch, BatchNorm; bf16 autocast
    assert "train.loader_workers" not in keys and "train.checkpoint_keep" not in keys  # speed / disk only
    assert "model.pretrained" not in keys and "data.urls" not in keys  # where, not what: hashed as content
    ident = {"data": "d", "code": "c", "lock": "l", "threads": 1, "weights": ""}
    base = training_digest(config_to_dict(smoke_config()), ident)
    assert training_digest(config_to_dict(with_train(smoke_config(), num_workers=2)), ident) != base
    assert training_digest(config_to_dict(with_train(smoke_config(), loader_workers=2)), ident) == base
    assert training_digest(config_to_dict(smoke_config()), {**ident, "data": "e"}) != base
    assert training_digest(config_to_dict(smoke_config()), {**ident, "code": "e"}) != base
    # the history's validation AP is scored with these (issue 32: a changed oks_nms returned the old run)
    detect = dataclasses.replace(smoke_config().detect, oks_nms=0.0)
    assert training_digest(config_to_dict(dataclasses.replace(smoke_config(), detect=detect)), ident) != base


def test_a_run_folder_of_other_data_or_code_is_refused_same_inputs_are_reused(two_datasets, code_copy, tmp_path):
    cfg, a, b = two_datasets
    first = fit(cfg, a, tmp_path, "run")
    recorded = load_state(first.checkpoint_dir)["identity"]
    assert recorded == run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=1).as_dict()
    stamp = (first.checkpoint_dir / "state.pt").stat().st_mtime_ns
    again = fit(cfg, a, tmp_path, "run")  # identical inputs: returned as is, nothing trained
    assert again.checkpoint_dir == first.checkpoint_dir and (again.checkpoint_dir / "state.pt").stat().st_mtime_ns == stamp
    with pytest.raises(RunMismatchError, match=r"data: [0-9a-f]{12} -> [0-9a-f]{12}"):
        fit(cfg, b, tmp_path, "run")  # before: returned the first run's weights for the other data
    heads = code_copy / "vremd" / "model" / "heads.py"
    heads.write_text(heads.read_text() + "\n# a changed source file\n")
    changed = run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=1, code_root=code_copy)
    with pytest.raises(RunMismatchError, match=r"code: [0-9a-f]{12} -> [0-9a-f]{12}"):
        fit(cfg, a, tmp_path, "run", identity=changed)
    assert load_state(latest_checkpoint(tmp_path / "run"))["identity"]["data"] == \
        data_hash(Path(a.index_dir), Path(a.gt_dir))  # the refused runs left the folder as it was


def test_ablation_twin_is_adopted_only_with_the_same_identity(two_datasets, tmp_path):
    cfg, a, b = two_datasets
    storage = tmp_path / "ray_results"
    trials = {k: build_grid(cfg, load_tables(REPO / "experiments" / "ablations.yaml")[k], 1,
                            identity_of=identities(a.index_dir, Path(a.gt_dir).parents[2], lambda cfg: 1))
              for k in (4, 6)}
    (twin,) = [t for t in trials[6] if t.row == "DCA+BS"]
    (ours,) = [t for t in trials[4] if t.row == "VREMD"]
    assert twin.training_id == ours.training_id  # the same training in two tables
    other = build_grid(cfg, load_tables(REPO / "experiments" / "ablations.yaml")[4], 1,
                       identity_of=identities(b.index_dir, Path(b.gt_dir).parents[2], lambda cfg: 1))
    assert {t.training_id for t in other}.isdisjoint({t.training_id for t in trials[4]})  # other data: other ids

    identity_a = run_identity(cfg, Path(a.index_dir), Path(a.gt_dir), threads=1)
    assert twin.identity == identity_a.as_dict()
    fit(cfg, a, storage / "table6-smoke-runs", twin.run_name, identity=identity_a)
    identity_b = run_identity(cfg, Path(b.index_dir), Path(b.gt_dir), threads=1)
    # a folder named as if its training id matched but trained on other data (edited, or a hash collision)
    assert adopt_finished_twin(cfg, identity_b, storage / "table4-smoke-runs", "VREMD-x", twin.training_id) is None
    for other in (dataclasses.replace(identity_a, threads=2), dataclasses.replace(identity_a, lock="0" * 64)):
        assert adopt_finished_twin(cfg, other, storage / "table4-smoke-runs", "VREMD-y", twin.training_id) is None
    adopted = adopt_finished_twin(cfg, identity_a, storage / "table4-smoke-runs", ours.run_name, ours.training_id)
    assert adopted is not None and adopted.source.name == twin.run_name


def _argv(root: Path, params: Path, index: RunPaths) -> list[str]:
    return ["--params", str(params), "--index", index.index_dir, "--raw", str(Path(index.gt_dir).parents[2]),
            "--out", str(root / "models"), "--curve", str(root / "curve.csv"), "--storage", str(root / "ray_results"),
            "--no-progress"]


def _run_dir(stdout: str) -> Path:
    return Path(re.search(r"checkpoints in (\S+)", stdout).group(1))


@pytest.mark.slow
def test_train_cli_trains_again_for_new_data_or_changed_code_and_reuses_identical_inputs(two_datasets, code_copy,
                                                                                         write_params, tmp_path, capsys):
    from pipeline import train

    cfg, a, b = two_datasets
    params = write_params(tmp_path, cfg, tracking__run_name="cli")  # val_every 0
    copy_mlflow_db(tmp_path)
    assert train.main(_argv(tmp_path, params, a)) == 0
    out = capsys.readouterr().out
    first = _run_dir(out)
    assert "epoch 1/1" in out
    weights = torch.load(tmp_path / "models" / "final.pt", weights_only=True)["model"]

    assert train.main(_argv(tmp_path, params, a)) == 0  # identical inputs: the finished run is returned
    out = capsys.readouterr().out
    assert _run_dir(out) == first and "epoch 1/1" not in out

    assert train.main(_argv(tmp_path, params, b)) == 0  # new data: trains again, in its own run
    out = capsys.readouterr().out
    other = _run_dir(out)
    assert other != first and "epoch 1/1" in out
    new = torch.load(tmp_path / "models" / "final.pt", weights_only=True)["model"]
    assert any(not torch.equal(new[k], weights[k]) for k in weights)  # before: bit-identical to the first run's

    # a changed source file: pipeline/train.py of an edited copy of this checkout, its own vremd imported
    heads = code_copy / "vremd" / "model" / "heads.py"
    heads.write_text(heads.read_text() + "\n# a changed source file\n")
    proc = subprocess.run([sys.executable, str(code_copy / "pipeline" / "train.py"), *_argv(tmp_path, params, a)],
                          cwd=tmp_path, env=stage_env(PYTHONPATH=str(code_copy)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    changed = _run_dir(proc.stdout)
    assert changed not in (first, other) and "epoch 1/1" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "ray_results").iterdir()) == sorted([first.name, other.name, changed.name])
