"""What a training depends on besides its config keys: the data, the code, the environment and the pretrained weights.

A finished run is reused (resumed, returned, adopted by an ablation twin) only when all of these are
equal, so a run name is `<name>-<training_digest>` over the result-changing config keys *and* a
`RunIdentity`, and every checkpoint stores its identity: `runs.check_resumable` refuses a run
folder whose checkpoints were trained on other data, code or environment, whatever its name.

- data: the index files (`dvc_dir_md5` of the index folder, what DVC records for `data/index`), every
  crop shard those files point to, and the val GT json the history's AP was scored against.
- code: a hash of the `.py` sources of the `vremd` package actually imported and the `pipeline/`
  folder beside it. Not the git commit: a content hash works in a clone, an sdist or a tarball alike,
  changes with uncommitted edits (a dirty flag could not tell two dirty trees apart), and ignores
  commits that touch only docs. The git commit and dirty flag stay as MLflow provenance tags.
- lock: sha256 of `requirements.lock` beside that code (the whole pinned environment: another torch
  computes other numbers); "none" where there is no lock file.
- threads: the torch CPU thread count the training's math runs on (docs/determinism.md: 1 and 2 threads
  train different weights). It is decided once, on the driver, and the training is made to use exactly it.
- weights: sha256 of `model.pretrained`, so replaced weights at the same path train again.

Hashing reads every shard once per driver (about 1 GB/s); it runs on the driver, never in workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from vremd import hashing
from vremd.config import PATH_KEYS, Config, flatten, neutral_keys
from vremd.hashing import CODE_ROOTS, file_sha256, hash_files, update_with_file

__all__ = ["RunIdentity", "run_identity", "data_hash", "code_hash", "file_sha256", "dvc_dir_md5", "training_keys",
           "training_digest", "identity_differences", "CODE_DIRS", "LOCK_FILE", "lock_sha256"]

CODE_DIRS = CODE_ROOTS  # folders beside each other whose .py files make up the code identity
LOCK_FILE = "requirements.lock"  # the whole environment with hashes (`make lock`), beside pyproject.toml


@dataclass(frozen=True)
class RunIdentity:
    """What a training read or ran on besides its config: content hashes (hex digests; `weights` "" when none,
    `lock` "none" without a lock file) and the torch CPU thread count of its math."""

    data: str
    code: str
    lock: str
    threads: int
    weights: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_sha256(repo_dir: Path) -> str:
    """sha256 of the repo's lock file (`requirements.lock`), the environment a run was built from; "none" without
    one."""
    path = Path(repo_dir) / LOCK_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "none"


def dvc_dir_md5(path: Path) -> str:
    """DVC 3's hash of a directory: md5 of the sorted `[{"md5": file md5, "relpath": ...}]` json, plus ".dir"."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: data directory not found")
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        update_with_file(digest, file)
        entries.append({"md5": digest.hexdigest(), "relpath": file.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def data_hash(index_dir: Path, gt_dir: Path | None = None) -> str:
    """sha256 over the index folder, the crop shards its parquet files name, and the GT json files of `gt_dir`."""
    index_dir = Path(index_dir)
    h = hashlib.sha256(dvc_dir_md5(index_dir).encode())
    shards = set()
    for parquet in sorted(index_dir.glob("*.parquet")):
        for shard in pd.read_parquet(parquet, columns=["shard"])["shard"].unique():
            shards.add((index_dir / shard).resolve())
    missing = sorted(str(s) for s in shards if not s.is_file())
    if missing:
        raise FileNotFoundError(f"{index_dir}: the index names crop shards that do not exist ({', '.join(missing[:3])})")
    hash_files(h, sorted(shards), index_dir.resolve().parent)
    if gt_dir is not None and Path(gt_dir).is_dir():
        hash_files(h, sorted(Path(gt_dir).glob("*.json")), Path(gt_dir))
    return h.hexdigest()


def code_hash(root: Path | None = None) -> str:
    """sha256 over the `.py` files of `<root>/vremd` and `<root>/pipeline` (root: where `vremd` was imported from)."""
    root = Path(root) if root is not None else hashing.code_root()
    h = hashlib.sha256()
    for folder in CODE_DIRS:
        files = sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
        hash_files(h, files, root)
    return h.hexdigest()


def run_identity(cfg: Config, index_dir: Path, gt_dir: Path | None = None, *, threads: int,
                 code_root: Path | None = None) -> RunIdentity:
    """The identity of training `cfg` on `index_dir` (val GT `gt_dir`) with the code imported here (or the
    code and lock file under `code_root`), its math on `threads` torch CPU threads."""
    weights = file_sha256(Path(cfg.model.pretrained)) if cfg.model.pretrained else ""
    root = Path(code_root) if code_root is not None else hashing.code_root()
    return RunIdentity(data=data_hash(index_dir, gt_dir), code=code_hash(root), lock=lock_sha256(root),
                       threads=int(threads), weights=weights)


def training_keys(cfg_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened keys that change training results (not tracking names, speed-only knobs or paths).

    `train.num_workers` is one: it sets the per-worker batch and so BatchNorm statistics and DDP's
    gradient average; `train.use_gpu` is one: GPU training runs in bf16 autocast. `eval.*` and `detect.*` are:
    the validation AP in a run's history is scored with `eval.protocol` and `detect.oks_nms`/`keypoint_threshold`
    (tests/pipeline/test_dvc_params.py checks that these keys hold every key the train stage reads).
    """
    neutral = neutral_keys()  # speed-only knobs, retries, kept checkpoints (marked on their fields)
    return {k: v for k, v in flatten(dict(cfg_dict)).items()
            if k.split(".")[0] in ("data", "crops", "augment", "model", "train", "eval", "detect")
            and k not in neutral and k not in PATH_KEYS}


def training_digest(cfg_dict: Mapping[str, Any], identity: RunIdentity | Mapping[str, Any]) -> str:
    """8 hex digits naming a training: its training keys and its identity (data, code, lock, threads, weights)."""
    ident = identity.as_dict() if isinstance(identity, RunIdentity) else dict(identity)
    text = json.dumps({"config": training_keys(cfg_dict), "identity": ident}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# how a refusal names each identity part
_LABELS = {"data": "data", "code": "code", "lock": f"lock file {LOCK_FILE}", "threads": "torch threads",
           "weights": "pretrained weights"}


def identity_differences(recorded: Mapping[str, Any] | None, ours: RunIdentity) -> list[str]:
    """`["data: 1a2b3c4d5e6f -> 5e6f7a8b9c0d", "torch threads: 2 -> 1", ...]` (recorded -> ours) for every
    identity part that differs; a part the record lacks (a run of an older checkout) differs, "not recorded"."""
    recorded = dict(recorded or {})
    out = []
    for key, value in ours.as_dict().items():
        if key in recorded and recorded[key] == value:
            continue
        theirs = (str(recorded[key])[:12] or "none") if key in recorded else "not recorded (an older run)"
        out.append(f"{_LABELS[key]}: {theirs} -> {str(value)[:12] or 'none'}")
    return out
