"""Content hashes of files and of the project's code: what crop records and run identities are keyed on.

A product of our code (a crop shard, a trained run) is reused only while the code that made it is unchanged.
`import_closure` finds that code without a hand list that could drift: the project files a module runs,
by following every `import` in it (lazy imports inside functions and relative imports included) through
`vremd/` and `pipeline/`, packages' `__init__.py` included. The DVC closure test checks dvc.yaml's code deps
with the same walker, so a stage's deps and its products' keys name the same files.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any, Iterable

__all__ = ["CODE_ROOTS", "update_with_file", "file_sha256", "hash_files", "import_closure", "code_root",
           "closure_sha256"]

CODE_ROOTS = ("vremd", "pipeline")  # the project's own packages, beside each other: every .py under them is code
_BLOCK = 1 << 20


def update_with_file(h: Any, path: Path) -> None:
    """Feed the bytes of `path` to the hash object `h`, a block at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of one file's bytes."""
    h = hashlib.sha256()
    update_with_file(h, Path(path))
    return h.hexdigest()


def hash_files(h: Any, files: Iterable[Path], base: Path) -> None:
    """Feed each file's path (relative to `base` where it lies below it) and bytes to the hash object `h`."""
    for file in files:
        h.update(f"{file.relative_to(base).as_posix() if file.is_relative_to(base) else file}\0".encode())
        update_with_file(h, file)
        h.update(b"\0")


def code_root() -> Path:
    """The folder holding the `vremd` package this process imported (and `pipeline/` beside it, in a checkout)."""
    return Path(__file__).resolve().parents[1]  # this file is vremd/hashing.py


def _module_file(name: str, root: Path) -> Path | None:
    """`vremd.data.crops` -> <root>/vremd/data/crops.py, a package -> its __init__.py; None outside the project."""
    if name.split(".")[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported(path: Path, root: Path) -> set[Path]:
    """The project files that `path`'s imports (anywhere in it, function bodies too) name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).parent.parts)  # what relative imports start from
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
    return {f for f in (_module_file(n, root) for n in names) if f is not None}


def import_closure(path: Path, root: Path | None = None) -> set[Path]:
    """The project files that running `path` may execute: `path` and every project module it imports,
    followed through `<root>/vremd` and `<root>/pipeline` (root: `code_root()`). Absolute paths."""
    root = Path(root) if root is not None else code_root()
    seen: set[Path] = set()
    todo = [Path(path).resolve()]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo.extend(_imported(file, root))
    return seen


def closure_sha256(path: Path, root: Path | None = None) -> str:
    """sha256 over the files of `import_closure(path, root)` (paths relative to the root, and bytes), sorted."""
    root = Path(root) if root is not None else code_root()
    h = hashlib.sha256()
    hash_files(h, sorted(import_closure(path, root)), root)
    return h.hexdigest()
