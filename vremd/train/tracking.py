"""MLflow tracking through an explicit `MlflowClient` and run id (no fluent, process-wide active run).

One run per training. Params are the flattened config (`model.bmd`), tags say where the run came
from (git commit, dirty tree, dataset, profile, host, library versions, the DVC-style hash of the index
folder trained on, and the run identity's data, code and weights hashes). A tracking
store that is down never stops training: the first failure warns once, later calls are skipped, and
`Tracker.failure` says why so the CLI can report that only local files were written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import platform
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from vremd.config import Config
from vremd.train.identity import RunIdentity, dvc_dir_md5

__all__ = ["Tracker", "resolve_tracking_uri", "run_tags", "library_versions", "lock_sha256", "AP_METRIC_NAMES",
           "VERSION_TAGS", "LOCK_FILE", "LOCK_TAG"]

# evaluator table column -> MLflow metric name
AP_METRIC_NAMES: dict[str, str] = {
    "Head": "ap/head", "Shoulder": "ap/shoulder", "Elbow": "ap/elbow", "Wrist": "ap/wrist",
    "Hip": "ap/hip", "Knee": "ap/knee", "Ankle": "ap/ankle", "Total": "ap/mean",
}
_MAX_PARAM_CHARS = 500
# tag -> installed distribution, for the libraries whose version a run records beside `python_version`
_VERSIONED = {"torch_version": "torch", "torchvision_version": "torchvision", "timm_version": "timm",
              "numpy_version": "numpy", "opencv_version": "opencv-python-headless", "ray_version": "ray",
              "mlflow_version": "mlflow", "dvc_version": "dvc"}
VERSION_TAGS = ("python_version", *_VERSIONED)
LOCK_FILE = "requirements.lock"  # the whole environment with hashes (`make lock`), beside pyproject.toml
LOCK_TAG = "lock_sha256"


def resolve_tracking_uri(uri: str, base_dir: Path) -> str:
    """Make a relative `sqlite:///x.db` or plain-path URI absolute against `base_dir` (workers chdir)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((Path(base_dir) / uri[len("sqlite:///"):]).resolve())
    if "://" not in uri and not uri.startswith("databricks"):
        return (Path(base_dir) / uri).resolve().as_uri()
    return uri


def _artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts live beside the database in `mlartifacts/` (not in the CWD)."""
    if uri.startswith("sqlite:////"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def _git(repo_dir: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_tags(cfg: Config, repo_dir: Path, index_dir: Path | None = None,
             identity: RunIdentity | None = None) -> dict[str, str]:
    """Provenance tags of a run: git commit and dirty flag, dataset, profile, host, versions, data hashes.

    `dvc_data_hash` is computed from `index_dir`, the index actually trained on (DVC's own format, so it
    equals `dvc.lock`'s entry when that index is DVC's `data/index`); "unknown" without one.
    """
    hashes = {f"{k}_hash": v or "none" for k, v in identity.as_dict().items()} if identity is not None else {}
    data = dvc_dir_md5(index_dir) if index_dir is not None and Path(index_dir).is_dir() else "unknown"
    return {
        "git_commit": _git(repo_dir, "rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(_git(repo_dir, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "dataset": cfg.data.source,
        "profile": cfg.profile,
        "host": platform.node(),
        **library_versions(),
        LOCK_TAG: lock_sha256(repo_dir),
        "dvc_data_hash": data,
        **hashes,
    }


def lock_sha256(repo_dir: Path) -> str:
    """sha256 of the repo's lock file (`requirements.lock`), the environment a run was built from; "none" without one."""
    path = Path(repo_dir) / LOCK_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "none"


def library_versions() -> dict[str, str]:
    """`{"python_version": "3.11.7", "torch_version": "2.14.1", ...}`: installed distribution versions
    (read from package metadata, so importing nothing; `not installed` when absent)."""
    versions = {"python_version": platform.python_version()}
    for tag, distribution in _VERSIONED.items():
        try:
            versions[tag] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[tag] = "not installed"
    return versions


class Tracker:
    """One MLflow run addressed by id; every call is a no-op after the store has failed once."""

    def __init__(self, tracking_uri: str, run_id: str | None, failure: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.failure = failure
        self._client = None

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.failure is None

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = f"MLflow at {self.tracking_uri}: {what} failed ({type(exc).__name__}: {exc})"
            warnings.warn(self.failure + "; training continues, results are kept in local files only",
                          RuntimeWarning, stacklevel=3)

    def client(self):
        """The `MlflowClient` of this tracker (created on first use)."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @classmethod
    def start(cls, tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, str], resume_run_id: str | None = None) -> "Tracker":
        """Create (or reopen `resume_run_id`) a run with flat params and tags; a failing store gives an inactive tracker."""
        tracker = cls(tracking_uri, None)
        try:
            client = tracker.client()
            if resume_run_id is not None:
                try:
                    client.get_run(resume_run_id)
                    client.update_run(resume_run_id, status="RUNNING")
                    tracker.run_id = resume_run_id
                    return tracker
                except Exception:  # deleted or from another store: start a new run
                    pass
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(
                experiment, artifact_location=_artifact_root(tracking_uri))
            run = client.create_run(exp_id, run_name=run_name, tags=dict(tags))
            tracker.run_id = run.info.run_id
            items = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow's batch limit
                client.log_batch(tracker.run_id, params=items[i:i + 100])
        except Exception as exc:
            tracker._fail("starting the run", exc)
        return tracker

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log finite numeric metrics at `step` (NaN AP values are skipped)."""
        if not self.active:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        try:
            self.client().log_batch(self.run_id, metrics=items)
        except Exception as exc:
            self._fail("logging metrics", exc)

    def log_epoch(self, entry: Mapping[str, float]) -> None:
        """Log one training-history entry (`{"epoch": n, "loss": ..., "ap/mean": ...}`) at step n."""
        self.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=int(entry["epoch"]))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file, or a whole directory's contents, under `artifact_path`."""
        if not self.active:
            return
        try:
            if Path(path).is_dir():
                self.client().log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client().log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:
            self._fail(f"uploading {path}", exc)

    def set_tag(self, key: str, value: str) -> None:
        if not self.active:
            return
        try:
            self.client().set_tag(self.run_id, key, value)
        except Exception as exc:
            self._fail("setting a tag", exc)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run with `status` (FINISHED, FAILED, KILLED)."""
        if not self.active:
            return
        try:
            self.client().set_terminated(self.run_id, status=status)
        except Exception as exc:
            self._fail("closing the run", exc)
