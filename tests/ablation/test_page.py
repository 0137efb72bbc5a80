"""docs/results.md is what the committed results say: generated blocks, cited values and figures are checked,
and a decimal number typed into the prose is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pipeline.results_page as results_page
from tests.ablation.test_paired import PAPER, table6_outcomes
from vremd.ablation.page import PageError, cite_value, load_results, stray_numbers
from vremd.ablation.report import report_rows, write_report
from vremd.eval.tables import load_paper_numbers

ROOT = Path(__file__).resolve().parents[2]
PAGE = """# Results

<!-- generated: table 6 (test) -->
<!-- end of generated table 6 -->

DA is <!-- cite 6/DA/Mean/diff --><!-- /cite --> above DC (<!-- cite 6/DA/Mean/verdict --><!-- /cite -->), seed 1 of DC
scored <!-- cite 6/DC/Mean/seed1 --><!-- /cite -->; the table resolves <!-- cite 6/*/Mean/resolution --><!-- /cite -->.
Table 4: <!-- cite 4/VREMD/Mean/ours --><!-- /cite -->. Versions in backticks are not results: `torch 2.14.1`.
"""


def test_the_committed_page_is_what_the_committed_results_say():
    """What a fresh clone checks: docs/results.md, its figures and experiments/results/*/results.json agree."""
    assert results_page.main(["--check"]) == 0
    assert "<!-- generated: table 4" in (ROOT / "docs" / "results.md").read_text()


@pytest.fixture
def page(tmp_path) -> tuple[Path, Path]:
    """A page over table 6's results (written by the report, as ablate.py does) and a table 4 never run."""
    outcomes = table6_outcomes()
    rows = report_rows(["DC", "DA", "DCA", "DCA+BS"], outcomes, load_paper_numbers(PAPER), 6)
    write_report(tmp_path / "results" / "table6", 6, "Table 6", rows, outcomes, {"profile": "smoke"})
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(PAGE)
    return tmp_path / "docs" / "results.md", tmp_path / "results"


def args(page: Path, results: Path, *extra: str) -> list[str]:
    return ["--page", str(page), "--results", str(results), *extra]


def test_page_is_generated_from_the_results_then_checks(page, capsys):
    path, results = page
    assert results_page.main(args(path, results, "--check")) == 1  # empty blocks and cites: not current
    assert "differ from" in capsys.readouterr().err
    assert results_page.main(args(path, results)) == 0
    text = path.read_text()
    assert "| DA | 3 | +1.17 | [+0.45, +1.88] | resolved | +1.10 |" in text  # the paired Mean line
    assert "| DC | 38.0 | 39.0 | 38.5 |" in text  # Mean AP per seed
    assert "DA is <!-- cite 6/DA/Mean/diff -->+1.17<!-- /cite --> above DC (<!-- cite 6/DA/Mean/verdict -->resolved" in text
    assert "<!-- cite 6/DC/Mean/seed1 -->39.0<!-- /cite -->" in text
    assert "<!-- cite 4/VREMD/Mean/ours -->(not run)<!-- /cite -->" in text  # table 4 has no results
    assert (path.parent / "images" / "results_table6.png").stat().st_size > 10_000
    assert results_page.main(args(path, results, "--check")) == 0


def test_check_fails_on_an_edited_number_a_stale_figure_or_a_typed_number(page, capsys):
    path, results = page
    assert results_page.main(args(path, results)) == 0
    good = path.read_text()
    path.write_text(good.replace("| DA | 3 | +1.17 |", "| DA | 3 | +1.50 |"))  # a generated cell edited by hand
    assert results_page.main(args(path, results, "--check")) == 1
    path.write_text(good.replace("-->+1.17<!-- /cite -->", "-->+1.5<!-- /cite -->"))  # a cited value edited
    assert results_page.main(args(path, results, "--check")) == 1
    path.write_text(good)
    figure = path.parent / "images" / "results_table6.png"
    shutil.copy(figure, figure.with_suffix(".bak"))
    figure.write_bytes(figure.read_bytes()[:-10])
    assert results_page.main(args(path, results, "--check")) == 1
    assert "results_table6.png" in capsys.readouterr().err
    shutil.copy(figure.with_suffix(".bak"), figure)
    path.write_text(good + "\nDA gains 1.2 AP here.\n")  # typed, not cited
    assert results_page.main(args(path, results, "--check")) == 1
    err = capsys.readouterr().err
    assert "a number in the prose that no result backs (cite it): line " in err and ": DA gains 1.2 AP here." in err
    path.write_text(good)
    assert results_page.main(args(path, results, "--check")) == 0


def test_results_that_change_make_the_page_stale(page):
    path, results = page
    assert results_page.main(args(path, results)) == 0
    saved = results / "table6" / "results.json"
    saved.write_text(saved.read_text().replace('"ap/mean": 39.0', '"ap/mean": 39.4', 1))  # DC, seed 1
    assert results_page.main(args(path, results, "--check")) == 1


def test_bad_cites_name_the_cite_and_what_was_expected(page):
    _, results = page
    found = {6: load_results(results, 6)}
    with pytest.raises(PageError, match=r"cite '6/XX/Mean/diff': row 'XX': expected one of DC, DA, DCA, DCA\+BS"):
        cite_value(found, "6/XX/Mean/diff")
    with pytest.raises(PageError, match=r"cite '6/DA/Mean/median': stat 'median': expected one of ours"):
        cite_value(found, "6/DA/Mean/median")
    with pytest.raises(PageError, match=r"cite '6/DA/Neck/diff': column 'Neck'"):
        cite_value(found, "6/DA/Neck/diff")
    with pytest.raises(PageError, match="expected table/row/column/stat"):
        cite_value(found, "DA/Mean/diff")
    assert cite_value(found, "6/DC/Mean/diff") == "–"  # the reference has no difference with itself
    assert cite_value(found, "6/DCA+BS/Mean/seed2") == "–"  # failed at seed 2
    assert cite_value({4: None}, "4/VREMD/Mean/diff") == "(not run)"


def test_stray_numbers_ignore_generated_parts_cites_and_code():
    text = PAGE.replace("<!-- /cite --> above", "<!-- /cite --> (was 1.2) above")
    assert stray_numbers(PAGE) == []
    assert stray_numbers(text) == [f"line 6: {text.splitlines()[5]}"]
