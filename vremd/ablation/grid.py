"""Paper tables as data -> validated trial specs: experiments/ablations.yaml rows x seeds.

A row is a set of `dotted.key: value` overrides applied to the profile's config; each (row, seed)
becomes a `TrialSpec` holding the resolved config as a plain dict (what crosses to the Tune trial), the
data it reads (index and raw dataset folder of its `data.source`, decided on the driver) and the
`RunIdentity` (data, code, weights hashes) its training reads, computed once on the driver.
No Ray here: `vremd.ablation.trials` runs the specs.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from vremd.config import (PATH_KEYS, Config, ConfigError, config_from_dict, config_to_dict, resolve_path_value,
                          set_dotted)
from vremd.data.dataset import check_augment_margin
from vremd.data.dataset_record import check_index
from vremd.data.index_check import check_index_fits
from vremd.data.posetrack import SPLITS
from vremd.errors import InputError
from vremd.hashing import code_root
from vremd.train.identity import RunIdentity, code_hash, data_hash, file_sha256, lock_sha256, training_digest

__all__ = ["AblationError", "TableSpec", "TrialSpec", "DataDirs", "training_id", "slug", "load_tables",
           "apply_overrides", "build_grid", "data_dirs", "identities", "paper_protocol", "parse_resources",
           "default_resources", "DRIVER_MEMORY", "grid_text", "check_inputs"]

DataDirs = Callable[[str], tuple[str, str]]  # data.source -> (index dir, raw dataset dir) that trials on it read

class AblationError(InputError):
    """An ablation table, grid or experiment folder is unusable; the message names the file and key."""


@dataclass(frozen=True)
class TableSpec:
    """One paper table: its number, title and rows (row name -> `{dotted.key: value}` overrides)."""

    number: int
    title: str
    rows: dict[str, dict[str, Any]]
    reference: str = ""  # the row every other row is compared with, paired by seed; "" = the first row


@dataclass(frozen=True)
class TrialSpec:
    """One Tune trial: a row's overrides at one seed, with the resolved config as a plain dict."""

    row: str
    repeat: int  # 0 .. seeds-1
    seed: int  # train.seed of this trial: the profile's seed + repeat
    overrides: dict[str, Any]
    config: dict[str, Any]  # config_to_dict(Config): what the trial rebuilds its Config from
    identity: dict[str, str] = field(default_factory=dict)  # RunIdentity.as_dict(); empty in a dry run
    index_dir: str = ""  # the sample index it trains and validates on (absolute)
    dataset_dir: str = ""  # its raw dataset (absolute): the val GT json lie in <dataset_dir>/annotations/val

    @property
    def gt_dir(self) -> str:
        """The val GT folder it scores against."""
        return str(Path(self.dataset_dir) / "annotations" / "val")

    @property
    def training_id(self) -> str:
        """Names the training, not the row: see `training_id`."""
        return training_id(self.config, self.identity)

    @property
    def run_name(self) -> str:
        """`<row slug>-<training id>`: the trial's training folder and MLflow run name."""
        return f"{slug(self.row)}-{self.training_id}"


def training_id(config: dict[str, Any], identity: Mapping[str, str]) -> str:
    """`seed<k>-<hash of the training keys and identity>`: equal for equal trainings, whatever the row or table."""
    return f"seed{config['train']['seed']}-{training_digest(config, identity)}"


def slug(name: str) -> str:
    """A file-name-safe form of a row name: `DCA+BS` -> `DCA-BS`."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "row"


def load_tables(path: Path) -> dict[int, TableSpec]:
    """experiments/ablations.yaml -> {table number: TableSpec}; rows must map dotted keys to values."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise AblationError(f"{path}: no such ablations file") from None
    except yaml.YAMLError as exc:
        raise AblationError(f"{path}: not valid YAML: {exc}") from None
    tables = raw.get("tables") if isinstance(raw, Mapping) else None
    if not isinstance(tables, Mapping):
        raise AblationError(f"{path}: tables: expected a mapping of table number -> {{title, rows}}")
    out = {}
    for number, entry in tables.items():
        where = f"{path}: tables.{number}"
        if not isinstance(number, int) or not isinstance(entry, Mapping) or not isinstance(entry.get("rows"), Mapping):
            raise AblationError(f"{where}: expected an integer key with a 'rows' mapping")
        rows = {}
        for row, overrides in entry["rows"].items():
            if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
                raise AblationError(f"{where}.rows.{row}: expected a mapping of dotted.key: value")
            rows[str(row)] = dict(overrides)
        if not rows:
            raise AblationError(f"{where}.rows: no rows")
        reference = str(entry.get("reference", next(iter(rows))))
        if reference not in rows:
            raise AblationError(f"{where}.reference: expected one of its rows ({', '.join(rows)}), got {reference!r}")
        out[number] = TableSpec(number, str(entry.get("title", f"Table {number}")), rows, reference)
    return out


def apply_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> Config:
    """A validated `Config` from a plain config dict with `{dotted.key: value}` overrides set on a copy."""
    tree = copy.deepcopy(dict(values))
    try:
        for dotted, value in overrides.items():  # a relative path: from the driver's cwd, before trials chdir
            set_dotted(tree, dotted, resolve_path_value(dotted, value, Path.cwd()) if dotted in PATH_KEYS else value)
        return config_from_dict(tree)
    except ConfigError as exc:
        raise AblationError(f"{where}{exc}") from None


def build_grid(base: Config, table: TableSpec, seeds: int, fixed_keys: Iterable[str] = (),
               where: str = "experiments/ablations.yaml",
               identity_of: Callable[[Config], RunIdentity] | None = None,
               data_of: DataDirs | None = None) -> list[TrialSpec]:
    """Every row of `table` at `seeds` seeds (train.seed = base seed + i), validated; row order kept.

    `fixed_keys` are keys the user already overrode for all rows (`--set`): a row setting one of them
    would silently lose its meaning, so that is an error. `identity_of(cfg)` gives each trial's
    `RunIdentity` (None: a dry run, the names then cover the config only); `data_of(cfg.data.source)` its
    index and raw dataset folder (None: left empty).
    """
    if seeds < 1:
        raise AblationError(f"--seeds: expected at least 1, found {seeds}")
    fixed = set(fixed_keys)
    base_dict = config_to_dict(base)
    trials = []
    for row, overrides in table.rows.items():
        clash = sorted(fixed & set(overrides))
        if clash:
            raise AblationError(f"--set {clash[0]}: conflicts with {where}: tables.{table.number}.rows.{row}, "
                                "which sets that key; drop it from --set")
        for i in range(seeds):
            seeded = {**overrides, "train.seed": base.train.seed + i}
            cfg = apply_overrides(base_dict, seeded, f"{where}: tables.{table.number}.rows.{row}: ")
            identity = identity_of(cfg).as_dict() if identity_of is not None else {}
            index_dir, dataset_dir = data_of(cfg.data.source) if data_of is not None else ("", "")
            trials.append(TrialSpec(row, i, cfg.train.seed, dict(overrides), config_to_dict(cfg), identity,
                                    index_dir, dataset_dir))
    return trials


def data_dirs(index_dir: str, raw_dir: str) -> DataDirs:
    """`data_of` for `build_grid` where every trial reads `index_dir` and the raw dataset `<raw_dir>/<source>`,
    `{source}` in either replaced by the trial's `data.source`; absolute paths."""
    def data_of(source: str) -> tuple[str, str]:
        return (str(Path(index_dir.format(source=source)).resolve()),
                str((Path(raw_dir.format(source=source)) / source).resolve()))

    return data_of


def identities(data_of: DataDirs, threads_of: Callable[[Config], int]) -> Callable[[Config], RunIdentity]:
    """`identity_of` for `build_grid`: each trial's `RunIdentity` on the index and val GT `data_of` gives its
    `data.source`, each data set, the code and each weights file hashed once; its math on `threads_of(cfg)` torch
    threads (`ray_train.training_threads` with the trial's CPUs)."""
    code, lock, data, weights = code_hash(), lock_sha256(code_root()), {}, {}

    def identity_of(cfg: Config) -> RunIdentity:
        source = cfg.data.source
        if source not in data:
            index_dir, dataset_dir = data_of(source)
            data[source] = data_hash(Path(index_dir), Path(dataset_dir) / "annotations" / "val")
        path = cfg.model.pretrained
        if path and path not in weights:
            weights[path] = file_sha256(Path(path))
        return RunIdentity(data=data[source], code=code, lock=lock, threads=threads_of(cfg),
                           weights=weights.get(path, ""))

    return identity_of


def paper_protocol(paper_table: Mapping[str, Any], base: Config, fixed_keys: Iterable[str],
                   overrides: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The `{dotted.key: value}` that put a profile on a paper table's dataset and protocol, and the header note.

    On real data (any `data.source` but synthetic) a table runs on the paper's dataset (`dataset:` of
    paper_numbers.yaml) with its evaluation protocol (`protocol:`), unless the user forced another with
    `--set` (`overrides`): that mismatch is kept and named in the note. On synthetic data nothing can
    match the paper's dataset, and the note says the Paper column is a reference, not a comparison.
    """
    dataset, protocol = paper_table.get("dataset"), paper_table.get("protocol")
    if base.data.source == "synthetic":
        return {}, (f"synthetic data (profile {base.profile}), not the paper's {dataset} val: "
                    "the Paper column is a reference, Delta is across datasets")
    wanted = {k: v for k, v in (("data.source", dataset), ("eval.protocol", protocol)) if v is not None}
    fixed = set(fixed_keys)
    forced = {k: overrides[k] for k in wanted if k in fixed and overrides.get(k) != wanted[k]}
    apply = {k: v for k, v in wanted.items() if k not in fixed}
    note = f"{dataset} val, protocol {protocol}, as the paper"
    if forced:
        note = ("NOT the paper's setting: " + ", ".join(f"--set {k}={v} (paper: {wanted[k]})" for k, v in forced.items()))
    return apply, note


def parse_resources(text: str) -> dict[str, float]:
    """`"cpu=2,gpu=1"` -> `{"cpu": 2.0, "gpu": 1.0}` (other names are Ray custom resources)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name.strip() or amount < 0:
            raise AblationError(f"--resources-per-trial {text!r}: expected NAME=AMOUNT[,NAME=AMOUNT], e.g. cpu=2,gpu=1")
        out[name.strip().lower() if name.strip().lower() in ("cpu", "gpu") else name.strip()] = amount
    if not any(out.values()):
        raise AblationError(f"--resources-per-trial {text!r}: asks for nothing, but Tune needs a positive amount; "
                            f"for a trial that only drives Ray Train workers use cpu=0,memory={DRIVER_MEMORY}")
    return out


DRIVER_MEMORY = 256 * 2**20  # bytes a driver-only trial asks for: Tune refuses an empty request


def default_resources(cfg: Config) -> dict[str, float]:
    """What a trial asks Tune for: the compute when it trains in-process (num_workers 0); otherwise no
    CPU, only nominal memory, since its TorchTrainer asks for every worker's CPUs / GPUs itself and a
    CPU held by the trial could leave those workers unplaceable."""
    if cfg.train.num_workers == 0:
        return {"cpu": 1.0, "gpu": 1.0 if cfg.train.use_gpu else 0.0}
    return {"cpu": 0.0, "memory": float(DRIVER_MEMORY)}


def grid_text(trials: Sequence[TrialSpec], resources: Mapping[str, float]) -> str:
    """The dry-run listing: one line per trial with row, seed, overrides and requested resources, and below it
    the index it reads and the GT folder it scores against."""
    asks = ", ".join(f"{k}={v / 2**20:g}MiB" if k == "memory" else f"{k}={v:g}" for k, v in resources.items() if v)
    lines = []
    for t in trials:
        train = t.config["train"]
        workers = (f"; Train workers: {train['num_workers']} x ({'1 GPU' if train['use_gpu'] else 'CPU'})"
                   if train["num_workers"] else "; trains in the trial's process")
        sets = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in t.overrides.items()) or "(profile as is)"
        lines.append(f"{t.row:>16s}  seed {t.seed:<3d} {sets}  [trial: {asks or 'nothing'}{workers}]  -> {t.run_name}")
        if t.index_dir:
            lines.append(f"{'':>16s}  {t.config['data']['source']}: index {t.index_dir}, GT {t.gt_dir}")
    return "\n".join(lines) + "\n"


def check_inputs(trials: Sequence[TrialSpec]) -> None:
    """Raise `AblationError` naming every missing index, GT folder or pretrained weights file the trials would read;
    `DatasetRecordError` for an index that does not hold a trial's dataset (`data.source`) and split; ConfigError
    where a trial's augmentation reaches past the margin stored around the index's train crops, or for an index
    whose crops a trial's config would not see as they were cut (`check_index_fits`)."""
    weights = [w for w in dict.fromkeys(t.config["model"]["pretrained"] for t in trials) if w and not Path(w).is_file()]
    if weights:  # refused before any trial trains: its identity (and name) would change when the file arrives
        raise AblationError(f"model.pretrained: no such weights file: {', '.join(weights)}; nothing was run")
    missing = []
    for index, gt in dict.fromkeys((t.index_dir, t.gt_dir) for t in trials):
        missing += [str(Path(index) / f"{split}.parquet") for split in SPLITS
                    if not (Path(index) / f"{split}.parquet").is_file()]
        missing += [] if Path(gt).is_dir() else [gt]
    if missing:
        raise AblationError(f"missing inputs: {', '.join(missing)}; build them: dvc repro preprocess (the "
                            "profile's own dataset: data/index, data/raw), dvc repro "
                            "experiments/dvc.yaml:data-<source> (a table's other dataset: data/tables/<source>/), "
                            "or pipeline/download.py, crops.py, preprocess.py")
    for t in trials:  # every trial, each split: its own dataset
        for split in SPLITS:
            check_index(Path(t.index_dir) / f"{split}.parquet", t.config["data"]["source"], split,
                        f"trial {t.row!r} (seed {t.seed})")
    for index, augment in dict.fromkeys((t.index_dir, json.dumps(t.config["augment"])) for t in trials):
        cfg = config_from_dict({"augment": json.loads(augment)})  # its margin is refused before any trial trains
        check_augment_margin(Path(index) / "train.parquet", cfg.augment)
    checked = set()
    for t in trials:  # crops cut otherwise than a row's config would train and score it on other inputs
        cfg = config_from_dict(t.config)
        key = (t.index_dir, cfg.crops, cfg.model.img_height, cfg.model.img_width)
        for split in SPLITS if key not in checked else ():
            check_index_fits(Path(t.index_dir) / f"{split}.parquet", cfg, f"table row {t.row!r} (seed {t.seed})")
        checked.add(key)
