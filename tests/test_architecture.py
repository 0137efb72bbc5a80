"""Imports point one way: pipeline -> vremd.ablation -> vremd.train -> vremd.{data, model, eval} -> vremd.config
-> vremd.errors, and vremd.frames and vremd.hashing (leaves); vremd.pretrain and vremd.tracking_server sit beside
vremd.train."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> packages it must never import
UPPER = ("vremd.train", "vremd.ablation", "vremd.pretrain", "vremd.tracking_server", "vremd.predict", "pipeline")
FORBIDDEN = {
    "vremd.errors": ("vremd", "pipeline"),  # a leaf: every package may import InputError, it imports nothing of ours
    "vremd.frames": ("vremd", "pipeline"),  # the frame axis: a leaf that data, model and predict all read
    "vremd.hashing": ("vremd", "pipeline"),  # content hashes of files and code: crop records and run identities
    "vremd.config": ("vremd.data", "vremd.model", "vremd.eval", *UPPER),
    "vremd.data": ("vremd.model", "vremd.eval", *UPPER, "ray", "mlflow"),
    "vremd.model": ("vremd.data", "vremd.eval", *UPPER, "ray", "mlflow"),
    "vremd.eval": ("vremd.model", *UPPER, "torch", "ray", "mlflow"),
    # one training run: sweeps live in vremd.ablation, the pretrain stage's data in vremd.pretrain, the team's
    # server in vremd.tracking_server (so the train stage's code dep is the whole vremd/train folder)
    "vremd.train": ("vremd.ablation", "vremd.pretrain", "vremd.tracking_server", "vremd.predict", "pipeline"),
    "vremd.ablation": ("vremd.pretrain", "vremd.tracking_server", "vremd.predict", "pipeline"),
    "vremd.pretrain": ("vremd.eval", "vremd.train", "vremd.ablation", "vremd.tracking_server", "vremd.predict",
                       "pipeline", "ray", "mlflow"),  # the stills and the export; pipeline/pretrain.py trains
    "vremd.tracking_server": ("vremd.data", "vremd.model", "vremd.eval", "vremd.ablation", "vremd.pretrain",
                              "vremd.predict", "pipeline", "ray", "torch"),  # MLflow and PostgreSQL, Tracker
    "vremd.predict": ("vremd.train", "vremd.ablation", "vremd.pretrain", "vremd.tracking_server", "pipeline", "ray"),
    "vremd.detect": ("vremd.data", "vremd.model", "vremd.eval", *UPPER, "ray", "mlflow"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(path: Path) -> str:
    """The package a relative import in `path` starts from: the module's own for __init__.py, else its parent's."""
    module = _module_name(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules `path` imports; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom):  # `from .x import y`, `from .. import x`
            parts = _package(path).split(".")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            assert base, f"{path.relative_to(ROOT)}:{node.lineno}: relative import beyond the top-level package"
            if node.module:
                found.add(f"{base}.{node.module}")
            else:  # each imported name may be a submodule
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _sources(*folders: str):
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_relative_imports_resolve_to_absolute_names(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # _module_name reads it
    package = tmp_path / "vremd" / "predict"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .cli import main\nfrom . import run\n")
    (package / "run.py").write_text("from .runner import load_model\nfrom ..train import loop\nfrom .. import eval\n")
    assert _imports(package / "__init__.py") == {"vremd.predict.cli", "vremd.predict.run"}
    assert _imports(package / "run.py") == {"vremd.predict.runner", "vremd.train", "vremd.eval"}


@pytest.mark.parametrize("path", _sources("vremd"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_wrong_way_imports(path):
    module = _module_name(path)
    rules = [bad for pkg, bad in FORBIDDEN.items() if module == pkg or module.startswith(pkg + ".")]
    wrong = sorted(
        name for name in _imports(path) for bad in (b for r in rules for b in r)
        if name == bad or name.startswith(bad + ".")
    )
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: imports must point one way (STYLE.md §1)"


@pytest.mark.parametrize("path", _sources("vremd", "pipeline"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_time_work(path):
    """Module bodies only define names: no top-level calls other than assignments of constants."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: top-level expression runs at import")


def test_run_folder_rules_import_without_ray():
    """`vremd.train.runs` and the ablation modules that only read run folders load without Ray (or MLflow)."""
    modules = ("vremd.train.runs", "vremd.ablation.grid", "vremd.ablation.reuse")
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(n for n in ('ray', 'mlflow') if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{', '.join(modules)} import {out.stdout.strip()}: keep Ray in ray_train.py"
