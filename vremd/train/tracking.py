"""MLflow tracking through an explicit `MlflowClient` and run id (no fluent, process-wide active run).

One run per training. Params are the flattened config (`model.bmd`), tags say where the run came
from (git commit, dirty tree, dataset, profile, host, library versions, the DVC-style hash of the index
folder trained on, and the run identity's data, code and weights hashes). A tracking
store that is down never stops training: the first failure warns once, later calls are skipped, and
`Tracker.failure` says why so the CLI can report that only local files were written.

Transient store errors are retried with backoff before they count as a failure: SQLite takes one writer
at a time, and 8 concurrent Tune trials on one `mlflow.db` otherwise lose runs and metrics to "database is
locked" and to the schema migration every new process races (measured by tests/tracking_server/test_tracking_server.py).
Two processes creating the same experiment is not an error either: the loser uses the winner's.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import math
import platform
import random
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

from vremd.atomic import atomic_write_text
from vremd.config import Config
from vremd.train.identity import LOCK_FILE, RunIdentity, dvc_dir_md5, lock_sha256

__all__ = ["Tracker", "resolve_tracking_uri", "run_tags", "library_versions", "lock_sha256", "VERSION_TAGS",
           "LOCK_FILE", "LOCK_TAG", "CONTINUES_TAG"]

_MAX_PARAM_CHARS = 500
# tag -> installed distribution, for the libraries whose version a run records beside `python_version`
_VERSIONED = {"torch_version": "torch", "torchvision_version": "torchvision", "timm_version": "timm",
              "numpy_version": "numpy", "opencv_version": "opencv-python-headless", "ray_version": "ray",
              "mlflow_version": "mlflow", "dvc_version": "dvc"}
VERSION_TAGS = ("python_version", *_VERSIONED)
LOCK_TAG = "lock_sha256"
CONTINUES_TAG = "vremd.continues_run"  # on a run that trained a finished run's folder further: that run's id
# substrings of errors that a later attempt can get past: SQLite's writer lock, two processes migrating a new
# database's schema or creating the same experiment at once
_TRANSIENT = ("database is locked", "OperationalError", "already exists")
_ATTEMPTS = 10  # backoff 0.05 s doubling to 2 s, with jitter: about 10 s before a store counts as failed
# experiment tag the MLflow 3 UI reads to open an experiment on its runs, not on the GenAI overview (traces)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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
    hashes = {f"{k}_hash": getattr(identity, k) or "none" for k in ("data", "code", "weights")} if identity else {}
    data = dvc_dir_md5(index_dir) if index_dir is not None and Path(index_dir).is_dir() else "unknown"
    return {
        "git_commit": _git(repo_dir, "rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(_git(repo_dir, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "dataset": cfg.data.source,
        "profile": cfg.profile,
        "host": platform.node(),
        **library_versions(),
        LOCK_TAG: identity.lock if identity is not None else lock_sha256(repo_dir),
        "dvc_data_hash": data,
        **hashes,
    }


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
        self.retries = 0  # transient store errors got past
        self.resumed = False  # `start_or_resume` reopened the run its id file named
        self.continues: str | None = None  # the id of the run this new one continues (trained further)
        self._client = None
        self._jitter = random.Random()  # backoff jitter only (unseeded: concurrent writers must not retry in step)

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.failure is None

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = f"MLflow at {self.tracking_uri}: {what} failed ({type(exc).__name__}: {exc})"
            warnings.warn(self.failure + "; training continues, results are kept in local files only",
                          RuntimeWarning, stacklevel=3)

    def _call(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)`, attempted again with backoff while the store's error is transient."""
        for attempt in range(_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt == _ATTEMPTS - 1 or not any(t in f"{type(exc).__name__}: {exc}" for t in _TRANSIENT):
                    raise
                self.retries += 1
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + self._jitter.random()))

    def _experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created (as a training experiment) when absent."""
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return client.create_experiment(name, artifact_location=_artifact_root(self.tracking_uri),
                                            tags=EXPERIMENT_KIND)
        if exp.tags.get("mlflow.experimentKind") is None:  # made before this tag was set: the UI would guess
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    def client(self):
        """The `MlflowClient` of this tracker (created on first use).

        A sqlite store is opened under an exclusive lock on `<db>.lock`: opening a new database creates and
        migrates its schema, and two processes doing that at once leave it half-migrated.
        """
        if self._client is None:
            if self.tracking_uri.startswith("sqlite:///"):
                with open(self.tracking_uri[len("sqlite:///"):] + ".lock", "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                    client = MlflowClient(tracking_uri=self.tracking_uri)
                    client.search_experiments(max_results=1)  # opens the store: schema created or migrated here
            else:
                client = MlflowClient(tracking_uri=self.tracking_uri)
            self._client = client
        return self._client

    @classmethod
    def start(cls, tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, str], resume_run_id: str | None = None) -> "Tracker":
        """Create (or reopen `resume_run_id`) a run with flat params and tags; a failing store gives an inactive
        tracker.

        A run is reopened only while its params are `params`: MLflow params cannot change, and a run trained
        further (`train.epochs` raised) would keep saying it trained fewer epochs, with the older model behind
        `runs:/<id>/model`. Such a run is left as it is; the new run names it in the tag `CONTINUES_TAG`.
        """
        tracker = cls(tracking_uri, None)
        logged = {k: str(v)[:_MAX_PARAM_CHARS] for k, v in params.items()}
        try:
            client = tracker._call(tracker.client)
            if resume_run_id is not None:
                try:
                    previous = tracker._call(client.get_run, resume_run_id)
                except Exception:  # from another store: start a new run
                    previous = None
                if previous is not None and previous.info.lifecycle_stage == "deleted":
                    previous = None
                if previous is not None and dict(previous.data.params) == logged:
                    tracker._call(client.update_run, resume_run_id, status="RUNNING")
                    tracker.run_id = resume_run_id
                    return tracker
                if previous is not None:
                    tracker.continues = resume_run_id
                    tags = {**tags, CONTINUES_TAG: resume_run_id}
            exp_id = tracker._call(tracker._experiment_id, experiment)
            run = tracker._call(client.create_run, exp_id, run_name=run_name, tags=dict(tags))
            tracker.run_id = run.info.run_id
            items = [Param(k, v) for k, v in logged.items()]
            for i in range(0, len(items), 100):  # MLflow's batch limit
                tracker._call(client.log_batch, tracker.run_id, params=items[i:i + 100])
        except Exception as exc:
            tracker._fail("starting the run", exc)
        return tracker

    @classmethod
    def start_or_resume(cls, id_file: Path, tracking_uri: str, experiment: str, run_name: str,
                        params: Mapping[str, Any], tags: Mapping[str, str]) -> "Tracker":
        """`start`, reopening the run whose id `id_file` holds (if any); then record the run's id there."""
        previous = Path(id_file).read_text().strip() if Path(id_file).is_file() else None
        tracker = cls.start(tracking_uri, experiment, run_name, params, tags, resume_run_id=previous)
        tracker.resumed = previous is not None and tracker.run_id == previous
        if tracker.run_id is not None:
            atomic_write_text(id_file, tracker.run_id)
        return tracker

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log finite numeric metrics at `step` (NaN AP values are skipped)."""
        if not self.active:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        try:
            self._call(self.client().log_batch, self.run_id, metrics=items)
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
                self._call(self.client().log_artifacts, self.run_id, str(path), artifact_path)
            else:
                self._call(self.client().log_artifact, self.run_id, str(path), artifact_path)
        except Exception as exc:
            self._fail(f"uploading {path}", exc)

    def log_dataset(self, name: str, digest: str, source: Path, split_sizes: Mapping[str, int]) -> None:
        """Record the training data as the run's input (the UI's Dataset column): name, hash, folder, sizes.

        `split_sizes` (`{"train": 120, "val": 40}`, samples per split) is the dataset's profile.
        """
        if not self.active:
            return
        dataset = Dataset(name=name, digest=digest[:36], source_type="local",
                          source=json.dumps({"uri": Path(source).resolve().as_uri()}),
                          profile=json.dumps({f"{split}_samples": n for split, n in split_sizes.items()}))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        try:
            self._call(self.client().log_inputs, self.run_id, datasets=inputs)
        except Exception as exc:
            self._fail("logging the dataset", exc)

    def set_tag(self, key: str, value: str) -> None:
        if not self.active:
            return
        try:
            self._call(self.client().set_tag, self.run_id, key, value)
        except Exception as exc:
            self._fail("setting a tag", exc)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run with `status` (FINISHED, FAILED, KILLED)."""
        if not self.active:
            return
        try:
            self._call(self.client().set_terminated, self.run_id, status=status)
        except Exception as exc:
            self._fail("closing the run", exc)
