"""`make venv` builds the shared environment once, under a lock, and publishes it complete (.ci/shared_env.sh).

Before: two `make venv` at once (two clones, or `make demo` and `make test` side by side on a fresh
machine) each saw no `.complete`, and the second `rm -rf`-ed the tree the first was installing into.
The Makefile and .ci/shared_env.sh run for real against a private VENV_HOME; only PYTHON_BASE is a
stand-in: a real `python -m venv` (without pip) whose pip takes two seconds, logs its calls, and
installs a module and a console script the way pip does (the shebang names the folder it installs into).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from fresh_clone import copy_checkout, make_venv_call, output, venv_key

NEEDED = ("Makefile", "pyproject.toml", "requirements.lock", ".ci")
FAKE_PIP = """#!/bin/bash
set -e
env=$(cd "$(dirname "$0")/.." && pwd)
echo "$env $*" >>"$(dirname "$env")/pip.log"
sleep 2
[ ! -e "$(dirname "$env")/fail" ]
if [[ " $* " == *" -r requirements.lock "* ]]; then
  echo "WHERE = __file__" >"$env/lib/python{v}/site-packages/fakepkg.py"
  printf '#!%s/bin/python\\nimport fakepkg; print(fakepkg.WHERE)\\n' "$env" >"$env/bin/hello"
  chmod +x "$env/bin/hello"
fi
"""


@pytest.fixture()
def python_base(tmp_path) -> str:
    """PYTHON_BASE=... for make: `-m venv ARGS DIR` makes a real virtualenv whose pip is FAKE_PIP."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{version}"
    script = tmp_path / "python-base"
    script.write_text(f'#!/bin/bash\nset -e\n"{base}" "$@" --without-pip\n'
                      f'cat >"${{@: -1}}/bin/pip" <<\'PIP\'\n{FAKE_PIP.format(v=version)}PIP\n'
                      'chmod +x "${@: -1}/bin/pip"\n')
    script.chmod(0o755)
    return f"PYTHON_BASE={script}"


def _start(clone: Path, home: Path, python_base: str) -> subprocess.Popen:
    return subprocess.Popen(**make_venv_call(clone, home, python_base), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _assert_published(home: Path, key: str) -> Path:
    """VENV_HOME/KEY is a link to one complete build folder whose scripts and packages work; that folder."""
    real = home / key
    assert real.is_symlink() and (real / ".complete").is_file()
    build = real.resolve()
    assert build.parent == home and build.name.startswith(f"{key}.build-")
    hello = subprocess.run([str(real / "bin" / "hello")], capture_output=True, text=True)
    assert hello.returncode == 0 and hello.stdout.startswith(str(build / "lib")), output(hello)
    assert sorted(p.name for p in home.iterdir()) == sorted([key, build.name, f"{key}.lock", "pip.log"])
    return build


def test_two_make_venv_at_once_build_once_and_both_succeed(tmp_path, python_base):
    clones = [copy_checkout(tmp_path / name, only=NEEDED) for name in ("a", "b")]
    home, key = tmp_path / "venv-home", venv_key(clones[0])
    first = _start(clones[0], home, python_base)
    deadline = time.monotonic() + 60
    while not (home / "pip.log").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first build is under way
    second = _start(clones[1], home, python_base)
    done = [_finish(first), _finish(second)]
    for proc in done:
        assert proc.returncode == 0, output(proc)
    calls = (home / "pip.log").read_text().splitlines()
    assert len(calls) == 2, calls  # one build (pip upgrade, then the lock's packages), not two
    assert "waiting for the build of" in done[1].stderr and f"in {clones[0]} since" in done[1].stderr
    build = _assert_published(home, key)
    assert [call.split()[0] for call in calls] == [str(build)] * 2, calls
    for clone in clones:  # each clone's layer runs on the published environment
        proc = subprocess.run([str(clone / ".venv/bin/python"), "-c", "import fakepkg"], capture_output=True)
        assert proc.returncode == 0, output(proc)
        assert (clone / ".venv/bin/hello").read_text().startswith(f"#!{clone}/.venv/bin/python")
    assert (build / "pyvenv.cfg").read_text().count(str(build)) == 1  # `command = ... -m venv ... BUILD`


def test_a_killed_build_is_cleaned_and_a_failed_one_leaves_nothing(tmp_path, python_base):
    clone = copy_checkout(tmp_path / "c", only=NEEDED)
    home, key = tmp_path / "venv-home", venv_key(clone)
    (home / f"{key}.build-1" / "bin").mkdir(parents=True)  # a build killed before it finished
    (home / key / "bin").mkdir(parents=True)  # an older Makefile's build in place, killed: no .complete
    (home / "fail").touch()
    failed = _finish(_start(clone, home, python_base))
    assert failed.returncode != 0, output(failed)
    assert sorted(p.name for p in home.iterdir()) == sorted([f"{key}.lock", "fail", "pip.log"])
    (home / "fail").unlink()
    made = _finish(_start(clone, home, python_base))
    assert made.returncode == 0 and "Creating the environment" in made.stdout, output(made)
    _assert_published(home, key)
    again = _finish(_start(clone, home, python_base))  # the environment exists: nothing built, nothing said
    assert again.returncode == 0 and again.stdout == again.stderr == "", output(again)
    assert len((home / "pip.log").read_text().splitlines()) == 3  # the failed upgrade, then one build
