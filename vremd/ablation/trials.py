"""The paper's tables as Ray Tune experiments: each row of experiments/ablations.yaml x each seed is one trial.

    grid.load_tables(path) -> grid.build_grid(base_cfg, table, seeds) -> fusion.plan_fusion(...) -> run_ablation(...)

Rows that share a frozen backbone and a seed train as one fused Tune trial when the driver passes a
`fusion.FusionPlan`: one backbone pass per batch for all of them (`fused_loop`), each row still with its
own training folder, checkpoints, nested MLflow run and report line, exactly as its own trial.
Every trial runs the function trainable `ablation_trial`: it rebuilds the `Config` from the dict in
its Tune config (Train V2 style), opens a nested MLflow run under the table's parent run, calls
`ray_train.train_and_track` (`train.num_workers` 0 trains inside the trial's process, otherwise a
`TorchTrainer` is launched from the trial) and reports the final per-joint AP with `tune.report`.
A trial's training lives in `<runs_dir>/<row>-seed<k>-<hash of config keys, data, code and weights>`, so
a retried or restored trial continues from its last epoch checkpoint. Re-running the same table restores
the Tune experiment: finished trials are kept, unfinished and errored ones run again; a grid that changed
(rows, seeds, configuration, data or code) is refused, so a kept result is never one of other inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
from ray import tune

from vremd.atomic import atomic_write_text
from vremd.config import Config, config_from_dict, flatten
from vremd.eval.posetrack_ap import MEAN_METRIC, METRIC_NAMES
from vremd.ablation.cost import parameters_outside_backbone
from vremd.ablation.fused_loop import FusedRow, fit_fused
from vremd.ablation.fusion import FusionPlan
from vremd.ablation.provenance import trial_provenance
from vremd.ablation.grid import AblationError, TableSpec, TrialSpec, slug, training_id
from vremd.ablation.reuse import adopt_finished_twin
from vremd.train.identity import RunIdentity
from vremd.ablation.paired_tables import paired_metrics, paired_tags
from vremd.ablation.report import (Paired, ReportRow, TrialOutcome, paired_for, report_dir, report_rows, summary_text,
                                   write_report)
from vremd.train.loop import RunPaths
from vremd.train.ray_train import close_tracking, open_tracking, train_and_track
from vremd.train.runs import check_resumable
from vremd.train.tracking import Tracker, run_tags

__all__ = ["TrialContext", "AblationResult", "ablation_trial", "run_ablation", "GRID_FILE", "PARENT_RUN_FILE",
           "ATTEMPTS_FILE"]

GRID_FILE = "ablation_grid.json"  # in the Tune experiment folder: the trials it was started with
PARENT_RUN_FILE = "mlflow_parent_run_id"  # in the Tune experiment folder
ATTEMPTS_FILE = "attempts.jsonl"  # in a trial's run folder: one line per start of that trial
RAY_NAMES = {"cpu": "CPU", "gpu": "GPU"}  # our resource keys -> Ray's
PROVENANCE = "provenance"  # a trial reports where it ran as `provenance/<key>` (`rows/<k>/provenance/<key>` fused)


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one table shares (absolute paths; passed with `tune.with_parameters`)."""

    table: int
    runs_dir: str
    tracking_uri: str
    parent_run_id: str
    repo_dir: str
    ray_logs: bool = False  # Ray Train's per-epoch INFO lines on the console


@dataclass(frozen=True)
class AblationResult:
    """A finished (possibly partly failed) table: trial outcomes, rendered rows, files and the parent run."""

    outcomes: list[TrialOutcome]
    rows: list[ReportRow]
    text: str
    paths: dict[str, Path]
    parent_run_id: str | None
    restored: bool
    failed: int = field(default=0)


# ---------------------------------------------------------------------------------------------
# the trial (runs in a Tune worker process)


def ablation_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable: train one (row, seed), or a fused group of them, each logged as a nested
    MLflow run; report the final AP (of each row of a group, as `rows/<k>/<metric>`)."""
    spec, start = config["trial"], time.monotonic()
    if "fused" in spec:
        _fused_trial(spec["fused"], context)
        return
    cfg, identity, tracker, paths, adopted = _prepare_row(spec, context)
    try:
        outcome = train_and_track(cfg, paths, Path(context.runs_dir), spec["run_name"], context.tracking_uri,
                                  Path(context.repo_dir), Path(spec["dataset_dir"]), identity=identity,
                                  ray_logs=context.ray_logs)
    except BaseException:
        tracker.finish("FAILED")
        raise
    provenance = trial_provenance(cfg, Path(context.repo_dir), identity.threads, time.monotonic() - start, adopted)
    tune.report({**_final_metrics(outcome.fit.history, int(outcome.fit.state["epoch"])), "row": spec["row"],
                 "seed": int(spec["seed"]), "mlflow_run_id": outcome.mlflow_run_id or "", "node_id": _node_id(),
                 **{f"{PROVENANCE}/{k}": v for k, v in provenance.items()}})


def _checked_row(spec: Mapping[str, Any], context: TrialContext) -> tuple[Config, RunIdentity]:
    """The row's config (rebuilt strict and typed) and identity; `RunMismatchError` if its folder holds another
    training. Nothing is written: every row of a trial is checked before any folder or MLflow run is touched."""
    cfg = config_from_dict(spec["config"])
    identity = RunIdentity(**spec["identity"])  # hashed once on the driver: data, code, lock file, threads, weights
    check_resumable(cfg, Path(context.runs_dir) / spec["run_name"], identity)
    return cfg, identity


def _prepare_row(spec: Mapping[str, Any], context: TrialContext) -> tuple[Config, RunIdentity, Tracker, RunPaths, str]:
    """Rebuild and check the row (`_checked_row`), note the attempt, adopt a finished twin, open its nested MLflow
    run; the last item names the adopted twin's run folder ("" when none was adopted). The training loop runs on
    the identity's thread count, decided on the driver."""
    cfg, identity = _checked_row(spec, context)
    runs_dir, run_name = Path(context.runs_dir), spec["run_name"]
    _note_attempt(runs_dir / run_name)
    adopted = adopt_finished_twin(cfg, identity, runs_dir, run_name, training_id(spec["config"], spec["identity"]))
    tracker = _open_nested_run(cfg, identity, spec, context)
    if adopted is not None:  # the twin's per-epoch metrics, so MLflow's compare view shows this row's curve
        print(f"{run_name}: the same training finished in {adopted.source}; taking its final checkpoint", flush=True)
        tracker.set_tag("ablation.adopted_training", str(adopted.source))
        for entry in adopted.history:
            tracker.log_epoch(entry)
    paths = RunPaths(index_dir=spec["index_dir"], gt_dir=str(Path(spec["dataset_dir"]) / "annotations" / "val"),
                     run_dir="")  # the data the driver chose and checked for this trial
    return cfg, identity, tracker, paths, "" if adopted is None else Path(adopted.source).name


def _final_metrics(history: Sequence[Mapping[str, float]], epochs: int) -> dict[str, float]:
    last_ap = next((h for h in reversed(history) if MEAN_METRIC in h), {})
    metrics = {m: float(last_ap.get(m, math.nan)) for m in METRIC_NAMES.values()}
    return {**metrics, "loss": float(history[-1]["loss"]), "epochs": epochs}


def _fused_trial(specs: Sequence[Mapping[str, Any]], context: TrialContext) -> None:
    """Train the group's rows side by side on one backbone pass per batch (`fused_loop`), each in its own
    folder and MLflow run, as its ordinary trial would."""
    runs_dir, prepared, trackers, adopted, start = Path(context.runs_dir), [], [], [], time.monotonic()
    try:
        for spec in specs:
            _checked_row(spec, context)
        for spec in specs:
            cfg, identity, nested, paths, twin = _prepare_row(spec, context)
            adopted.append(twin)
            trackers.append(nested)
            tracker, paths = open_tracking(cfg, paths, runs_dir, spec["run_name"], context.tracking_uri,
                                           Path(context.repo_dir), identity)
            trackers.append(tracker)
            prepared.append((cfg, tracker, FusedRow(cfg, dataclasses.replace(
                paths, run_dir=str(runs_dir.resolve() / spec["run_name"])), identity.as_dict())))
        results = fit_fused([row for _, _, row in prepared])
    except BaseException:
        for tracker in trackers:
            tracker.finish("FAILED")
        raise
    report: dict[str, Any] = {"rows": len(specs), "node_id": _node_id()}
    for k, ((cfg, tracker, row), result, spec) in enumerate(zip(prepared, results, specs)):
        outcome = close_tracking(tracker, cfg, result, Path(row.paths.gt_dir), Path(spec["dataset_dir"]))
        metrics = _final_metrics(result.history, int(result.state["epoch"]))
        report.update({f"rows/{k}/{name}": value for name, value in metrics.items()})
        report[f"rows/{k}/mlflow_run_id"] = outcome.mlflow_run_id or ""
        provenance = trial_provenance(cfg, Path(context.repo_dir), int(row.identity["threads"]), time.monotonic() - start,
                                      adopted[k])  # the group's wall time: its rows trained side by side
        report.update({f"rows/{k}/{PROVENANCE}/{name}": value for name, value in provenance.items()})
    tune.report(report)


def _node_id() -> str:
    """The Ray node this trial runs on (hex id, as `ray status` and `ray.nodes()` name it)."""
    return ray.get_runtime_context().get_node_id()


def _note_attempt(run_dir: Path) -> None:
    """Append one line to `<run_dir>/attempts.jsonl`: how often this trial was started, where (host, Ray node,
    process) and when."""
    run_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(), "node_id": _node_id(),
                       "pid": os.getpid()})
    with open(run_dir / ATTEMPTS_FILE, "a") as f:
        f.write(line + "\n")


def _open_nested_run(cfg: Config, identity: RunIdentity, spec: Mapping[str, Any], context: TrialContext) -> Tracker:
    """Create (or reopen) the trial's MLflow run under the parent; `train_and_track` continues it by id."""
    tags = {**run_tags(cfg, Path(context.repo_dir), Path(spec["index_dir"]), identity),
            "ablation.table": str(context.table),
            "ablation.row": spec["row"], "ablation.seed": str(spec["seed"])}
    if context.parent_run_id:
        tags["mlflow.parentRunId"] = context.parent_run_id
    tracker = Tracker.start_or_resume(Path(context.runs_dir) / spec["run_name"] / "mlflow_run_id",
                                      context.tracking_uri, cfg.tracking.experiment,
                                      f"table{context.table}/{spec['row']}/seed{spec['seed']}", flatten(cfg), tags)
    if tracker.resumed and context.parent_run_id:  # reopened: it may belong to an older parent
        tracker.set_tag("mlflow.parentRunId", context.parent_run_id)
    return tracker


# ---------------------------------------------------------------------------------------------
# the driver


def _trial_name(trial) -> str:
    spec = trial.config["trial"]
    if "fused" in spec:
        return f"fused{len(spec['fused'])}-{slug(spec['fused'][0]['row'])}-seed{spec['fused'][0]['seed']}"
    return f"{slug(spec['row'])}-seed{spec['seed']}"


def _trial_dirname(trial) -> str:
    return f"{_trial_name(trial)}-{trial.trial_id}"


def _grid_record(trials: Sequence[TrialSpec], plan: FusionPlan | None = None) -> list[dict[str, Any]]:
    """The trials in grid order; a fused row also names its group (its Tune trial)."""
    group = {(t.row, t.seed): n for n, i in enumerate(plan.fused if plan else []) for t in plan.units[i]}
    return [{"row": t.row, "seed": t.seed, "run_name": t.run_name,
             **({"fused": group[(t.row, t.seed)]} if (t.row, t.seed) in group else {})} for t in trials]


def _check_same_grid(exp_dir: Path, trials: Sequence[TrialSpec], plan: FusionPlan | None) -> None:
    """Refuse to restore an experiment that was started with other rows, seeds or configurations."""
    recorded_path = exp_dir / GRID_FILE
    if not recorded_path.is_file():
        return
    recorded, ours = json.loads(recorded_path.read_text()), _grid_record(trials, plan)
    if recorded != ours:
        old = {(r["row"], r["seed"]): r["run_name"] for r in recorded}
        new = {(r["row"], r["seed"]): r["run_name"] for r in ours}
        diff = [f"{row} seed {seed}: {old.get((row, seed), 'absent')} -> {new.get((row, seed), 'absent')}"
                for row, seed in dict.fromkeys([*old, *new]) if old.get((row, seed)) != new.get((row, seed))]
        diff = diff or ["the fused groups (--no-fuse or the memory budget changed)"]
        raise AblationError(f"{exp_dir}: was started with another grid ({'; '.join(diff[:6])}); re-run with "
                            "--fresh to start a new experiment (finished trainings of unchanged rows are reused)")


def _outcomes(results, trials: Sequence[TrialSpec]) -> list[TrialOutcome]:
    """One `TrialOutcome` per planned trial, in grid order; a trial Tune has no result for is `not run`.

    A fused Tune trial holds several rows: row k's metrics are its `rows/<k>/...` entries; if the
    group failed, each of its rows is failed with the group's error. `node_id` is the Ray node of the trial's
    last result (of its last attempt, after retries)."""
    found = {}
    for result in results:
        unit = (result.config or {}).get("trial", {})
        metrics = dict(result.metrics or {})
        specs = unit["fused"] if "fused" in unit else [unit]
        if result.error is not None:
            lines = [ln for ln in str(result.error).strip().splitlines() if ln.strip()]
            status, error = "failed", (lines[-1].strip() if lines else type(result.error).__name__)
        for k, spec in enumerate(specs):
            own = ({name[len(f"rows/{k}/"):]: v for name, v in metrics.items() if name.startswith(f"rows/{k}/")}
                   if "fused" in unit else metrics)
            if result.error is None:
                status, error = ("finished" if MEAN_METRIC in own else "not run"), ""
            kept = {n: v for n, v in own.items() if n in (*METRIC_NAMES.values(), "loss", "epochs")}
            provenance = {n[len(PROVENANCE) + 1:]: str(v) for n, v in own.items() if n.startswith(PROVENANCE + "/")}
            found[(spec.get("row"), spec.get("seed"))] = TrialOutcome(
                spec.get("row", "?"), int(spec.get("seed", -1)), status, kept, error[:500], spec.get("run_name", ""),
                str(own.get("mlflow_run_id", "")), str(metrics.get("node_id", "")), provenance)
    return [found.get((t.row, t.seed), TrialOutcome(t.row, t.seed, "not run", run_name=t.run_name)) for t in trials]


def _parent_run(exp_dir: Path, tracking_uri: str, base: Config, table: TableSpec, seeds: int,
                repo_dir: Path) -> Tracker:
    """The table's MLflow parent run, reopened on restore (its id is kept in the experiment folder)."""
    params = {**flatten(base), "ablation.table": table.number, "ablation.seeds": seeds,
              "ablation.rows": ", ".join(table.rows)}
    tags = {**run_tags(base, repo_dir), "ablation.table": str(table.number)}
    return Tracker.start_or_resume(exp_dir / PARENT_RUN_FILE, tracking_uri, base.tracking.experiment,
                                   f"table{table.number}-{base.profile}", params, tags)


def run_ablation(table: TableSpec, trials: Sequence[TrialSpec], base: Config, *, storage_path: Path, out_dir: Path,
                 tracking_uri: str, repo_dir: Path, paper_tables: Mapping[str, Any],
                 resources: Mapping[str, float], max_concurrent: int | None, max_failures: int,
                 fresh: bool = False, verbose: int = 1, note: str = "",
                 plan: FusionPlan | None = None, fused_resources: Mapping[str, float] | None = None) -> AblationResult:
    """Run (or restore and finish) the table's Tune experiment, then write and log the report.

    Needs `ray.init` beforehand, and the caller holds `vremd.ablation.lock.lock_table` (one run per table). The
    experiment is `<storage_path>/table<N>-<profile>`; trainings go to `<storage_path>/table<N>-<profile>-runs/`.
    The report replaces `out_dir` as a whole once written (`report.report_dir`: a run in which no trial
    finished goes to `<out_dir>-failed` rather than over finished results). `max_failures` retries a failed
    trial that many times.
    `plan` (`fusion.plan_fusion`) makes each fused group one Tune trial, asking `fused_resources` (default:
    `resources`); without a plan every trial runs alone.
    """
    name = f"table{table.number}-{base.profile}"
    storage_path = Path(storage_path).resolve()
    exp_dir, runs_dir = storage_path / name, storage_path / f"{name}-runs"
    if fresh and exp_dir.exists():
        shutil.rmtree(exp_dir)
    restored = tune.Tuner.can_restore(str(exp_dir))
    if restored:
        _check_same_grid(exp_dir, trials, plan)
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp_dir / GRID_FILE, json.dumps(_grid_record(trials, plan), indent=1))
    parent = _parent_run(exp_dir, tracking_uri, base, table, len({t.repeat for t in trials}), Path(repo_dir))
    context = TrialContext(table.number, str(runs_dir), tracking_uri, parent.run_id or "",
                           str(Path(repo_dir).resolve()), ray_logs=verbose > 1)
    plan = plan or FusionPlan([[t] for t in trials], {})
    units = [{"fused": [_spec(t) for t in unit]} if len(unit) > 1 else _spec(unit[0]) for unit in plan.units]
    trainable = tune.with_resources(tune.with_parameters(ablation_trial, context=context),
                                    _resources_of(resources, plan, fused_resources))
    if restored:
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(units)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=name, storage_path=str(storage_path), verbose=verbose,
                                      failure_config=tune.FailureConfig(max_failures=max_failures)),
        )
    try:
        outcomes = _outcomes(tuner.fit(), trials)
    except BaseException:  # Tune itself failed (not a trial): the parent run must not stay RUNNING
        parent.finish("FAILED")
        raise
    rows = report_rows(list(table.rows), outcomes, paper_tables, table.number, _row_params(trials))
    title = f"{table.title} [profile {base.profile}{'; ' + note if note else ''}]"  # note: dataset / protocol
    paths = write_report(report_dir(out_dir, outcomes), table.number, title, rows, outcomes,
                         {"profile": base.profile, "experiment": _shown(exp_dir, Path(repo_dir)),
                          "mlflow_parent_run_id": parent.run_id},
                         chart_title=f"Table {table.number} ({base.profile})", reference=table.reference or None)
    failed = sum(o.status != "finished" for o in outcomes)
    paired = paired_for(rows, outcomes, table.reference or None)
    _finish_parent(parent, rows, paths, failed, paired)
    return AblationResult(outcomes, rows, summary_text(rows, title, paired.text()), paths, parent.run_id, restored,
                          failed)


def _shown(path: Path, repo_dir: Path) -> str:
    """`path` relative to the repo when inside it (results.json is committed), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(repo_dir.resolve())) if path.is_relative_to(repo_dir.resolve()) else str(path)


def _spec(t: TrialSpec) -> dict[str, Any]:
    return {**asdict(t), "run_name": t.run_name}


def _resources_of(resources: Mapping[str, float], plan: FusionPlan, fused: Mapping[str, float] | None):
    """What Tune gives each trial: `resources`, and `fused` to a fused group (a callable only when there is one)."""
    if not plan.fused or fused is None:
        return dict(resources)
    bundles = {key: tune.PlacementGroupFactory([{RAY_NAMES.get(k, k): v for k, v in asks.items() if v}])
               for key, asks in (("one", resources), ("fused", fused))}
    return lambda config: bundles["fused" if "fused" in config["trial"] else "one"]


def _row_params(trials: Sequence[TrialSpec]) -> dict[str, int]:
    """Each row's parameters outside the backbone (the reports' Params (M) column); models built on `meta`."""
    params: dict[str, int] = {}
    for t in trials:
        if t.row not in params:
            params[t.row] = parameters_outside_backbone(config_from_dict(t.config).model)[1]
    return params


def _finish_parent(parent: Tracker, rows: Sequence[ReportRow], paths: Mapping[str, Path], failed: int,
                   paired: Paired) -> None:
    """Per-row mean AP as `<row>/ap/mean` metrics, each row against the reference (`paired/<row>/ap/<col>/diff`,
    `low`, `high`, `resolution/ap/<col>`; verdict tags), the report files and figures as artifacts, FAILED if a
    trial failed."""
    metrics = {}
    for r in rows:
        for col, name in METRIC_NAMES.items():
            if r.ours.get(col):
                metrics[f"{slug(r.name)}/{name}"] = sum(r.ours[col]) / len(r.ours[col])
    parent.log_metrics({**metrics, **paired_metrics(paired.diffs)}, step=0)
    parent.set_tag("ablation.failed_trials", str(failed))
    for key, value in paired_tags(paired.diffs, paired.reference).items():
        parent.set_tag(key, value)
    for path in paths.values():
        parent.log_artifact(path, "ablation")
    parent.finish("FAILED" if failed else "FINISHED")
