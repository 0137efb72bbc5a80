"""Paired differences by seed against hand-computed cases: the t quantile, intervals, verdicts, one seed, zero
spread, a row missing a seed, the table's resolution; and how reports, MLflow names and the figure show them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from matplotlib.image import imread

from vremd.ablation.grid import AblationError, load_tables
from vremd.ablation.paired import (NOT_RESOLVED, RESOLVED, TOO_FEW, mean_interval, paired_difference,
                                   t_quantile_975, table_resolution)
from vremd.ablation.paired_tables import paired_metrics, paired_tags
from vremd.ablation.report import TrialOutcome, paired_for, report_rows, summary_text, write_report
from vremd.eval.tables import load_paper_numbers

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "paper_numbers.yaml"
JOINTS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def outcome(row: str, seed: int, mean: float, joint_shift: float = 0.0) -> TrialOutcome:
    """A finished trial whose joints are `mean` + `joint_shift` (so joint differences are the Mean's plus shifts)."""
    return TrialOutcome(row, seed, "finished", {**{f"ap/{j}": mean + joint_shift for j in JOINTS}, "ap/mean": mean})


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                          (29, 2.0452), (120, 1.9799)])
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_limits_and_refuses_df_0():
    assert t_quantile_975(2) == pytest.approx(math.sqrt(1.805 / 0.0975), rel=1e-12)  # df 2: t^2 / (2 + t^2) = 0.95^2
    assert t_quantile_975(1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-12)  # Cauchy
    assert 1.959 < t_quantile_975(5000) < 1.961
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile_975(0)


def test_three_seeds_with_a_clear_gain_are_resolved():
    d = paired_difference("+BMD", "baseline", "Mean", {0: 31.0, 1: 32.5, 2: 33.0}, {0: 30.0, 1: 31.0, 2: 32.0})
    assert d.diffs == (1.0, 1.5, 1.0) and d.seeds == (0, 1, 2) and d.unpaired == ()
    assert d.mean == pytest.approx(7 / 6)
    assert d.sd == pytest.approx(math.sqrt(1 / 12))  # deviations -1/6, 1/3, -1/6: (1/36 + 4/36 + 1/36) / 2
    assert d.half_width == pytest.approx(t_quantile_975(2) / 6)  # sqrt(1/12) / sqrt(3) = 1/6
    assert (d.low, d.high) == pytest.approx((7 / 6 - 4.302653 / 6, 7 / 6 + 4.302653 / 6), abs=1e-6)
    assert d.verdict == RESOLVED and d.note == ""


def test_differences_of_opposite_sign_are_not_resolved():
    d = paired_difference("r", "f", "Mean", {0: 31.0, 1: 30.0}, {0: 30.0, 1: 31.0})
    assert d.mean == 0.0 and d.sd == pytest.approx(math.sqrt(2))
    assert d.half_width == pytest.approx(t_quantile_975(1))  # sqrt(2) / sqrt(2)
    assert d.verdict == NOT_RESOLVED


def test_one_seed_is_too_few():
    d = paired_difference("r", "f", "Mean", {0: 35.0}, {0: 30.0})
    assert d.n == 1 and d.mean == 5.0 and math.isnan(d.sd) and math.isnan(d.half_width)
    assert d.verdict == TOO_FEW
    empty = paired_difference("r", "f", "Mean", {}, {0: 30.0})
    assert empty.n == 0 and math.isnan(empty.mean) and empty.verdict == TOO_FEW
    assert "no seed finished in both rows" in empty.note and "seed 0 in one row only" in empty.note


def test_zero_spread_is_a_point_interval_resolved_only_away_from_zero():
    shifted = paired_difference("r", "f", "Mean", {0: 30.6, 1: 31.3, 2: 29.9}, {0: 30.1, 1: 30.8, 2: 29.4})
    assert shifted.zero_spread and shifted.half_width < 1e-9  # equal differences up to float rounding
    assert shifted.verdict == RESOLVED and shifted.note == "zero spread: the interval is the point"
    same = paired_difference("r", "f", "Mean", {0: 30.0, 1: 31.0}, {0: 30.0, 1: 31.0})  # one training adopted twice
    assert same.zero_spread and same.mean == 0.0 and same.verdict == NOT_RESOLVED


def test_a_row_missing_a_seed_is_paired_on_the_seeds_both_have():
    d = paired_difference("r", "f", "Mean", {0: 32.0, 2: 34.0}, {0: 30.0, 1: 31.0, 2: 31.0})
    assert d.seeds == (0, 2) and d.diffs == (2.0, 3.0) and d.unpaired == (1,)
    assert d.mean == 2.5 and d.sd == pytest.approx(math.sqrt(0.5))
    assert d.half_width == pytest.approx(t_quantile_975(1) * 0.5)  # sqrt(0.5) / sqrt(2)
    assert d.verdict == NOT_RESOLVED and d.note == "seed 1 in one row only, paired on 2"


def test_table_resolution_pools_the_rows_spreads_by_their_degrees_of_freedom():
    a = paired_difference("a", "f", "Mean", {0: 31.0, 1: 32.5, 2: 33.0}, {0: 30.0, 1: 31.0, 2: 32.0})  # sd^2 1/12, n 3
    b = paired_difference("b", "f", "Mean", {0: 31.0, 1: 30.0}, {0: 30.0, 1: 31.0})  # sd^2 2, n 2
    one = paired_difference("c", "f", "Mean", {0: 40.0}, {0: 30.0})  # no spread: left out of the pool
    res = table_resolution([a, b, one], "Mean")
    assert res.n == 3 and res.sd == pytest.approx(math.sqrt((2 / 12 + 2) / 3))
    assert res.half_width == pytest.approx(t_quantile_975(2) * math.sqrt(13 / 18) / math.sqrt(3))
    assert math.isnan(table_resolution([one], "Mean").half_width)
    assert mean_interval([1.0, 1.5, 1.0]) == pytest.approx((7 / 6, t_quantile_975(2) / 6))


def table6_outcomes() -> list[TrialOutcome]:
    """DC is the reference; DA gains 1.0-1.5 on every seed (resolved), DCA moves both ways, DCA+BS lost seed 2."""
    dc = {0: 38.0, 1: 39.0, 2: 38.5}
    return ([outcome("DC", s, v) for s, v in dc.items()]
            + [outcome("DA", s, dc[s] + g, joint_shift=0.5) for s, g in ((0, 1.0), (1, 1.5), (2, 1.0))]
            + [outcome("DCA", s, dc[s] + g) for s, g in ((0, 0.5), (1, -0.5), (2, 0.2))]
            + [outcome("DCA+BS", 0, 38.0), outcome("DCA+BS", 1, 39.5),
               TrialOutcome("DCA+BS", 2, "failed", error="RuntimeError: boom")])


def test_reports_print_verdicts_beside_the_papers_difference(tmp_path):
    outcomes = table6_outcomes()
    rows = report_rows(["DC", "DA", "DCA", "DCA+BS"], outcomes, load_paper_numbers(PAPER), 6)
    paired = paired_for(rows, outcomes)
    assert paired.reference == "DC" and paired.paper["DA"] == pytest.approx(85.8 - 84.7)
    text = summary_text(rows, "Table 6", paired.text())
    pairs = text[text.index("Against DC: row - reference in AP points"):].splitlines()
    da = next(line for line in pairs if line.startswith("DA "))
    assert "+1.17" in da and "resolved" in da and "not resolved" not in da and "+1.10" in da
    assert "Elbow +1.67" in da  # joints gain 0.5 more than the Mean: resolved too, listed
    bs = next(line for line in pairs if line.startswith("DCA+BS "))
    assert "not resolved" in bs and "seed 2 in one row only, paired on 2" in bs
    assert "Smallest resolvable difference at 3 seeds: Mean" in text
    paths = write_report(tmp_path, 6, "Table 6", rows, outcomes)
    long = list(csv.DictReader(io.StringIO(paths["paired_csv"].read_text())))
    da_mean = next(r for r in long if r["row"] == "DA" and r["column"] == "Mean")
    assert da_mean["seeds"] == "0 1 2" and da_mean["verdict"] == "resolved" and da_mean["reference"] == "DC"
    assert float(da_mean["mean_diff"]) == pytest.approx(7 / 6) and float(da_mean["ci_low"]) > 0
    assert float(da_mean["min_resolvable"]) == pytest.approx(table_resolution(paired.diffs, "Mean").half_width)
    md = paths["md"].read_text()
    assert "## Against DC, paired by seed" in md and "| DA | 3 | +1.17 |" in md and "**+1.67 [" in md
    assert "resolved" in paths["html"].read_text()
    saved = json.loads(paths["json"].read_text())
    assert saved["reference"] == "DC" and saved["resolution"]["Mean"]["n"] == 3
    assert next(p for p in saved["paired"] if p["row"] == "DA" and p["column"] == "Mean")["verdict"] == "resolved"
    image = imread(paths["seeds_png"])
    assert image.shape[1] > image.shape[0] > 200 and image.std() > 0


def test_mlflow_names_of_the_paired_differences():
    outcomes = table6_outcomes()
    rows = report_rows(["DC", "DA", "DCA", "DCA+BS"], outcomes, load_paper_numbers(PAPER), 6)
    paired = paired_for(rows, outcomes)
    metrics, tags = paired_metrics(paired.diffs), paired_tags(paired.diffs, paired.reference)
    assert metrics["paired/DA/ap/mean/diff"] == pytest.approx(7 / 6) and metrics["paired/DA/ap/mean/low"] > 0
    assert "paired/DCA-BS/ap/head/high" in metrics and "resolution/ap/mean" in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert tags["ablation.reference"] == "DC" and tags["paired.DA.verdict"] == "resolved"
    assert tags["paired.DCA.verdict"] == "not resolved" and tags["paired.DCA.joints_resolved"] == "none"


def test_a_column_where_every_seed_agrees_says_zero_spread():
    outcomes = [o for s in (0, 1) for o in (outcome("DC", s, 38.0 + s), outcome("DA", s, 39.0 + s))]  # +1.0 twice
    rows = report_rows(["DC", "DA"], outcomes, load_paper_numbers(PAPER), 6)
    text = paired_for(rows, outcomes).text()
    assert "Mean 0.00 (zero spread) AP" in text and "+1.00      [+1.00, +1.00]  resolved" in text


def test_one_seed_tables_say_too_few_seeds_and_one_row_tables_have_no_pairs():
    outcomes = [outcome("DC", 0, 38.0), outcome("DA", 0, 40.0)]
    rows = report_rows(["DC", "DA"], outcomes, load_paper_numbers(PAPER), 6)
    paired = paired_for(rows, outcomes)
    assert {d.verdict for d in paired.diffs} == {TOO_FEW}
    assert "At 1 paired seed no difference can be resolved" in paired.text()
    single = report_rows(["VREMD"], [outcome("VREMD", 0, 70.0)], load_paper_numbers(PAPER), 1)
    assert paired_for(single, [outcome("VREMD", 0, 70.0)]).diffs == []


def test_a_named_reference_row_is_used_and_a_wrong_one_refused(tmp_path):
    outcomes = table6_outcomes()
    rows = report_rows(["DC", "DA", "DCA", "DCA+BS"], outcomes, load_paper_numbers(PAPER), 6)
    assert {d.row for d in paired_for(rows, outcomes, "DCA+BS").diffs} == {"DC", "DA", "DCA"}
    assert load_tables(ROOT / "experiments" / "ablations.yaml")[4].reference == "baseline"  # the first row
    (tmp_path / "a.yaml").write_text("tables:\n  6:\n    reference: DCA\n    rows:\n      DC: {}\n      DCA: {}\n")
    assert load_tables(tmp_path / "a.yaml")[6].reference == "DCA"
    (tmp_path / "b.yaml").write_text("tables:\n  6:\n    reference: XX\n    rows:\n      DC: {}\n")
    with pytest.raises(AblationError, match=r"b\.yaml: tables\.6\.reference: expected one of its rows \(DC\), got 'XX'"):
        load_tables(tmp_path / "b.yaml")
