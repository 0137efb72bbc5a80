"""Make `.venv` this clone's own small virtualenv, layered on the shared environment.

    SHARED/bin/python .ci/clone_venv.py SHARED

SHARED (every package, built once per pyproject.toml and shared by all clones on the machine) is
never written to. `.venv` is a virtualenv without packages whose one `.pth` file puts this clone's
root on sys.path ahead of SHARED's site-packages: each clone imports its own `vremd` and
`pipeline`, no matter which clone ran `make venv` last, from any working directory (Ray workers
too, as they run `sys.executable`). A `vremd_checkout.pth` that an older Makefile wrote into SHARED
only appends another root after this one. Its console scripts (dvc, mlflow, pytest, ray, ...) are SHARED's with
the shebang pointing at `.venv/bin/python`, and every process of that python puts `.venv/bin` first
on PATH, so the bare `python` of a DVC stage command is this venv's even when `.venv/bin/dvc` runs
unactivated. Cheap (well under a second) and idempotent: an up-to-date `.venv` is left alone.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = "vremd-clone.json"
PTH = "vremd_clone.pth"
NOT_COPIED = ("python", "pip", "activate", "Activate")  # venv writes its own; pip would install per clone
# One physical line each: `site` runs .pth lines that start with `import`.
PATH_LINE = ("import os, sys; b = os.path.dirname(sys.executable); p = os.environ.get('PATH', ''); "
             "p.split(os.pathsep)[0] == b or os.environ.__setitem__('PATH', b + os.pathsep + p)")


def site_packages(prefix: Path) -> Path:
    """The purelib folder of the virtualenv at `prefix` (lib/python3.X/site-packages)."""
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


def pth_text(root: Path, shared: Path) -> str:
    """This clone's root, then SHARED's site-packages with its own .pth files, then the PATH line."""
    return f"{root}\nimport site; site.addsitedir({str(site_packages(shared))!r})\n{PATH_LINE}\n"


def shebang(python: Path) -> str:
    """A shebang running `python`; the /bin/sh form (as pip writes it) when the path is too long for the kernel."""
    if len(str(python)) < 120:
        return f"#!{python}\n"
    return f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n"


def copy_console_scripts(shared: Path, dest: Path) -> list[str]:
    """Copy SHARED's console scripts into `dest` (a venv's bin) with the shebang on dest's python."""
    copied = []
    for script in sorted((shared / "bin").iterdir()):
        if script.name.startswith(NOT_COPIED) or not script.is_file():
            continue
        head, sep, body = script.read_bytes().partition(b"\n")
        interpreter = head[2:].decode(errors="replace").strip() if head.startswith(b"#!") else ""
        if not interpreter or Path(interpreter).parent.resolve() != (shared / "bin").resolve():
            continue  # not a console script of SHARED's python
        target = dest / script.name
        target.write_bytes(shebang(dest / "python").encode() + body)
        target.chmod(0o755)
        copied.append(script.name)
    return copied


def build(shared: Path, env: Path) -> None:
    """(Re)create `env` as this clone's venv layered on `shared`; the former one only if this script made it."""
    if env.is_symlink():
        env.unlink()  # the former layout: .venv was a link to SHARED itself
    elif (env / STAMP).is_file():
        shutil.rmtree(env)
    elif env.exists():
        raise FileExistsError(f"{env} exists and was not made by `make venv`: move it away first")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    (site_packages(env) / PTH).write_text(pth_text(ROOT, shared))
    copy_console_scripts(shared, env / "bin")
    (env / STAMP).write_text(json.dumps({"shared": str(shared), "root": str(ROOT)}) + "\n")


def up_to_date(shared: Path, env: Path) -> bool:
    """True when `env` is already this clone's layer on `shared`."""
    try:
        stamp = json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (not env.is_symlink() and stamp == {"shared": str(shared), "root": str(ROOT)}
            and (env / "bin" / "python").exists())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    shared, env = Path(argv[0]).absolute(), ROOT / ".venv"
    if not (shared / "bin" / "python").exists():
        print(f"clone_venv: {shared}/bin/python not found: build the shared environment first (make venv)",
              file=sys.stderr)
        return 1
    if not up_to_date(shared, env):
        try:
            build(shared, env)
        except FileExistsError as err:
            print(f"clone_venv: {err}", file=sys.stderr)
            return 1
        print(f"{env}: this clone's environment, on {shared}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
