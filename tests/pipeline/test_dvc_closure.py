"""dvc.yaml's code deps are exactly what each stage imports, so they cannot drift.

A stage's code is the import closure of its script (the `python pipeline/X.py` in `cmd`): every `import` and
`from ... import` anywhere in a file (lazy imports inside functions included, relative imports resolved),
followed through vremd/ and pipeline/, packages' `__init__.py` included. dvc.yaml must list every module of
it (a file, or a folder holding it), and no code dep the stage does not use: a folder dep counts as used only
when every non-empty module in it is in the closure, else editing an unused file reruns the stage.
A folder the stage imports entirely is listed as the folder, so the lists stay short. Before: `download`
missed the synthetic renderer, `evaluate` the inference module, `train` reran on an edit of any file in
vremd/train. Data deps (data/raw, weights, detections, experiments/*.yaml) are not judged here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from vremd.hashing import CODE_ROOTS, import_closure

ROOT = Path(__file__).resolve().parents[2]
DVC_FILES = ("dvc.yaml", "experiments/dvc.yaml")


def closure(script: Path) -> set[Path]:
    """The project files `python script` may execute (`script` and the result relative to the repo root): the
    library's walker (`vremd.hashing.import_closure`), which also keys crop records on the code they ran."""
    return {p.relative_to(ROOT) for p in import_closure(ROOT / script, ROOT)}


def _code_files(folder: Path) -> set[Path]:
    """Non-empty .py files under a folder (an empty __init__.py runs nothing)."""
    return {p.relative_to(ROOT) for p in (ROOT / folder).rglob("*.py") if p.read_text().strip()}


def _stages():
    for dvc_file in DVC_FILES:
        for name, stage in yaml.safe_load((ROOT / dvc_file).read_text())["stages"].items():
            yield pytest.param(dvc_file, name, stage, id=f"{dvc_file}:{name}")


def _script(stage: dict) -> Path:
    cmd = shlex.split(stage["cmd"])
    scripts = [word for word in cmd if re.fullmatch(r"pipeline/\w+\.py", word)]
    assert cmd[0] == "python" and len(scripts) == 1, f"expected `python pipeline/X.py ...`, got {stage['cmd']!r}"
    return Path(scripts[0])


def _code_deps(stage: dict) -> list[Path]:
    deps = [Path(next(iter(d)) if isinstance(d, dict) else d) for d in stage.get("deps", [])]
    return [d for d in deps if d.parts[0] in CODE_ROOTS]


def test_closure_follows_lazy_relative_and_package_imports():
    """The walker itself, on the real code: train's lazy MLflow-model import, predict's relative imports."""
    train = closure(Path("pipeline/train.py"))
    assert Path("vremd/predict/mlflow_model.py") in train  # imported inside a function
    assert Path("vremd/train/__init__.py") in train and Path("vremd/__init__.py") in train
    assert Path("pipeline/cli_config.py") in train
    assert Path("vremd/ablation/grid.py") not in train and Path("vremd/pretrain.py") not in train
    assert Path("vremd/predict/tracker.py") in closure(Path("pipeline/evaluate.py"))  # only `from .tracker import`


@pytest.mark.parametrize("dvc_file, name, stage", list(_stages()))
def test_stage_code_deps_are_its_import_closure(dvc_file, name, stage):
    script = _script(stage)
    used = closure(script)
    deps = _code_deps(stage)
    problems = []
    for dep in deps:
        if not (ROOT / dep).exists():
            problems.append(f"lists {dep}, which does not exist: remove it from deps")
        elif (ROOT / dep).is_dir():
            unused = sorted(_code_files(dep) - used)
            if unused:
                problems.append(f"lists folder {dep}/, but does not import {', '.join(map(str, unused))}: "
                                f"list the used files of {dep}/ instead (an edit of an unused one reruns the stage)")
        elif dep.suffix == ".py" and dep not in used:
            problems.append(f"lists {dep}, which it does not import: remove it from deps")
    covered = {p for dep in deps for p in ([dep] if dep.suffix == ".py" else _code_files(dep) if
                                           (ROOT / dep).is_dir() else [])}
    missing = sorted(p for p in used if p not in covered and (ROOT / p).read_text().strip())
    problems.extend(f"imports {p} (via {script}), not in deps: add it (or its folder) to deps" for p in missing)
    for folder in _whole_folders(used):  # short lists: a folder the stage runs entirely is one dep
        listed = sorted(dep for dep in deps if folder in dep.parents)
        if listed and folder not in deps:
            problems.append(f"imports every module of {folder}/: list the folder instead of "
                            f"{', '.join(map(str, listed))}")
    assert not problems, f"{dvc_file} stage `{name}`:\n  " + "\n  ".join(problems)


def _whole_folders(used: set[Path]) -> list[Path]:
    """The outermost folders below vremd/ and pipeline/ whose every non-empty module is in `used`."""
    folders = sorted({d for p in used for d in p.parents if len(d.parts) >= 2 and d.parts[0] in CODE_ROOTS},
                     key=lambda d: len(d.parts))
    whole: list[Path] = []
    for folder in folders:
        files = _code_files(folder)
        if files and files <= used and not any(w in folder.parents for w in whole):
            whole.append(folder)
    return whole


def test_train_and_evaluate_depend_on_whole_packages():
    """vremd/train is one training and nothing else (sweeps, pretraining stills and the team's MLflow server live
    beside it), and vremd/model is the network (the loss lives with training): the train stage runs all of both,
    evaluate all of the network, so each is one dep."""
    assert {Path("vremd/train"), Path("vremd/model")} <= set(_whole_folders(closure(Path("pipeline/train.py"))))
    assert Path("vremd/model") in _whole_folders(closure(Path("pipeline/evaluate.py")))
