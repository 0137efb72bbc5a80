"""Each row of a table against its reference row, paired by seed: built from trial outcomes, rendered as
text, markdown, CSV, HTML, JSON and MLflow metrics and tags (`vremd.ablation.paired` has the maths).

The reference row is the table's `reference` in experiments/ablations.yaml, else its first row (the
paper's: baseline, no mask, DC). Every rendering says which interval it is and that cells are AP points.
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import asdict
from typing import Any, Mapping, Sequence

from vremd.ablation.grid import slug
from vremd.ablation.paired import (RESOLVED, TOO_FEW, ZERO_SPREAD_AP, PairedDiff, Resolution, paired_difference,
                                   table_resolution)
from vremd.eval.posetrack_ap import COLUMNS, MEAN, METRIC_NAMES

__all__ = ["seed_values", "paired_diffs", "resolutions", "resolution_sentence", "paper_diffs", "paired_text",
           "paired_markdown",
           "paired_csv", "paired_html", "paired_records", "paired_metrics", "paired_tags", "INTERVAL_NOTE"]

JOINTS = COLUMNS[:-1]
INTERVAL_NOTE = ("row - reference in AP points, paired by seed; 95% Student-t interval over the paired seeds; "
                 "resolved: the interval excludes 0 (vremd/ablation/paired.py)")


def seed_values(outcomes: Sequence[Any], row: str, column: str) -> dict[int, float]:
    """{seed: AP} of `row`'s finished trials in `column` (finite values only)."""
    metric = METRIC_NAMES[column]
    return {o.seed: float(o.metrics[metric]) for o in outcomes if o.row == row and o.status == "finished"
            and isinstance(o.metrics.get(metric), (int, float)) and math.isfinite(float(o.metrics[metric]))}


def paired_diffs(outcomes: Sequence[Any], rows: Sequence[str], reference: str) -> list[PairedDiff]:
    """Every row but `reference`, in order, minus `reference`, in every column (Head .. Ankle, Mean)."""
    return [paired_difference(row, reference, col, seed_values(outcomes, row, col),
                              seed_values(outcomes, reference, col))
            for row in rows if row != reference for col in COLUMNS]


def resolutions(diffs: Sequence[PairedDiff]) -> dict[str, Resolution]:
    """The table's smallest resolvable difference per column."""
    return {col: table_resolution(diffs, col) for col in COLUMNS}


def paper_diffs(paper: Mapping[str, Mapping[str, float]], reference: str) -> dict[str, float]:
    """{row: the paper's Mean of that row - the paper's Mean of `reference`}; rows without both are left out."""
    ref = paper.get(reference, {}).get(MEAN)
    return {row: float(v[MEAN]) - float(ref) for row, v in paper.items() if ref is not None and MEAN in v}


def _by_row(diffs: Sequence[PairedDiff]) -> dict[str, dict[str, PairedDiff]]:
    out: dict[str, dict[str, PairedDiff]] = {}
    for d in diffs:
        out.setdefault(d.row, {})[d.column] = d
    return out


def _num(v: float, sign: bool = True) -> str:
    return "–" if v is None or math.isnan(v) else (f"{v:+.2f}" if sign else f"{v:.2f}")


def _interval(d: PairedDiff) -> str:
    return "–" if d.n < 2 else f"[{_num(d.low)}, {_num(d.high)}]"


def _resolved_joints(cols: Mapping[str, PairedDiff]) -> str:
    found = [f"{c} {_num(cols[c].mean)}" for c in JOINTS if cols[c].verdict == RESOLVED]
    return ", ".join(found) or "none"


def resolution_sentence(res: Mapping[str, Resolution]) -> str:
    """One sentence: the smallest Mean (and per-joint) difference the table resolves at its seed count."""
    mean = res[MEAN]
    if mean.n < 2:
        return (f"At {mean.n} paired seed{'s' * (mean.n != 1)} no difference can be resolved ({TOO_FEW}): the "
                "interval needs a spread over at least 2 seeds (--seeds 2 or more).")
    def half(r: Resolution) -> str:  # a pooled spread of 0: every row's seeds agreed exactly (e.g. all at 0 AP)
        return f"{_num(r.half_width, False)}{' (zero spread)' if r.sd <= ZERO_SPREAD_AP else ''}"

    joints = ", ".join(f"{c} {half(res[c])}" for c in JOINTS)
    return (f"Smallest resolvable difference at {mean.n} seeds: Mean {half(mean)} AP (pooled paired spread "
            f"{_num(mean.sd, False)}); per joint: {joints}. A true difference of that size is resolved about half "
            "the time.")


def _mean_rows(diffs: Sequence[PairedDiff], paper: Mapping[str, float]) -> list[list[str]]:
    """Header and one line per row: Row, Seeds, Mean diff, 95% interval, Verdict, Paper diff, Joints resolved, Note."""
    lines = [["Row", "Seeds paired", "Mean diff", "95% interval", "Verdict", "Paper diff", "Joints resolved", "Note"]]
    for row, cols in _by_row(diffs).items():
        d = cols[MEAN]
        lines.append([row, str(d.n), _num(d.mean), _interval(d), d.verdict, _num(paper.get(row, math.nan)),
                      _resolved_joints(cols), d.note])
    return lines


def paired_text(diffs: Sequence[PairedDiff], reference: str, paper: Mapping[str, float]) -> str:
    """Aligned plain text for the terminal: the Mean line of each row, then the table's resolution."""
    if not diffs:
        return ""
    table = _mean_rows(diffs, paper)
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    out = [f"Against {reference}: {INTERVAL_NOTE}."]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    return "\n".join(out + [resolution_sentence(resolutions(diffs))]) + "\n"


def paired_markdown(diffs: Sequence[PairedDiff], reference: str, paper: Mapping[str, float],
                    heading: str = "##") -> str:
    """Markdown under a `heading` title: the Mean table (verdicts, the paper's difference beside ours), the
    per-joint differences with their intervals (bold: resolved), and the table's resolution."""
    if not diffs:
        return ""
    table = _mean_rows(diffs, paper)
    out = [f"{heading} Against {reference}, paired by seed", "", INTERVAL_NOTE[0].upper() + INTERVAL_NOTE[1:] + ".", "",
           "| " + " | ".join(table[0]) + " |", "|---|---:|---:|---|---|---:|---|---|"]
    out += ["| " + " | ".join(line) + " |" for line in table[1:]]
    out += ["", "| Row | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for row, cols in _by_row(diffs).items():
        cells = [f"{_num(cols[c].mean)} {_interval(cols[c])}" for c in COLUMNS]
        out.append(f"| {row} | " + " | ".join(f"**{t}**" if cols[c].verdict == RESOLVED else t
                                               for c, t in zip(COLUMNS, cells)) + " |")
    return "\n".join(out + ["", resolution_sentence(resolutions(diffs)), ""])


def paired_records(diffs: Sequence[PairedDiff]) -> list[dict[str, Any]]:
    """JSON-ready dicts (NaN as None): the fields, n, low, high, verdict and note of each difference."""
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return [{k: clean(v) for k, v in {**asdict(d), "n": d.n, "low": d.low, "high": d.high, "verdict": d.verdict,
                                       "note": d.note}.items()} for d in diffs]


def paired_csv(diffs: Sequence[PairedDiff]) -> str:
    """Long CSV, one line per (row, column): the paired seeds and differences, mean, spread, interval, verdict,
    and the table's smallest resolvable difference in that column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "reference", "column", "n", "seeds", "diffs", "mean_diff", "sd", "ci_low", "ci_high",
                     "half_width", "verdict", "note", "min_resolvable"])
    res = resolutions(diffs)
    num = lambda v: "" if math.isnan(v) else repr(float(v))  # noqa: E731
    for d in diffs:
        writer.writerow([d.row, d.reference, d.column, d.n, " ".join(map(str, d.seeds)),
                         " ".join(repr(x) for x in d.diffs), num(d.mean), num(d.sd), num(d.low), num(d.high),
                         num(d.half_width), d.verdict, d.note, num(res[d.column].half_width)])
    return buf.getvalue()


def paired_html(diffs: Sequence[PairedDiff], reference: str, paper: Mapping[str, float]) -> str:
    """An HTML table (escaped) of the Mean lines and the resolution sentence; "" without differences."""
    if not diffs:
        return ""
    table = _mean_rows(diffs, paper)
    cells = lambda line, tag: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in line)  # noqa: E731
    body = "".join(f"<tr>{cells(line, 'td')}</tr>\n" for line in table[1:])
    return (f"<table>\n<caption>{html.escape(f'Against {reference}: {INTERVAL_NOTE}')}</caption>\n"
            f"<tr>{cells(table[0], 'th')}</tr>\n{body}</table>\n"
            f"<p>{html.escape(resolution_sentence(resolutions(diffs)))}</p>\n")


def paired_metrics(diffs: Sequence[PairedDiff]) -> dict[str, float]:
    """MLflow metrics: `paired/<row>/<ap metric>/{diff,low,high}` and `resolution/<ap metric>` (finite only)."""
    out = {}
    for d in diffs:
        base = f"paired/{slug(d.row)}/{METRIC_NAMES[d.column]}"
        out.update({f"{base}/diff": d.mean, f"{base}/low": d.low, f"{base}/high": d.high})
    out.update({f"resolution/{METRIC_NAMES[c]}": r.half_width for c, r in resolutions(diffs).items()})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def paired_tags(diffs: Sequence[PairedDiff], reference: str) -> dict[str, str]:
    """MLflow tags: the reference row, each row's Mean verdict, and the joints it resolves."""
    tags = {"ablation.reference": reference}
    for row, cols in _by_row(diffs).items():
        tags[f"paired.{slug(row)}.verdict"] = cols[MEAN].verdict
        tags[f"paired.{slug(row)}.joints_resolved"] = _resolved_joints(cols)
    return tags
