"""The README's DVC commands, run for real as written, in a fresh shell, on a trained smoke pipeline.

A fresh clone whose `demo` profile is smoke-sized gets its `make venv`, then everything runs in a
new shell after `source .venv/bin/activate` only: `dvc repro`, the README's result commands, and
its "Experiments with DVC" block in order (record the baseline, `dvc exp run -S` a variant,
`dvc exp show`, `dvc exp apply`, `dvc exp remove`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml
from fresh_clone import copy_checkout, fresh_shell, make_venv, output, smoke_demo_params
from readme_commands import section_commands

from vremd.eval.tables import COLUMNS

pytestmark = pytest.mark.slow

EXPERIMENTS = "Experiments with DVC"


def _shell(clone: Path, command: str) -> str:
    """Run `command` in a fresh activated shell; it must succeed without a warning. Its stdout + stderr."""
    proc = fresh_shell(clone, command, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{command}`\n{output(proc)}"
    warned = [line for line in text.splitlines() if line.startswith(("WARNING:", "ERROR:", "Traceback"))]
    assert not warned, f"`{command}` warns: {warned}\n{output(proc)}"  # DVC's own format, e.g. "No file hash info"
    return text


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _exp_table(clone: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """`dvc exp show --csv`: the column names in order, and each row by experiment name (or rev)."""
    rows = list(csv.DictReader(io.StringIO(_shell(clone, "dvc exp show --csv"))))
    return list(rows[0]), {row["Experiment"] or row["rev"]: row for row in rows}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp")
    clone = copy_checkout(root / "clone", params=smoke_demo_params())
    made = make_venv(clone, root / "venv-home")
    assert made.returncode == 0, output(made)
    ran = _shell(clone, "dvc repro")
    assert "Running stage 'evaluate'" in ran
    return clone


def test_readme_result_commands_show_the_ap(clone):
    ap = json.loads((clone / "metrics/ap.json").read_text())
    table = _shell(clone, "python -m pipeline.show_results")
    assert f"| {ap['Mean']:.1f} |" in table and "| Head | Shoulder |" in table
    metrics = _shell(clone, "dvc metrics show")
    assert "metrics/ap.json" in metrics and "Mean" in metrics
    assert "visible" not in metrics and "dataset.json" not in metrics  # statistics are no DVC metric
    stats = _shell(clone, "dvc metrics show metrics/dataset.json")
    assert "metrics/dataset.json" in stats and "visible" in stats  # ... and stay available
    assert "train_curve.csv" in _shell(clone, "dvc plots show --json")


def test_readme_experiment_workflow(clone):
    commands = [c.argv for c in section_commands(EXPERIMENTS)]
    names = [argv[argv.index("-n") + 1] for argv in commands if argv[:3] == ("dvc", "exp", "run")]
    assert [argv[:3] for argv in commands] == [("dvc", "exp", "run")] * 2 + [
        ("dvc", "exp", "show"), ("dvc", "exp", "apply"), ("dvc", "exp", "remove")]
    baseline, variant = names
    (record, run, show, apply, remove) = commands
    key, value = run[run.index("-S") + 1].split("=", 1)
    before = {"ap": json.loads((clone / "metrics/ap.json").read_text()), "model": _digest(clone / "models/final.pt")}

    ran = _shell(clone, " ".join(record))  # records the demo as it is: nothing re-runs
    assert "Running stage" not in ran, ran
    ran = _shell(clone, " ".join(run))  # the variant trains and evaluates; the data stages are reused
    assert "Running stage 'train'" in ran and "Running stage 'evaluate'" in ran, ran
    assert not [s for s in ("download", "crops", "preprocess") if f"Running stage '{s}'" in ran], ran
    after = {"ap": json.loads((clone / "metrics/ap.json").read_text()), "model": _digest(clone / "models/final.pt")}
    assert after["model"] != before["model"]

    assert "visible" not in _shell(clone, " ".join(show))  # as written; the checks below read its --csv form
    columns, rows = _exp_table(clone)
    metrics = [c for c in columns if c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")]
    assert metrics[:len(COLUMNS)] == list(COLUMNS), columns  # Head ... Ankle, Mean first
    assert not [c for c in columns if "visible" in c or c.startswith(("train.", "val."))], columns
    for name, state in ((baseline, before), (variant, after)):
        assert float(rows[name]["Mean"]) == pytest.approx(state["ap"]["Mean"], abs=1e-9), rows[name]
    assert rows[baseline][key] != rows[variant][key] and rows[variant][key].lower() == value.lower()

    target = apply[-1]
    _shell(clone, " ".join(apply))  # the workspace takes the experiment's params, metrics and model
    expected = before if target == baseline else after
    assert json.loads((clone / "metrics/ap.json").read_text()) == expected["ap"]
    assert _digest(clone / "models/final.pt") == expected["model"]
    node = yaml.safe_load((clone / "params.yaml").read_text())
    for part in key.split("."):
        node = node[part]
    assert str(node).lower() == rows[target][key].lower()

    workspace = (clone / "params.yaml").read_text(), (clone / "metrics/ap.json").read_text()
    _shell(clone, " ".join(remove))  # drops the experiment, not the workspace
    listed = _shell(clone, "dvc exp list --name-only").split()
    assert remove[-1] not in listed and (set(names) - {remove[-1]}) <= set(listed), listed
    assert ((clone / "params.yaml").read_text(), (clone / "metrics/ap.json").read_text()) == workspace
