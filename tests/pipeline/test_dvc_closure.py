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

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("vremd", "pipeline")  # the project's own packages: every .py under them is code
DVC_FILES = ("dvc.yaml", "experiments/dvc.yaml")


def _module_file(name: str) -> Path | None:
    """`vremd.data.crops` -> vremd/data/crops.py, a package -> its __init__.py; None outside the project."""
    if name.split(".")[0] not in CODE_ROOTS:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported(path: Path) -> set[str]:
    """Every project module the file imports, anywhere in it (function bodies too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from ..data import y`
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.update(_with_parents(base))
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept below only if a submodule
    return {n for n in names if _module_file(n) is not None}


def closure(script: Path) -> set[Path]:
    """The project files `python script` may execute (`script` and the result relative to the repo root)."""
    seen: set[Path] = set()
    todo = [ROOT / script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_module_file(name) for name in _imported(path))
    return {p.relative_to(ROOT) for p in seen}


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
