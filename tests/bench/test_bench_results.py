"""`make bench`'s plumbing: the result records, interleaved timing, the runner's verdict and the README table
generated from the committed benchmarks/results.json."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from benchmarks import report, run
from benchmarks.result import Result, read_meta, read_results, write_results
from benchmarks.timing import interleaved

REPO = Path(__file__).resolve().parents[2]
HELPERS = {"result", "timing", "report", "run", "gpu"}  # benchmarks/ modules that are not benchmarks


def _result(**changes) -> Result:
    base = dict(name="x.speed", benchmark="x", baseline="a peer", value=3.0, unit="x", command="python -m benchmarks.x")
    return Result(**(base | changes))


def test_pass_fail_is_computed_from_the_value_and_the_target():
    assert _result(target=2.0, op=">=").passed is True
    assert _result(target=4.0, op=">=").passed is False
    assert _result(unit="x cost", value=1.96, target=2.0, op="<=").passed is True
    assert _result(unit="x cost", value=2.54, target=2.0, op="<=").passed is False
    assert _result().passed is None  # no target: reported only
    assert _result(value=None, note="needs poseval", target=20.0, op=">=").passed is None


@pytest.mark.parametrize("changes, message", [
    ({"unit": "furlongs"}, "unit"),
    ({"target": 2.0}, "needs an op"),
    ({"op": ">="}, "needs an op"),
    ({"op": "==", "target": 1.0}, "op"),
    ({"value": float("nan")}, "not finite"),
    ({"value": None}, "needs a note"),
])
def test_a_malformed_result_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _result(**changes)


def test_results_round_trip_and_a_hand_edited_verdict_is_refused(tmp_path):
    rows = [_result(target=2.0, op=">="), _result(name="y", value=None, note="not here")]
    write_results(tmp_path / "r.json", rows, lock_sha256="ab" * 32)
    assert read_results(tmp_path / "r.json") == rows and read_meta(tmp_path / "r.json") == {"lock_sha256": "ab" * 32}
    data = json.loads((tmp_path / "r.json").read_text())
    data["results"][0]["passed"] = False
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="stored passed=False"):
        read_results(tmp_path / "r.json")


def test_interleaved_runs_one_of_each_per_round_and_times_only_the_timed_rounds():
    calls, now = [], [0.0]

    def variant(name: str, cost: float):
        def fn():
            calls.append(name)
            now[0] += cost
        return fn

    t = interleaved({"a": variant("a", 1.0), "b": variant("b", 3.0)}, repeats=3, warmup=1, clock=lambda: now[0])
    assert calls == ["a", "b"] * 4
    assert t["a"].runs == (1.0, 1.0, 1.0) and t["b"].median == 3.0 and t["b"].min == 3.0
    with pytest.raises(ValueError):
        interleaved({"a": variant("a", 1.0)}, repeats=0)


def test_the_runner_names_missed_and_crashed_benchmarks_and_fails():
    ok = _result(target=2.0, op=">=")
    missed = _result(name="crops.rate", unit="crops/s/core", value=1407.0, target=1500.0, op=">=")
    unmeasured = _result(name="eval_speed", value=None, note="needs poseval", target=20.0, op=">=")
    assert run.verdict([ok, unmeasured]) == (0, "bench: every target met (not measured: eval_speed)")
    rc, message = run.verdict([ok, missed, unmeasured])
    assert rc == 1 and "targets missed: crops.rate" in message and "crashed: none" in message


def test_a_crashing_benchmark_becomes_a_failed_row_and_the_others_still_run(tmp_path):
    crashed = run.run_one("no_such_benchmark", [], tmp_path)
    assert [r.name for r in crashed] == ["no_such_benchmark.crashed"] and crashed[0].value is None
    assert run.verdict(crashed)[0] == 1
    [evaluator] = run.run_one("eval_speed", ["--videos", "2", "--frames", "3", "--repeats", "1"], tmp_path)
    assert evaluator.name == "eval_speed" and evaluator.value is None and "poseval" in evaluator.note


def test_make_bench_runs_every_benchmark_and_each_writes_json(capsys):
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")} - HELPERS
    assert scripts == set(run.BENCHMARKS)
    for name in scripts:
        module = importlib.import_module(f"benchmarks.{name}")
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0 and "--json" in capsys.readouterr().out, f"benchmarks/{name}.py has no --json"


def test_the_readme_table_is_generated_from_the_committed_results():
    results = read_results(REPO / "benchmarks" / "results.json")
    names = [r.name for r in results]
    assert len(names) == len(set(names)) and {n.split(".")[0] for n in names} >= {"crops", "deformable", "predict"}
    readme = (REPO / "README.md").read_text()
    table = report.render_table(results, read_meta(REPO / "benchmarks" / "results.json"))
    assert report.replace_table(readme, table) == readme, \
        "README's benchmark table differs from benchmarks/results.json: run python -m benchmarks.report"


def test_the_table_shows_cost_multiples_as_lower_is_better_and_never_bolds_a_pass():
    table = report.render_table([_result(unit="x cost", value=1.96, target=2.0, op="<="),
                                 _result(name="r", unit="crops/s/core", value=1407.0, target=1500.0, op=">=")])
    rows = table.splitlines()[2:]
    assert "1.96x cost" in rows[0] and "<= 2.00x cost (lower is better)" in rows[0] and "| PASS |" in rows[0]
    assert "1,407 crops/s/core" in rows[1] and "**FAIL**" in rows[1]
    with pytest.raises(ValueError, match="marker"):
        report.replace_table("no markers here", table)
