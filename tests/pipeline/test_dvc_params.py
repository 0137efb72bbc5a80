"""dvc.yaml's params deps are exactly the config keys each stage reads, so they cannot drift.

Each stage's command, as dvc.yaml writes it, runs in-process on a smoke-sized demo project while
`config_reads.ConfigReads` records every key read from the frozen config (Ray workers and Tune trials through
the runtime env's setup hook). A stage that reads a key must list it, or a section holding it; a listed key or
section must be read, all of it (a section holding a key the stage never reads reruns it for nothing). Keys
marked `NEUTRAL` on their field (worker counts, retries, kept checkpoints, MLflow naming: vremd/config.py) are
never params deps, as STYLE.md says; `profile` may be listed (it puts the profile in `dvc exp show`): every
`profiles.${profile}.*` name follows it anyway. Variants cover the branches the demo does not take: a real
archive for `download`, `data.val_boxes: detect` for `detect`.

Before (issue 32): `train` and `evaluate` read detect.oks_nms and detect.keypoint_threshold unlisted, so
`dvc exp run -S profiles.demo.detect.oks_nms=0.0` re-ran nothing and `dvc exp show` kept the old AP.
"""

from __future__ import annotations

import contextlib
import importlib
import shlex
from pathlib import Path

import pytest
import ray
import torch
import yaml
from fresh_clone import smoke_demo_params
from torchvision.models import detection

from tests.data.sources.test_download import pack, sha256, write_posetrack18
from tests.pipeline.config_reads import READS_FILE_ENV, ConfigReads, install_in_worker
from vremd.config import PATH_KEYS, Config, config_from_saved, config_to_dict, leaf_types, load_config, neutral_keys
from vremd.pretrain import pretraining_config
from vremd.train.identity import training_keys

ROOT = Path(__file__).resolve().parents[2]
DVC_FILES = ("dvc.yaml", "experiments/dvc.yaml")
PROFILE = "demo"
PREFIX = "profiles.${profile}."
ALLOWED = {"profile"}  # the key that picks the profile: every `profiles.${profile}.*` dep name changes with it
LIGHT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
# the ablation tables share one deps and params list (a YAML anchor) and each holds the full model's row, so
# every table reads the same keys; table 6 (the issue's) runs, with one seed (seeds change values, not keys),
# and the others must list what it lists
TABLE_RUN, TABLE_ARGS = "table6", ["--seeds", "1"]


def _stages() -> dict[str, dict]:
    stages = {}
    for dvc_file in DVC_FILES:
        for name, stage in yaml.safe_load((ROOT / dvc_file).read_text())["stages"].items():
            stages[name] = stage
    return stages


def _variants(project: Path) -> dict[str, list[list[str]]]:
    """Stage -> the `--set` lists it runs with beyond the demo's own (each a run): branches the demo skips."""
    torch.manual_seed(0)
    weights = project / "person-detector.pth"
    torch.save(detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).state_dict(), weights)
    write_posetrack18(project / "posetrack")
    archive = pack(project / "posetrack", project / "posetrack18.tar.gz")
    return {
        "download": [[], ["data.source=posetrack18", f"data.urls=[{archive}]", f"data.sha256=[{sha256(archive)}]"]],
        "detect": [[], ["data.val_boxes=detect", f"detect.model={LIGHT_DETECTOR}", f"detect.weights={weights}",
                        "detect.min_size=96", "detect.max_size=160"]],
    }


def _run(project: Path, stage: dict, overrides: list[str], extra: list[str] = ()) -> set[str]:
    """Run the stage's command in `project` (in this process) with `--set overrides` and `extra` arguments
    appended; the keys it read."""
    argv = shlex.split(stage["cmd"].replace("${profile}", PROFILE))
    module = importlib.import_module(f"pipeline.{Path(argv[1]).stem}")
    sets = [*extra, *(arg for text in overrides for arg in ("--set", text))]
    with contextlib.chdir(project), ConfigReads() as reads:
        rc = module.main([*argv[2:], *sets])
    assert rc == 0, f"`{stage['cmd']}` {' '.join(sets)} failed"
    assert not reads.unplaced, f"reads whose key could not be told: {sorted(reads.unplaced)}"
    return reads.keys


@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory) -> dict[str, set[str]]:
    """Stage name -> the keys its command read, over its variants, on the smoke-sized demo in a fresh project."""
    project = tmp_path_factory.mktemp("params-project")
    params = smoke_demo_params()
    params["profiles"][PROFILE]["train"]["epochs"] = 2  # the loop reads train.val_every before the last epoch only
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    variants = _variants(project)
    worker_reads = project / "worker-reads.txt"
    reads: dict[str, set[str]] = {}
    for name, stage in _stages().items():
        if name.startswith("table") and name != TABLE_RUN:
            continue
        if name.startswith("table"):
            reads[name] = _run_with_ray(project, stage, worker_reads)
            continue
        reads[name] = set().union(*(_run(project, stage, sets) for sets in variants.get(name, [[]])))
    return reads


def _run_with_ray(project: Path, stage: dict, worker_reads: Path) -> set[str]:
    """`_run` inside a Ray whose every worker records its reads too (Tune trials run in worker processes)."""
    if ray.is_initialized():  # the session's local Ray has no recording hook
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": install_in_worker,
                          "env_vars": {READS_FILE_ENV: str(worker_reads)}})
    try:
        driver = _run(project, stage, [], TABLE_ARGS)
    finally:
        ray.shutdown()
    workers = set(worker_reads.read_text().split()) if worker_reads.exists() else set()
    assert workers, "no Ray worker recorded a read: the setup hook did not run"
    return driver | workers


def _covered(entry: str) -> set[str]:
    """The config keys a params entry names: the key, or every key of the section."""
    return {key for key in leaf_types() if key == entry or key.startswith(entry + ".")}


def _shortest(keys: set[str]) -> list[str]:
    """`keys` (none neutral) as a params list: a section whose every key is in `keys` is listed as the section."""
    entries = set()
    for key in keys:
        parts = key.split(".")
        whole = [".".join(parts[:i]) for i in range(1, len(parts)) if _covered(".".join(parts[:i])) <= keys]
        entries.add(whole[0] if whole else key)
    return sorted(entries)


def param_problems(listed: list[str], reads: set[str]) -> list[str]:
    """What is wrong with a stage's params list (entries without `profiles.${profile}.`) given the keys it read."""
    reads = reads - neutral_keys() - ALLOWED
    entries = [e for e in listed if e not in ALLOWED]
    problems = [f"lists {e}, which is no config key or section" for e in entries if not _covered(e)]
    for entry in entries:
        neutral = sorted(_covered(entry) & neutral_keys())
        unread = sorted(_covered(entry) - neutral_keys() - reads)
        if neutral:
            problems.append(f"lists {entry}, which holds {', '.join(neutral)}: never a params dep (NEUTRAL)")
        if unread and len(unread) < len(_covered(entry) - neutral_keys()):
            problems.append(f"lists {entry}, but never reads {', '.join(unread)}: list the keys it reads")
        elif unread:
            problems.append(f"lists {entry}, which it never reads")
    missing = sorted(k for k in reads if not any(k in _covered(e) for e in entries))
    problems += [f"reads {k}, not in params" for k in missing]
    if problems:
        problems.append("its reads as a params list: " + ", ".join(_shortest(reads)))
    return problems


def _listed(stage: dict) -> list[str]:
    return [p.removeprefix(PREFIX) for p in stage.get("params", [])]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [n for n in _stages() if not n.startswith("table") or n == TABLE_RUN])
def test_stage_params_are_the_keys_it_reads(stage_reads, name):
    problems = param_problems(_listed(_stages()[name]), stage_reads[name])
    assert not problems, f"stage `{name}`:\n  " + "\n  ".join(problems)


@pytest.mark.slow
def test_a_trainings_identity_holds_every_key_the_train_stage_reads(stage_reads):
    """A training is reused by name, the digest of `training_keys`: a key it reads outside them would return a run
    of other settings. Before: detect.oks_nms, detect.keypoint_threshold and eval.protocol, which score the
    validation AP of the run's history (metrics/train_curve.csv, MLflow)."""
    held = set(training_keys(config_to_dict(Config())))
    assert not stage_reads["train"] - held - neutral_keys() - set(PATH_KEYS) - ALLOWED


def test_every_table_lists_the_params_of_the_one_that_runs():
    tables = {n: _listed(s) for n, s in _stages().items() if n.startswith("table")}
    assert TABLE_RUN in tables and all(listed == tables[TABLE_RUN] for listed in tables.values()), tables


def test_the_comparison_finds_missing_unread_partial_and_neutral_entries():
    """The rule itself, on made-up reads: what the old dvc.yaml's train and detect lists would have hit."""
    reads = {"train.epochs", "detect.oks_nms", "eval.protocol", "train.loader_workers"}
    problems = param_problems(["train.epochs", "eval", "detect.nms_iou", "crops.workers"], reads)
    assert "lists detect.nms_iou, which it never reads" in problems
    assert "lists crops.workers, which holds crops.workers: never a params dep (NEUTRAL)" in problems
    assert "reads detect.oks_nms, not in params" in problems
    assert _shortest({"eval.protocol", "crops.height", "train.lr"}) == ["crops.height", "eval", "train.lr"]
    partial = param_problems(["detect"], {"detect.oks_nms"})
    assert any(p.startswith("lists detect, but never reads ") and "detect.keypoint_threshold" in p
               and "detect.oks_nms" not in p.split(":")[0] for p in partial), partial
    assert param_problems(["profile", "train.epochs", "eval"], {"train.epochs", "eval.protocol", "profile"}) == []


def test_reads_are_named_by_where_their_value_came_from():
    """The recorder itself: a replaced field counts as the key that computed it, a saved config as no key, and
    the builder, asdict, __eq__ and check_* functions read nothing."""
    with ConfigReads() as reads:
        cfg = load_config(ROOT / "params.yaml")  # the builder reads every key to check it: none counted
        pcfg = pretraining_config(cfg)  # reads pretrain.epochs, ... to build train.epochs, ...
        assert reads.keys == {"pretrain.epochs", "pretrain.batch_size", "pretrain.lr", "pretrain.lr_step_epochs",
                              "pretrain.seed", "tracking.run_name"}
        reads.keys.clear()
        _ = pcfg.train.epochs, pcfg.train.weight_decay, pcfg.data.synthetic.seed, pcfg.data.source, pcfg.model.dim
        assert reads.keys == {"train.weight_decay", "pretrain.stills.seed", "model.dim"}
        saved = config_from_saved(config_to_dict(cfg))
        _ = saved.model.depth, config_to_dict(cfg), saved == cfg, repr(cfg.train)
        assert reads.keys == {"train.weight_decay", "pretrain.stills.seed", "model.dim"}

        def check_something(c):
            return c.detect.oks_nms

        check_something(cfg)
        assert "detect.oks_nms" not in reads.keys and not reads.unplaced
    assert cfg.detect.oks_nms and "detect.oks_nms" not in reads.keys  # uninstalled on exit
