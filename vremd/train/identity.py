"""What a training depends on besides its config keys: the data, the code and the pretrained weights.

A finished run is reused (resumed, returned, adopted by an ablation twin) only when all of these are
equal, so a run name is `<name>-<training_digest>` over the result-changing config keys *and* a
`RunIdentity`, and every checkpoint stores its identity: `runs.check_resumable` refuses a run
folder whose checkpoints were trained on other data or code, whatever its name.

- data: the index files (`dvc_dir_md5` of the index folder, what DVC records for `data/index`), every
  crop shard those files point to, and the val GT json the history's AP was scored against.
- code: a hash of the `.py` sources of the `vremd` package actually imported and the `pipeline/`
  folder beside it. Not the git commit: a content hash works in a clone, an sdist or a tarball alike,
  changes with uncommitted edits (a dirty flag could not tell two dirty trees apart), and ignores
  commits that touch only docs. The git commit and dirty flag stay as MLflow provenance tags.
- weights: sha256 of `model.pretrained`, so replaced weights at the same path train again.

Hashing reads every shard once per driver (about 1 GB/s); it runs on the driver, never in workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from vremd.config import PATH_KEYS, Config, flatten, neutral_keys

__all__ = ["RunIdentity", "run_identity", "data_hash", "code_hash", "file_sha256", "dvc_dir_md5", "training_keys",
           "training_digest", "identity_differences", "CODE_DIRS"]

CODE_DIRS = ("vremd", "pipeline")  # folders beside each other whose .py files make up the code identity
_BLOCK = 1 << 20


@dataclass(frozen=True)
class RunIdentity:
    """Content hashes of what a training read besides its config (hex digests; `weights` "" when none)."""

    data: str
    code: str
    weights: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _update_file(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of one file's bytes."""
    h = hashlib.sha256()
    _update_file(h, Path(path))
    return h.hexdigest()


def dvc_dir_md5(path: Path) -> str:
    """DVC 3's hash of a directory: md5 of the sorted `[{"md5": file md5, "relpath": ...}]` json, plus ".dir"."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: data directory not found")
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        _update_file(digest, file)
        entries.append({"md5": digest.hexdigest(), "relpath": file.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def _hash_files(h: Any, files: Iterable[Path], base: Path) -> None:
    for file in files:
        h.update(f"{file.relative_to(base).as_posix() if file.is_relative_to(base) else file}\0".encode())
        _update_file(h, file)
        h.update(b"\0")


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
    _hash_files(h, sorted(shards), index_dir.resolve().parent)
    if gt_dir is not None and Path(gt_dir).is_dir():
        _hash_files(h, sorted(Path(gt_dir).glob("*.json")), Path(gt_dir))
    return h.hexdigest()


def code_hash(root: Path | None = None) -> str:
    """sha256 over the `.py` files of `<root>/vremd` and `<root>/pipeline` (root: where `vremd` was imported from)."""
    if root is None:
        import vremd

        root = Path(vremd.__file__).resolve().parents[1]
    root = Path(root)
    h = hashlib.sha256()
    for folder in CODE_DIRS:
        files = sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
        _hash_files(h, files, root)
    return h.hexdigest()


def run_identity(cfg: Config, index_dir: Path, gt_dir: Path | None = None, code_root: Path | None = None) -> RunIdentity:
    """The identity of training `cfg` on `index_dir` (val GT `gt_dir`) with the code imported here."""
    weights = file_sha256(Path(cfg.model.pretrained)) if cfg.model.pretrained else ""
    return RunIdentity(data=data_hash(index_dir, gt_dir), code=code_hash(code_root), weights=weights)


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
            and k not in neutral and k not in PATH_KEYS
            and not k.startswith("data.table_archives.")}  # other datasets' archives: the data hash covers the read


def training_digest(cfg_dict: Mapping[str, Any], identity: RunIdentity | Mapping[str, str]) -> str:
    """8 hex digits naming a training: its training keys and its identity (data, code, weights)."""
    ident = identity.as_dict() if isinstance(identity, RunIdentity) else dict(identity)
    text = json.dumps({"config": training_keys(cfg_dict), "identity": ident}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def identity_differences(recorded: Mapping[str, str] | None, ours: RunIdentity) -> list[str]:
    """`["data: 1a2b3c4d -> 5e6f7a8b", ...]` for every identity part that differs (absent counts as differing)."""
    recorded = dict(recorded or {})
    out = []
    for key, value in ours.as_dict().items():
        theirs = recorded.get(key)
        if theirs != value:
            out.append(f"{key}: {(theirs or 'not recorded')[:12]} -> {(value or 'none')[:12]}")
    return out
