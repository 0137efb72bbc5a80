"""One base error: every "your input is wrong" class is an `InputError`, and a CLI catches `(InputError, OSError)`
(plus the runtime errors it names), so a bug's ValueError, TypeError or KeyError reaches the user as a traceback."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pipeline.download
import vremd.eval.__main__
from vremd.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CLIS = sorted([*(ROOT / "pipeline").glob("*.py"), ROOT / "vremd" / "predict" / "cli.py",
               ROOT / "vremd" / "eval" / "__main__.py"])
# builtin types that a bug raises: a handler that lists one (and does not re-raise) turns a bug into a one-line message
CATCH_ALLS = {"ValueError", "TypeError", "KeyError", "IndexError", "AttributeError", "RuntimeError", "Exception",
              "BaseException", "ArithmeticError", "LookupError"}
# handlers that swallow on purpose, each with its reason
DELIBERATE = {
    ("pipeline/train.py", "_log_model"): "the MLflow model is a copy of final.pt, already written: a failure warns",
}
# ValueError subclasses that another change replaces (one CheckpointError in vremd/model/checkpoint.py)
NOT_YET = {"CheckpointError", "CheckpointReadError"}


def _handlers(path: Path):
    """(enclosing function name, handler) of every `except` in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.ExceptHandler):
                    yield func.name, node


def _caught_names(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}  # a bare `except:`
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "?") for t in types}


@pytest.mark.parametrize("path", CLIS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_cli_swallows_a_programming_error(path):
    where = str(path.relative_to(ROOT))
    for func, handler in _handlers(path):
        reraises = any(isinstance(n, ast.Raise) for n in ast.walk(handler))
        broad = _caught_names(handler) & CATCH_ALLS
        if broad and not reraises and (where, func) not in DELIBERATE:
            pytest.fail(f"{where}:{handler.lineno} ({func}) catches {sorted(broad)}: a bug's traceback would become a "
                        "one-line message; catch (InputError, OSError) and the specific errors the work raises")


def test_the_scan_sees_a_catch_all():
    handler = ast.parse("try:\n    pass\nexcept (InputError, ValueError) as exc:\n    print(exc)\n").body[0].handlers[0]
    assert _caught_names(handler) & CATCH_ALLS == {"ValueError"}


def test_every_input_error_class_derives_from_input_error():
    """No error class of ours subclasses ValueError directly: what is the user's fault is an InputError."""
    direct = []
    for path in sorted((ROOT / "vremd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in NOT_YET | {"InputError"}:
                if {getattr(b, "id", None) for b in node.bases} & {"ValueError"}:
                    direct.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert direct == []


def test_input_errors_are_one_line(write_params, tmp_path, capsys):
    """Real CLIs with bad input: one line naming the key or file (a bug is not caught: the scan above)."""
    params = write_params(tmp_path, {"data": {"synthetic": {"min_frames": 0}}}, profile="t")
    rc = pipeline.download.main(["--params", str(params), "--out", str(tmp_path / "raw"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("download: error: ") and err.count("\n") == 1
    assert "data.synthetic.min_frames: expected an integer in [1, 9999], found 0" in err
    assert not (tmp_path / "raw" / "synthetic").exists()
    # the eval CLI: a GT folder that does not exist is the user's input
    rc = vremd.eval.__main__.main([str(tmp_path / "no-gt"), str(tmp_path / "no-pred"), "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "no-gt") in err and err.count("\n") == 1


def test_input_error_is_a_value_error():
    """Callers that caught ValueError for bad input keep working."""
    assert issubclass(InputError, ValueError)
