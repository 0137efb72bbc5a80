"""Re-run a recorded MLflow training run from its inputs and compare the per-joint AP it reaches.

The run's params are the flattened config (`model.bmd: "True"`, every value a string), parsed back
with the types of `Config`'s fields. Its tags carry the provenance `tracking.run_tags` records (git
commit, dirty flag, DVC data hash, library versions); `provenance_problems` says which of them differ
from the present checkout. `dvc_dir_md5` computes a directory's hash the way DVC 3 does
(`<md5 of the sorted json listing>.dir`), so the present data can be checked without running DVC.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import random
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch

from vremd.config import Config, ConfigError, config_from_dict, is_retired
from vremd.eval.posetrack_ap import MEAN_METRIC, METRIC_NAMES
from vremd.train.identity import dvc_dir_md5
from vremd.train.loop import RunPaths
from vremd.train.ray_train import fit, init_ray
from vremd.train.tracking import VERSION_TAGS

__all__ = ["RecordedRun", "params_to_config", "read_run", "dvc_dir_md5", "provenance_problems",
           "rerun_ap", "compare_ap", "format_comparison"]

@dataclass(frozen=True)
class RecordedRun:
    """What MLflow holds about one training run: its config, provenance tags and final AP metrics."""

    run_id: str
    run_name: str
    config: Config
    tags: dict[str, str]
    ap: dict[str, float]  # report column (Head ... Mean) -> AP logged at the run's last validation


def _leaf_type(dotted: str) -> Any:
    """The annotated type of a dotted config key; raises `ConfigError` for an unknown key."""
    cls: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            raise ConfigError(f"{dotted}: recorded param is not a config key of this checkout")
        cls = hints[part]
        if i < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{dotted}: recorded param is not a config key of this checkout")
    return cls


def _parse_param(text: str, tp: Any, dotted: str) -> Any:
    """An MLflow param string (`str(value)`) back to a value of type `tp`."""
    try:
        if tp is str or typing.get_origin(tp) is Literal:
            return text
        if tp is bool:
            return {"True": True, "False": False}[text]
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if typing.get_origin(tp) is tuple:
            value = ast.literal_eval(text)
            if not isinstance(value, (list, tuple)):
                raise ValueError(text)
            return list(value)
    except (KeyError, ValueError, SyntaxError):
        raise ConfigError(f"{dotted}: recorded param {text!r} is not a valid {getattr(tp, '__name__', tp)} "
                          "(MLflow truncates params at 500 characters)") from None
    raise ConfigError(f"{dotted}: unsupported config type {tp!r}")  # pragma: no cover


def params_to_config(params: Mapping[str, str]) -> Config:
    """The `Config` whose `flatten` produced these MLflow params (keys not recorded keep their defaults)."""
    tree: dict[str, Any] = {}
    for dotted, text in sorted(params.items()):
        if is_retired(dotted, text):  # recorded by an earlier checkout
            continue
        value = _parse_param(text, _leaf_type(dotted), dotted)
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(tree)


def read_run(client, run_id: str) -> RecordedRun:
    """Fetch a run's params, tags and last AP metrics through an `MlflowClient`."""
    run = client.get_run(run_id)
    metrics = run.data.metrics
    ap = {col: float(metrics[name]) for col, name in METRIC_NAMES.items() if name in metrics}
    return RecordedRun(run_id=run_id, run_name=run.info.run_name or run_id, config=params_to_config(run.data.params),
                       tags=dict(run.data.tags), ap=ap)


def provenance_problems(recorded: Mapping[str, str], current: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) comparing a run's provenance tags with the present checkout's.

    A different data hash is an error (the numbers cannot match); a different or dirty git commit
    and different library versions are warnings.
    """
    errors, warnings = [], []
    rec_data, cur_data = recorded.get("dvc_data_hash", "unknown"), current.get("dvc_data_hash", "unknown")
    if rec_data in ("", "unknown"):
        warnings.append("the run recorded no data hash (dvc_data_hash); the data cannot be verified")
    elif rec_data != cur_data:
        errors.append(f"data changed: the run trained on data/index {rec_data}, the present data is {cur_data}")
    rec_git, cur_git = recorded.get("git_commit", "unknown"), current.get("git_commit", "unknown")
    if rec_git != cur_git:
        warnings.append(f"git commit differs: run {rec_git}, checkout {cur_git}")
    if recorded.get("git_dirty") == "true":
        warnings.append("the run was trained from a checkout with uncommitted changes")
    for tag in VERSION_TAGS:
        if tag in recorded and recorded[tag] != current.get(tag):
            warnings.append(f"{tag} differs: run {recorded[tag]}, now {current.get(tag)}")
    return errors, warnings


def rerun_ap(cfg: Config, paths: RunPaths, storage: Path, run_name: str, ray_address: str | None = None,
             progress: bool = False) -> dict[str, float]:
    """Train `cfg` from scratch into `<storage>/<run_name>` (untracked), seeded as pipeline/train.py seeds;
    return the AP columns (Head ... Mean) of its last validation."""
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    shutil.rmtree(Path(storage) / run_name, ignore_errors=True)  # a fresh re-run, never a resume
    paths = dataclasses.replace(paths, tracking_uri="", mlflow_run_id="")
    if cfg.train.num_workers > 0:
        import ray

        init_ray(ray_address)
    try:
        result = fit(cfg, paths, Path(storage), run_name, progress=progress)
    finally:
        if cfg.train.num_workers > 0:
            ray.shutdown()
    last = next((h for h in reversed(result.history) if MEAN_METRIC in h), {})
    return {col: float(last.get(name, math.nan)) for col, name in METRIC_NAMES.items()}


def _same(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance


def compare_ap(recorded: Mapping[str, float], reproduced: Mapping[str, float],
               tolerance: float) -> tuple[list[tuple[str, float, float, bool]], bool]:
    """Rows (column, recorded, reproduced, equal) over the AP columns, and whether all are equal."""
    rows = []
    for col in METRIC_NAMES:
        a, b = float(recorded.get(col, math.nan)), float(reproduced.get(col, math.nan))
        rows.append((col, a, b, _same(a, b, tolerance)))
    return rows, all(ok for *_, ok in rows)


def format_comparison(rows: list[tuple[str, float, float, bool]]) -> str:
    """A markdown table: joint, recorded AP, reproduced AP, difference, equal."""
    lines = ["| Joint | Recorded | Reproduced | Difference | Equal |", "|---|---:|---:|---:|:---:|"]
    for col, a, b, ok in rows:
        lines.append(f"| {col} | {a:.6f} | {b:.6f} | {b - a:+.2e} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines) + "\n"
