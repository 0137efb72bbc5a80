"""Per-joint AP tables (markdown, CSV, HTML) with the paper's numbers beside ours, and bar charts.

`ours` maps a column (Head .. Ankle, Mean; "Total" is read as Mean) to one AP value or a list of
values, one per seed (shown as mean ± std). `paper` maps the same columns to the paper's values, e.g.
`paper_row(load_paper_numbers(path), "table1")`. Charts use matplotlib's Agg canvas (no pyplot).
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from matplotlib.figure import Figure

from vremd.atomic import atomic_write
from vremd.errors import InputError
from vremd.eval.posetrack_ap import COLUMNS, as_columns

Values = float | Sequence[float]


def load_paper_numbers(path: Path) -> dict[str, Any]:
    """Return experiments/paper_numbers.yaml as a dict (tables keyed table1 .. table6)."""
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or "tables" not in data:
        raise InputError(f"{path}: tables: missing top-level key")
    return data["tables"]


def paper_row(tables: Mapping[str, Any], table: str, row: str = "VREMD") -> dict[str, float]:
    """Return one row of a paper table as {column: value}, e.g. VREMD's per-joint mAP of table1."""
    try:
        entry = next(r for r in tables[table]["rows"] if r["name"] == row)
    except (KeyError, StopIteration):
        raise KeyError(f"paper numbers: {table}.rows: no row named {row!r}") from None
    return {k: float(v) for k, v in entry.items() if k in COLUMNS}


def _stats(value: Values | None) -> tuple[float, float, int]:
    """Return (mean, std, n) of one value or a list of per-seed values; NaN/None count as missing."""
    if value is None:
        return math.nan, math.nan, 0
    vals = np.array([value] if np.isscalar(value) else list(value), dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return math.nan, math.nan, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def ap_rows(ours: Mapping[str, Values], paper: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Return one dict per column: column, paper, ours (mean), std, n (seeds), delta (ours - paper)."""
    ours, paper = as_columns(ours), as_columns(paper)
    rows = []
    for col in COLUMNS:
        mean, std, n = _stats(ours.get(col))
        ref = float(paper[col]) if paper.get(col) is not None else math.nan
        rows.append({"column": col, "paper": ref, "ours": mean, "std": std, "n": n, "delta": mean - ref})
    return rows


def _fmt(v: float, digits: int, sign: bool = False) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _ours_cell(row: Mapping[str, Any], digits: int) -> str:
    if row["n"] > 1:
        return f"{_fmt(row['ours'], digits)} ± {_fmt(row['std'], digits)}"
    return _fmt(row["ours"], digits)


def ap_table_markdown(ours: Mapping[str, Values], paper: Mapping[str, float] | None = None, digits: int = 1) -> str:
    """Return a markdown table: rows Head .. Ankle, Mean; columns Paper, Ours, Delta."""
    rows = ap_rows(ours, paper)
    lines = ["| Joint | Paper | Ours | Delta |", "|---|---:|---:|---:|"]
    lines += [f"| {r['column']} | {_fmt(r['paper'], digits)} | {_ours_cell(r, digits)} | {_fmt(r['delta'], digits, True)} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def ap_table_csv(ours: Mapping[str, Values], paper: Mapping[str, float] | None = None) -> str:
    """Return CSV with columns joint, paper, ours, ours_std, seeds, delta (full precision, empty for NaN)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["joint", "paper", "ours", "ours_std", "seeds", "delta"])
    num = lambda v: "" if math.isnan(v) else repr(float(v))  # noqa: E731
    for r in ap_rows(ours, paper):
        writer.writerow([r["column"], num(r["paper"]), num(r["ours"]), num(r["std"]), r["n"], num(r["delta"])])
    return buf.getvalue()


def ap_table_html(ours: Mapping[str, Values], paper: Mapping[str, float] | None = None, digits: int = 1,
                  title: str = "Per-joint AP") -> str:
    """Return a standalone HTML table (escaped) with the same content as the markdown table."""
    cells = "".join(
        f"<tr><td>{html.escape(r['column'])}</td><td>{_fmt(r['paper'], digits)}</td>"
        f"<td>{html.escape(_ours_cell(r, digits))}</td><td>{_fmt(r['delta'], digits, True)}</td></tr>\n"
        for r in ap_rows(ours, paper))
    return (f"<table>\n<caption>{html.escape(title)}</caption>\n"
            "<tr><th>Joint</th><th>Paper</th><th>Ours</th><th>Delta</th></tr>\n" + cells + "</table>\n")


def write_tables(out_dir: Path, ours: Mapping[str, Values], paper: Mapping[str, float] | None = None,
                 stem: str = "ap_table", title: str = "Per-joint AP") -> dict[str, Path]:
    """Write <stem>.md, .csv, .html and a bar chart .png into `out_dir`; return the paths by kind."""
    out_dir = Path(out_dir)
    texts = {"md": ap_table_markdown(ours, paper), "csv": ap_table_csv(ours, paper),
             "html": ap_table_html(ours, paper, title=title)}
    paths = {}
    for kind, text in texts.items():
        paths[kind] = out_dir / f"{stem}.{kind}"
        atomic_write(paths[kind], lambda p, t=text: p.write_text(t))
    paths["png"] = per_joint_bar_png(out_dir / f"{stem}.png", ours, paper, title=title)
    return paths


def per_joint_bar_png(path: Path, ours: Mapping[str, Values], paper: Mapping[str, float] | None = None,
                      title: str = "Per-joint AP") -> Path:
    """Draw ours (with seed std as error bars) beside the paper per column; return the PNG path."""
    rows = ap_rows(ours, paper)
    x = np.arange(len(rows))
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot()
    has_paper = paper is not None
    width = 0.4 if has_paper else 0.6
    ours_x = x + width / 2 if has_paper else x
    bars = ax.bar(ours_x, [r["ours"] for r in rows], width, yerr=[r["std"] if r["n"] > 1 else 0 for r in rows],
                  label="ours", color="tab:blue", capsize=3)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    if has_paper:
        ax.bar_label(ax.bar(x - width / 2, [r["paper"] for r in rows], width, label="paper", color="tab:gray"),
                     fmt="%.1f", fontsize=7)
    _finish(ax, x, [r["column"] for r in rows], title)
    return _save(fig, Path(path))


def ablation_bar_png(path: Path, rows: Mapping[str, Mapping[str, Values]],
                     paper: Mapping[str, Mapping[str, float]] | None = None, title: str = "Ablation") -> Path:
    """Grouped bars, one group per variant (row) and one bar per metric, paper bars beside ours if given."""
    variants = list(rows)
    metrics = list(dict.fromkeys(k for v in rows.values() for k in as_columns(v)))
    series = [(f"ours {m}", m, False) for m in metrics]
    if paper:
        series += [(f"paper {m}", m, True) for m in metrics]
    x = np.arange(len(variants))
    width = 0.8 / max(len(series), 1)
    bars_total = len(variants) * len(series)  # about 0.3 inch per bar keeps the value labels apart
    fig = Figure(figsize=(max(6.0, 1.4 * len(variants), 0.3 * bars_total + 2), 4), dpi=100)
    ax = fig.add_subplot()
    for i, (label, metric, is_paper) in enumerate(series):
        if is_paper:
            heights = [as_columns(paper.get(v)).get(metric, math.nan) for v in variants]
            errs = [0.0] * len(variants)
        else:
            stats = [_stats(as_columns(rows[v]).get(metric)) for v in variants]
            heights, errs = [s[0] for s in stats], [s[1] if s[2] > 1 else 0.0 for s in stats]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, yerr=errs, capsize=3, label=label,
                      hatch="//" if is_paper else None, alpha=0.6 if is_paper else 1.0)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    _finish(ax, x, variants, title)
    return _save(fig, Path(path))


@dataclass(frozen=True)
class SeedInterval:
    """One row of an interval panel: its per-seed values, their mean's interval and a reference value (NaN: none)."""

    label: str
    points: tuple[float, ...]
    mean: float
    low: float  # NaN without an interval (fewer than 2 seeds)
    high: float
    reference: float = math.nan  # e.g. the paper's value, drawn beside ours


def seed_interval_png(path: Path, panels: Sequence[tuple[str, Sequence[SeedInterval]]], title: str,
                      reference_label: str = "paper") -> Path:
    """One panel per (y label, rows): each row's seed values as dots, their mean as a bar across with its interval,
    and its reference value as a hollow diamond beside it; a dashed line at 0 on a panel that crosses 0."""
    widest = max((len(rows) for _, rows in panels), default=1)
    fig = Figure(figsize=(max(4.0, 1.3 * widest) * len(panels), 4.2), dpi=100)
    for k, (ylabel, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for i, r in enumerate(rows):
            first = i == 0
            ax.scatter(i - 0.1 + np.linspace(-0.1, 0.1, len(r.points)) * (len(r.points) > 1), r.points, s=18,
                       color="tab:blue", zorder=3, label="seeds" if first else None)
            ax.hlines(r.mean, i - 0.3, i + 0.1, color="black", zorder=2, label="mean" if first else None)
            if not math.isnan(r.low):
                ax.errorbar(i - 0.1, r.mean, yerr=[[r.mean - r.low], [r.high - r.mean]], fmt="none", ecolor="black",
                            capsize=5, zorder=2, label=None if any(not math.isnan(q.low) for q in rows[:i])
                            else "95% interval")
            if not math.isnan(r.reference):
                ax.scatter(i + 0.25, r.reference, marker="D", s=40, facecolors="none", edgecolors="tab:red",
                           zorder=3, label=None if any(not math.isnan(q.reference) for q in rows[:i])
                           else reference_label)
        values = [v for r in rows for v in (*r.points, r.low, r.high, r.reference) if not math.isnan(v)]
        if values and min(values) < 0 < max(values):
            ax.axhline(0, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(rows)), [r.label for r in rows], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return _save(fig, Path(path))


def _finish(ax, x, labels, title) -> None:
    ax.set_xticks(x, labels, rotation=20 if max(map(len, labels), default=0) > 8 else 0)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # beside, never on a bar


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    # bbox_inches="tight" keeps the outside legend
    atomic_write(path, lambda p: fig.savefig(p, format="png", bbox_inches="tight"), check_written=True)
    return path
