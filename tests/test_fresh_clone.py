"""`copy_checkout` copies what a fresh clone of the work in progress holds, even after a `make demo`.

Before: it took every untracked, not-ignored file, so the `metrics/` a demo leaves came along and
tests/pipeline/test_dvc_deps.py's `(tmp_path / "metrics").mkdir()` raised FileExistsError in a
checkout where `make demo` had run. A scratch git repo (this checkout's stages and code, committed)
stands in for that checkout, so the real one is never written to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fresh_clone import checkout_files, copy_checkout, copy_files, stage_outputs

# what `make demo` (dvc repro of dvc.yaml) and the ablation tables leave in a checkout, ignored or not
DEMO_OUTPUTS = ("metrics/ap.json", "metrics/train_curve.csv", "metrics/dataset.json", "dvc.lock",
                "data/raw/synthetic/v.json", "models/final.pt", "reports/val/v.json", "weights/manifest.json",
                "detections/detected/val.json", "experiments/dvc.lock", "experiments/results/table4/rows.json")
NEW_SOURCES = ("vremd/not_yet_committed.py", "metrics_notes.md")  # a developer's work, not the pipeline's


def _git(repo: Path, *args: str) -> list[str]:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.split("\n") if line)


@pytest.fixture()
def demo_checkout(tmp_path) -> Path:
    """A committed checkout of this repo's stages and code, then a demo's outputs and new source files in it."""
    source = copy_checkout(tmp_path / "source", only=(".gitignore", "dvc.yaml", "experiments", "weights",
                                                      "detections", "vremd", "pipeline"))
    for name in DEMO_OUTPUTS + NEW_SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    return source


def test_the_demo_outputs_are_what_git_shows_as_new_work(demo_checkout):
    untracked = _git(demo_checkout, "ls-files", "--others", "--exclude-standard")
    # metrics are DVC's git-tracked kind (cache: false: `dvc exp run` commits them), so git cannot tell them
    # from new code: only dvc.yaml can
    assert {"metrics/ap.json", "dvc.lock", "experiments/dvc.lock"} | set(NEW_SOURCES) <= set(untracked)


def test_copy_holds_a_fresh_clone_plus_the_new_sources(demo_checkout, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(demo_checkout), str(clone)], check=True, capture_output=True)
    copied = copy_files(tmp_path / "copy", source=demo_checkout)
    files = sorted(str(p.relative_to(copied)) for p in copied.rglob("*") if p.is_file())
    assert files == sorted(_git(clone, "ls-files") + list(NEW_SOURCES))
    assert sorted(checkout_files(demo_checkout)) == files


def test_a_stand_in_project_is_made_after_a_demo(demo_checkout, tmp_path):
    project = copy_checkout(tmp_path / "project", source=demo_checkout)
    (project / "metrics").mkdir()  # tests/pipeline/test_dvc_deps.py's fixture: FileExistsError before
    assert not (project / "dvc.lock").exists() and not (project / "experiments" / "dvc.lock").exists()


def test_stage_outputs_resolve_each_stage_wdir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dvc.yaml").write_text(
        "stages:\n  a:\n    wdir: ..\n    cmd: x\n    outs: [{res/a: {cache: false}}]\n"
        "  b:\n    cmd: y\n    outs: [out]\n    metrics: [m.json]\n    plots: [{p.csv: {x: epoch}}]\n")
    assert stage_outputs(tmp_path, ["sub/dvc.yaml"]) == {"res/a", "sub/out", "sub/m.json", "sub/p.csv"}
