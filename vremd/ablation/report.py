"""The paper's tables beside ours: per-row mean ± std over seeds, failed trials shown, never dropped, and each
row against the table's reference row, paired by seed (`paired_tables`).

Plain data in, files out (markdown, CSV, HTML, PNG, JSON); no Ray, no MLflow. `TrialOutcome` is what
`vremd.ablation.trials` collects from each Tune trial; `write_report` renders one table from them with
the per-joint helpers of `vremd.eval.tables`.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from vremd.ablation.paired import PairedDiff, mean_interval
from vremd.ablation.paired_tables import (paired_csv, paired_diffs, paired_html, paired_markdown, paired_records,
                                          paired_text, paper_diffs, resolutions, seed_values)
from vremd.atomic import AtomicBatch, atomic_write_text
from vremd.eval.posetrack_ap import COLUMNS, MEAN, METRIC_NAMES
from vremd.eval.tables import SeedInterval, ablation_bar_png, ap_rows, ap_table_markdown, paper_row, seed_interval_png

__all__ = ["TrialOutcome", "ReportRow", "Paired", "report_rows", "paired_for", "summary_text", "summary_markdown",
           "summary_csv", "summary_html", "seeds_png", "write_report",
           "report_dir"]


# where a trial ran (`vremd.ablation.provenance.trial_provenance`); "lock_sha256" is vremd.train.tracking.LOCK_TAG
PROVENANCE_KEYS = ("git_commit", "git_dirty", "lock_sha256", "cpu_model", "cpu_isa", "torch_cpu_capability",
                   "torch_threads", "wall_s", "adopted_from")


@dataclass(frozen=True)
class TrialOutcome:
    """One (row, seed) trial: `finished`, `failed` (with the error) or `not run`; AP in percent."""

    row: str
    seed: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)  # ap/head .. ap/mean, loss, epochs
    error: str = ""
    run_name: str = ""
    mlflow_run_id: str = ""
    node_id: str = ""  # the Ray node that reported the result (hex id); "" without one
    provenance: dict[str, str] = field(default_factory=dict)  # PROVENANCE_KEYS: commit, lock, CPU, threads, time


@dataclass(frozen=True)
class ReportRow:
    """One row of a rendered table: our values per column (one per finished seed) and the paper's."""

    name: str
    ours: dict[str, list[float]]
    paper: dict[str, float]
    finished: int
    failed: int
    missing: int
    errors: tuple[str, ...] = ()
    peer: bool = False  # a paper row we do not run (tables 1-3: other methods)
    params: int | None = None  # parameters of the row's model outside the backbone (the Params (M) column)

    @property
    def state(self) -> str:
        """`ok`, `partial` (some seeds failed or did not run), `failed`, `paper only` (a peer) or `not run`."""
        total = self.finished + self.failed + self.missing
        if self.peer:
            return "paper only"
        if self.finished == total and total:
            return "ok"
        if self.finished:
            return "partial"
        return "failed" if self.failed else "not run"


def report_rows(row_names: Sequence[str], outcomes: Sequence[TrialOutcome], paper_tables: Mapping[str, Any],
                table: int, params: Mapping[str, int] | None = None) -> list[ReportRow]:
    """Our rows in table order, then the paper's peers (rows we do not run), each with the paper's numbers.

    ``params`` maps our row names to their models' parameter counts outside the backbone (Params (M)).
    """
    key = f"table{table}"
    paper_names = [r["name"] for r in paper_tables.get(key, {}).get("rows", [])]
    rows = []
    peers = [n for n in paper_names if n not in row_names]
    for name in list(row_names) + peers:
        mine = [o for o in outcomes if o.row == name]
        done = [o for o in mine if o.status == "finished"]
        ours = {col: [float(o.metrics[m]) for o in done if _finite(o.metrics.get(m))]
                for col, m in METRIC_NAMES.items()}
        paper = paper_row(paper_tables, key, name) if name in paper_names else {}
        rows.append(ReportRow(name, ours, paper, len(done), sum(o.status == "failed" for o in mine),
                              sum(o.status not in ("finished", "failed") for o in mine),
                              tuple(f"seed {o.seed}: {o.error}" for o in mine if o.status == "failed"),
                              peer=name in peers, params=(params or {}).get(name)))
    return rows


@dataclass(frozen=True)
class Paired:
    """A table's rows against its reference row: the differences, and the paper's Mean differences beside them."""

    reference: str
    diffs: list[PairedDiff]
    paper: dict[str, float]  # row -> the paper's Mean of the row - of the reference

    def text(self) -> str:
        return paired_text(self.diffs, self.reference, self.paper)

    def markdown(self, heading: str = "##") -> str:
        return paired_markdown(self.diffs, self.reference, self.paper, heading)


def paired_for(rows: Sequence[ReportRow], outcomes: Sequence[TrialOutcome], reference: str | None = None) -> Paired:
    """Each of our rows against `reference` (default: our first row), paired by seed; no differences for a
    one-row table or a reference that is not one of our rows."""
    ours = [r.name for r in rows if r.state != "paper only"]
    reference = reference or (ours[0] if ours else "")
    if reference not in ours or len(ours) < 2:
        return Paired(reference, [], {})
    return Paired(reference, paired_diffs(outcomes, ours, reference),
                  paper_diffs({r.name: r.paper for r in rows if r.name in ours}, reference))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(float(v))


def _cells(row: ReportRow) -> dict[str, str]:
    """Display cells of one row: Paper / Ours / Delta of the Mean, ours per joint, seeds."""
    stats = {r["column"]: r for r in ap_rows(row.ours, row.paper)}

    def ours(col: str) -> str:
        r = stats[col]
        if r["n"] == 0:
            return {"failed": "failed", "not run": "not run", "paper only": ""}.get(row.state, "–")
        return f"{r['ours']:.1f} ± {r['std']:.1f}" if r["n"] > 1 else f"{r['ours']:.1f}"

    mean = stats[MEAN]
    seeds = "" if row.state == "paper only" else f"{row.finished}/{row.finished + row.failed + row.missing}"
    if row.failed:
        seeds += f" ({row.failed} failed)"
    return {"Row": row.name, "Paper": "–" if math.isnan(mean["paper"]) else f"{mean['paper']:.1f}",
            "Ours": ours(MEAN), "Delta": "–" if math.isnan(mean["delta"]) else f"{mean['delta']:+.1f}",
            PARAMS_COLUMN: "" if row.params is None else f"{row.params / 1e6:.2f}",
            **{col: ours(col) for col in COLUMNS[:-1]}, "Seeds": seeds}


PARAMS_COLUMN = "Params (M)"  # parameters outside the backbone: the capacity each row adds or removes
PARAMS_NOTE = "Params (M): parameters of the row's model outside the backbone (the backbone is the same in every row)."
SUMMARY_HEADER = ("Row", "Paper", "Ours", "Delta", PARAMS_COLUMN, *COLUMNS[:-1], "Seeds")


def summary_text(rows: Sequence[ReportRow], title: str, paired: str = "") -> str:
    """An aligned plain-text table for the terminal (Paper, Ours and Delta are the Mean AP), then `paired`
    (`Paired.text()`: each row against the reference)."""
    table = [SUMMARY_HEADER] + [tuple(_cells(r)[h] for h in SUMMARY_HEADER) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(SUMMARY_HEADER))]
    lines = [title, ""] + ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                           for line in table]
    lines.insert(3, "  ".join("-" * w for w in widths))
    lines += [f"  {r.name}: {e}" for r in rows for e in r.errors] + ["", PARAMS_NOTE]
    return "\n".join(lines) + "\n" + (f"\n{paired}" if paired else "")


def summary_markdown(rows: Sequence[ReportRow], title: str, notes: Sequence[str] = (), paired: str = "") -> str:
    """Markdown: the summary table, `paired` (`Paired.markdown()`), then per row the per-joint Paper / Ours / Delta
    table."""
    out = [f"# {title}", "", summary_table_markdown(rows), ""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    out += [paired] if paired else []
    for r in rows:
        if r.state == "paper only":
            continue
        out += [f"## {r.name}", "", ap_table_markdown(r.ours, r.paper or None)]
        out += [f"- failed {e}" for e in r.errors] + ([""] if r.errors else [])
    return "\n".join(out)


def summary_table_markdown(rows: Sequence[ReportRow]) -> str:
    """The summary table alone (Row, Paper, Ours, Delta, Params, joints, Seeds), with the line that explains it."""
    out = ["Paper, Ours and Delta: Mean AP (poseval Total); joints: ours, mean ± std over seeds. " + PARAMS_NOTE, ""]
    out += ["| " + " | ".join(SUMMARY_HEADER) + " |", "|---|" + "---:|" * (len(SUMMARY_HEADER) - 1)]
    return "\n".join(out + ["| " + " | ".join(_cells(r)[h] for h in SUMMARY_HEADER) + " |" for r in rows])


def summary_csv(rows: Sequence[ReportRow]) -> str:
    """Long CSV: one line per (row, column) with paper, ours, ours_std, seeds, failed, delta, state, params."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "column", "paper", "ours", "ours_std", "seeds", "failed", "delta", "state", "params"])
    num = lambda v: "" if math.isnan(v) else repr(float(v))  # noqa: E731
    for r in rows:
        for s in ap_rows(r.ours, r.paper):
            writer.writerow([r.name, s["column"], num(s["paper"]), num(s["ours"]), num(s["std"]) if s["n"] else "",
                             s["n"], r.failed, num(s["delta"]), r.state, "" if r.params is None else r.params])
    return buf.getvalue()


def summary_html(rows: Sequence[ReportRow], title: str, paired: str = "") -> str:
    """A standalone HTML page with the summary table (escaped), then `paired` (`paired_tables.paired_html`)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cells(r)[h])}</td>" for h in SUMMARY_HEADER) + "</tr>\n"
                   for r in rows)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head><body>\n"
            f"<table>\n<caption>{html.escape(title)}</caption>\n<tr>{head}</tr>\n{body}</table>\n{paired}</body></html>\n")


def write_report(out_dir: Path, table: int, title: str, rows: Sequence[ReportRow],
                 outcomes: Sequence[TrialOutcome], extra: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = (), chart_title: str = "", reference: str | None = None) -> dict[str, Path]:
    """Write table<N>.{md,csv,html}, table<N>_paired.csv (each row against `reference`, default our first row),
    table<N>.png (Mean, grouped by row), table<N>_joints.png, table<N>_seeds.png (`seeds_png`), trials.csv
    and results.json as the folder `out_dir`, replacing an earlier one as a whole once every file is written
    (a failed write leaves the earlier table complete); return the paths by kind."""
    out_dir = Path(out_dir)
    with AtomicBatch() as batch:
        names = batch.fill(out_dir, lambda tmp: _report_files(tmp, table, title, rows, outcomes, extra, notes,
                                                              chart_title, reference))
        batch.commit()
    return {kind: out_dir / name for kind, name in names.items()}


def _report_files(out_dir: Path, table: int, title: str, rows: Sequence[ReportRow], outcomes: Sequence[TrialOutcome],
                  extra: Mapping[str, Any] | None, notes: Sequence[str], chart_title: str,
                  reference: str | None) -> dict[str, str]:
    """Write the report's files into the new folder `out_dir`; return their names by kind."""
    paired, stem = paired_for(rows, outcomes, reference), f"table{table}"
    names = {"md": f"{stem}.md", "csv": f"{stem}.csv", "html": f"{stem}.html", "paired_csv": f"{stem}_paired.csv",
             "trials": "trials.csv", "json": "results.json", "png": f"{stem}.png", "joints_png": f"{stem}_joints.png",
             "seeds_png": f"{stem}_seeds.png"}
    resolution = {c: {"n": r.n, "sd": r.sd, "half_width": r.half_width} for c, r in resolutions(paired.diffs).items()}
    texts = {"md": summary_markdown(rows, title, notes, paired.markdown()), "csv": summary_csv(rows),
             "html": summary_html(rows, title, paired_html(paired.diffs, paired.reference, paired.paper)),
             "paired_csv": paired_csv(paired.diffs), "trials": _trials_csv(outcomes),
             "json": json.dumps({"table": table, "title": title, **(extra or {}), "reference": paired.reference,
                                 "rows": [{**asdict(r), "state": r.state} for r in rows],
                                 "trials": [asdict(o) for o in outcomes], "paired": paired_records(paired.diffs),
                                 "resolution": resolution if paired.diffs else {}},
                                indent=2, default=str) + "\n"}
    for kind, text in texts.items():
        atomic_write_text(out_dir / names[kind], text)
    ran = [r for r in rows if r.state != "paper only"]
    name = chart_title or f"Table {table}"
    ablation_bar_png(out_dir / names["png"], {r.name: {MEAN: r.ours[MEAN]} for r in rows},
                     {r.name: {MEAN: r.paper[MEAN]} for r in rows if MEAN in r.paper},
                     title=f"{name}: Mean AP, ours vs paper")
    ablation_bar_png(out_dir / names["joints_png"], {r.name: {c: r.ours[c] for c in COLUMNS} for r in ran},
                     title=f"{name}: per-joint AP (ours)")
    seeds_png(out_dir / names["seeds_png"], ran, outcomes, paired, name)
    return names


def report_dir(out_dir: Path, outcomes: Sequence[TrialOutcome]) -> Path:
    """Where a table's report goes: `out_dir`, unless no trial of `outcomes` finished while the table already in
    `out_dir` (its results.json) has finished trials; then `<out_dir>-failed`, so that a run that produced
    nothing never replaces good results."""
    out_dir = Path(out_dir)
    if any(o.status == "finished" for o in outcomes):
        return out_dir
    try:
        earlier = json.loads((out_dir / "results.json").read_text()).get("trials", [])
    except (OSError, ValueError, AttributeError):  # none, or unreadable: nothing worth keeping
        return out_dir
    kept = any(isinstance(t, dict) and t.get("status") == "finished" for t in earlier)
    return out_dir.with_name(f"{out_dir.name}-failed") if kept else out_dir


def seeds_png(path: Path, rows: Sequence[ReportRow], outcomes: Sequence[TrialOutcome], paired: Paired,
              name: str) -> Path:
    """Two panels: our Mean AP per row (seed dots, mean, 95% t interval; the paper's value under the row name), and
    each row minus the reference row paired by seed (seed differences, mean, interval; the paper's difference as a
    diamond)."""
    def ours(r: ReportRow) -> SeedInterval:
        values = list(seed_values(outcomes, r.name, MEAN).values())
        mean, half = mean_interval(values)
        paper = f"\npaper {r.paper[MEAN]:.1f}" if MEAN in r.paper else ""
        return SeedInterval(f"{r.name}{paper}", tuple(values), mean, mean - half, mean + half)

    panels = [("Mean AP (ours)", [ours(r) for r in rows])]
    diffs = [d for d in paired.diffs if d.column == MEAN]
    if diffs:
        panels.append((f"Mean AP - {paired.reference} (paired by seed)",
                       [SeedInterval(d.row, d.diffs, d.mean, d.low, d.high, paired.paper.get(d.row, math.nan))
                        for d in diffs]))
    return seed_interval_png(path, panels, f"{name}: Mean AP per seed, 95% intervals; paper beside")


def _trials_csv(outcomes: Sequence[TrialOutcome]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    metric_names = list(METRIC_NAMES.values()) + ["loss", "epochs"]
    writer.writerow(["row", "seed", "status", *metric_names, "run_name", "mlflow_run_id", "node_id", "error",
                     *PROVENANCE_KEYS])
    for o in outcomes:
        writer.writerow([o.row, o.seed, o.status, *(o.metrics.get(m, "") for m in metric_names), o.run_name,
                         o.mlflow_run_id, o.node_id, o.error, *(o.provenance.get(k, "") for k in PROVENANCE_KEYS)])
    return buf.getvalue()


