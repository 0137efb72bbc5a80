"""Per-joint tables with the paper's numbers beside ours, and the bar charts."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vremd.eval.tables import (ablation_bar_png, ap_rows, ap_table_csv, ap_table_html, ap_table_markdown,
                               load_paper_numbers, paper_row, per_joint_bar_png, write_tables)

PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper_numbers.yaml"
OURS = {"Head": 88.0, "Shoulder": 90.0, "Elbow": 87.5, "Wrist": 83.0, "Hip": 87.0, "Knee": 86.0,
        "Ankle": 80.0, "Total": 86.4}


def test_paper_numbers_are_the_papers():
    tables = load_paper_numbers(PAPER)
    t1 = paper_row(tables, "table1")
    assert t1 == {"Head": 89.9, "Shoulder": 91.4, "Elbow": 88.8, "Wrist": 84.8, "Hip": 88.5, "Knee": 87.8,
                  "Ankle": 81.0, "Mean": 87.6}
    assert paper_row(tables, "table2")["Mean"] == 84.6 and paper_row(tables, "table3")["Ankle"] == 79.2
    assert paper_row(tables, "table1", "DCPose") == {"Mean": 82.8}
    assert [paper_row(tables, "table3", r)["Mean"] for r in ("DCPose", "TDMI-ST")] == [80.5, 83.8]
    assert [r["Mean"] for r in tables["table4"]["rows"]] == [80.2, 85.3, 85.6, 87.6]
    assert [r["Mean"] for r in tables["table5"]["rows"]] == [85.9, 86.5, 86.8, 87.6]
    assert [r["Mean"] for r in tables["table6"]["rows"]] == [84.7, 85.8, 87.1, 87.6]
    # Mean is poseval's Total: 15-joint mean, head weighted 3/15 -> consistent with the groups
    groups = [t1[k] for k in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")]
    assert (3 * t1["Head"] + 2 * sum(groups)) / 15 == pytest.approx(t1["Mean"], abs=0.05)
    with pytest.raises(KeyError, match="no row named 'nope'"):
        paper_row(tables, "table1", "nope")


def test_markdown_has_paper_ours_delta():
    paper = paper_row(load_paper_numbers(PAPER), "table1")
    md = ap_table_markdown(OURS, paper)
    assert md.splitlines()[0] == "| Joint | Paper | Ours | Delta |"
    assert "| Head | 89.9 | 88.0 | -1.9 |" in md
    assert "| Mean | 87.6 | 86.4 | -1.2 |" in md  # "Total" is read as Mean
    assert len(md.strip().splitlines()) == 2 + 8


def test_seeds_give_mean_and_std_and_missing_paper_is_a_dash():
    ours = {**OURS, "Head": [88.0, 89.0, 90.0]}
    rows = {r["column"]: r for r in ap_rows(ours, {"Mean": 87.6})}
    assert rows["Head"]["ours"] == pytest.approx(89.0) and rows["Head"]["std"] == pytest.approx(1.0)
    assert rows["Head"]["n"] == 3 and math.isnan(rows["Head"]["paper"])
    md = ap_table_markdown(ours, {"Mean": 87.6})
    assert "| Head | – | 89.0 ± 1.0 | – |" in md


def test_nan_ours_is_shown_as_missing():
    md = ap_table_markdown({**OURS, "Head": math.nan}, None)
    assert "| Head | – | – | – |" in md


def test_csv_and_html():
    paper = {"Head": 89.9, "Mean": 87.6}
    rows = list(csv.DictReader(io.StringIO(ap_table_csv(OURS, paper))))
    assert [r["joint"] for r in rows] == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]
    assert float(rows[0]["delta"]) == pytest.approx(88.0 - 89.9) and rows[1]["paper"] == ""
    page = ap_table_html(OURS, paper, title="A <b> title")
    assert "A &lt;b&gt; title" in page and page.count("<tr>") == 9


def _png_ok(path: Path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


def test_write_tables_writes_all_formats(tmp_path):
    paths = write_tables(tmp_path / "report", OURS, paper_row(load_paper_numbers(PAPER), "table2"), stem="pt18")
    assert sorted(paths) == ["csv", "html", "md", "png"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert not list((tmp_path / "report").glob(".*"))  # no temporary files left behind
    _png_ok(paths["png"])


def test_bar_charts_render(tmp_path):
    with_paper = _png_ok(per_joint_bar_png(tmp_path / "a.png", {**OURS, "Head": [88, 89]}, {"Head": 89.9}))
    alone = _png_ok(per_joint_bar_png(tmp_path / "b.png", OURS))
    assert not np.array_equal(with_paper.shape, []) and alone.shape[0] == with_paper.shape[0]
    tables = load_paper_numbers(PAPER)
    rows = {r["name"]: {"Mean": [r["Mean"] - 1, r["Mean"] - 0.5]} for r in tables["table6"]["rows"]}
    paper = {r["name"]: {"Mean": r["Mean"]} for r in tables["table6"]["rows"]}
    img = _png_ok(ablation_bar_png(tmp_path / "abl.png", rows, paper, title="Table 6"))
    assert img.shape[1] >= 550 and img.shape[1] > img.shape[0]
    joints = {r["name"]: OURS for r in tables["table6"]["rows"]}  # 4 rows x 8 bars: the figure widens
    assert _png_ok(ablation_bar_png(tmp_path / "joints.png", joints, title="Table 6")).shape[1] > 1.5 * img.shape[1]
