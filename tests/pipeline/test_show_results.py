"""`python -m pipeline.show_results`: the AP table, the expected AP with its measured tolerance, `--record`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pipeline.show_results as show_results
from vremd.eval.expectation import load_expected

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A checkout's results (metrics/ap.json, pretrain/manifest.json) and a copy of the committed expectation."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "metrics" / "ap.json").write_text(json.dumps({"Head": 70.9, "Mean": 37.7, "per_joint": {}}))
    (tmp_path / "pretrain" / "manifest.json").write_text(json.dumps({"single_frame_val_ap": {"Mean": 28.5}}))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(show_results.EXPECTED, tmp_path / "expected.json")
    return tmp_path


def test_the_committed_expectation_has_the_measured_tolerance():
    profile, _, expected = load_expected(show_results.EXPECTED)
    assert profile == "demo" and set(expected) == set(show_results.SOURCES)
    assert {e.tolerance for e in expected.values()} == {2.2}  # 1.96 x sqrt(2) x 0.78, docs/determinism.md
    assert "2.2 AP" in (ROOT / "docs" / "determinism.md").read_text()


def test_the_committed_expectation_is_of_the_committed_demo_settings(run, capsys):
    """`make demo` on a fresh clone compares: the expectation was recorded from the demo profile as committed."""
    _, _, expected = load_expected(show_results.EXPECTED)
    mean, single = expected["Mean AP"].value, expected["single-frame pretrained Mean AP"].value
    (run / "metrics" / "ap.json").write_text(json.dumps({"Head": 70.9, "Mean": mean - 2.1, "per_joint": {}}))
    (run / "pretrain" / "manifest.json").write_text(json.dumps({"single_frame_val_ap": {"Mean": single + 2.1}}))
    assert show_results.main(["--expected", str(run / "expected.json")]) == 0
    out = capsys.readouterr().out
    assert "| 70.9 |" in out and "not compared" not in out
    assert f"Mean AP {mean - 2.1:.1f}: within the expected {mean:.1f} ± 2.2" in out
    assert f"single-frame pretrained Mean AP {single + 2.1:.1f}: within the expected {single:.1f} ± 2.2" in out
    (run / "metrics" / "ap.json").write_text(json.dumps({"Mean": mean - 2.3}))
    assert show_results.main(["--expected", str(run / "expected.json")]) == 1  # make demo fails outside it


def test_other_settings_are_shown_not_compared(run, capsys):
    (run / "params.yaml").write_text((run / "params.yaml").read_text().replace("epochs: 6,", "epochs: 7,", 1))
    assert show_results.main(["--expected", str(run / "expected.json")]) == 0
    out = capsys.readouterr().out
    _, _, expected = load_expected(show_results.EXPECTED)
    listed = "; ".join(f"{e.name} {e.value:.1f} ± 2.2" for e in expected.values())
    assert "| 70.9 |" in out and f"Expected (expected.json): {listed}" in out
    assert "not compared" in out  # an edited demo profile: the expectation holds for the committed settings only


def test_record_then_within_and_outside_the_tolerance(run, capsys):
    args = ["--expected", str(run / "expected.json")]
    assert show_results.main([*args, "--record"]) == 0
    saved = json.loads((run / "expected.json").read_text())
    assert saved["results"]["Mean AP"] == {"expected": 37.7, "tolerance": 2.2, "how": "docs/determinism.md"}
    assert saved["results"]["single-frame pretrained Mean AP"]["expected"] == 28.5
    assert "Mean AP 37.7: within the expected 37.7 ± 2.2" in capsys.readouterr().out
    (run / "metrics" / "ap.json").write_text(json.dumps({"Mean": 39.8}))  # 2.1 above: within
    assert show_results.main(args) == 0
    (run / "metrics" / "ap.json").write_text(json.dumps({"Mean": 35.4}))  # 2.3 below: outside
    assert show_results.main(args) == 1
    assert "Mean AP 35.4: OUTSIDE the expected 37.7 ± 2.2" in capsys.readouterr().err
    (run / "params.yaml").write_text((run / "params.yaml").read_text().replace("epochs: 6,", "epochs: 7,", 1))
    assert show_results.main(args) == 0  # an edited demo profile is not compared
    assert "not compared" in capsys.readouterr().out


def test_a_bad_expectation_names_the_file(run, capsys):
    (run / "expected.json").write_text(json.dumps({"profile": "demo", "results": {}}))
    assert show_results.main(["--expected", str(run / "expected.json")]) == 1
    assert "expected.json: expected profile, settings_digest and results" in capsys.readouterr().err
