"""requirements.lock: the whole environment pinned with hashes, generated from pyproject.toml, installed by
`make venv` and part of its cache key."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
NOT_LOCKED = {"pip"}  # the installer itself, upgraded by `make venv` before it installs the lock


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, its sha256 hashes) of each pin in the lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if match := PIN.match(line):
            current = _norm(match.group(1))
            pins[current] = (match.group(2), [])
        elif "--hash=sha256:" in line and current is not None:
            pins[current][1].append(line.split("--hash=sha256:")[1].split()[0])
    return pins


def test_the_lock_pins_every_package_of_this_environment_at_its_version():
    pins = _pins()
    installed = {_norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed = {k: v for k, v in installed.items() if k not in NOT_LOCKED and k != "vremd"}
    missing = sorted(set(installed) - set(pins))
    assert not missing, f"installed but not in requirements.lock: {missing}: run `make lock`"
    differ = {k: (v, pins[k][0]) for k, v in installed.items() if pins[k][0] != v}
    assert not differ, f"installed version != locked version: {differ}: rebuild with `make venv`"


def test_every_pin_has_a_hash_and_every_dependency_of_pyproject_is_pinned():
    pins = _pins()
    assert len(pins) > 100 and all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in pins.values() for h in hashes)
    assert not [name for name, (_, hashes) in pins.items() if not hashes]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        assert _norm(req.name) in pins, f"pyproject.toml's {spec} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[_norm(req.name)][0]), f"the lock's {req.name} breaks {spec}"


def test_the_lock_names_its_command_and_no_machine_path():
    text = LOCK.read_text()
    assert "#    make lock" in text  # pip-compile's header, CUSTOM_COMPILE_COMMAND
    assert "file://" not in text and "--find-links" not in text and "--index-url" not in text


def test_make_venv_installs_the_lock_with_hashes_and_keys_its_cache_on_it():
    makefile = (REPO / "Makefile").read_text()
    key = next(line for line in makefile.splitlines() if line.startswith("VENV_KEY"))
    assert "pyproject.toml" in key and "requirements.lock" in key
    builder = (REPO / ".ci" / "shared_env.sh").read_text()  # `make venv` builds the shared environment with it
    assert "bash .ci/shared_env.sh" in makefile
    assert "--require-hashes" in builder and "-r requirements.lock" in builder
    assert re.search(r"^lock:", makefile, flags=re.M) and "--generate-hashes" in makefile
