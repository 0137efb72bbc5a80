"""A fresh clone of this checkout, set up as the README says, and commands run in a fresh shell.

`copy_checkout` copies the tracked files plus the untracked, not-ignored ones (the work in
progress) into a new git repository. `make_venv` runs the clone's own `make venv` against a
private VENV_HOME whose one entry links to the environment this suite runs in, so it builds the
clone's `.venv` layer without installing anything and without touching the shared environment.
`fresh_shell` runs a command line the way a user's new terminal would after
`source .venv/bin/activate`: no PYTHONPATH, no inherited PATH, only the telemetry switches CI sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vremd.config import config_to_dict, smoke_config

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
         "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def checkout_files() -> list[str]:
    """Tracked files plus untracked, not-ignored ones, as git lists them."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def smoke_demo_params() -> dict:
    """params.yaml whose `demo` profile is the smoke configuration, one epoch, training in-process, on a frozen
    backbone the `pretrain` stage makes and the `weights` stage installs, as the demo's."""
    cfg = smoke_config()
    model = dataclasses.replace(cfg.model, freeze_backbone=True, pretrained="weights/vitpose-demo.pth",
                                pretrained_url="pretrain")
    cfg = dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, epochs=1, num_workers=0))
    demo = config_to_dict(cfg)
    demo.pop("profile")
    demo["tracking"]["run_name"] = "demo"
    return {"profile": "demo", "profiles": {"demo": demo}}


def copy_checkout(dest: Path, only: tuple[str, ...] = (), params: dict | None = None) -> Path:
    """Copy this checkout (or the files under the top-level names in `only`) into a new git repo at `dest`.

    DVC gets a config without the remote, and no dvc.lock: the clone starts as a user's would.
    `params`, if given, replaces params.yaml.
    """
    for name in checkout_files():
        if only and name.split("/")[0] not in only:
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    if (dest / ".dvc").is_dir():
        (dest / ".dvc" / "config").write_text("[core]\n    no_scm = false\n")
    (dest / "dvc.lock").unlink(missing_ok=True)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"]):
        subprocess.run(args, cwd=dest, check=True, capture_output=True)
    return dest


def shared_env() -> Path:
    """The virtualenv holding this suite's packages (the one `make venv` builds under VENV_HOME)."""
    env = Path(yaml.__file__).resolve().parents[4]  # <env>/lib/python3.X/site-packages/yaml/__init__.py
    if not (env / "pyvenv.cfg").is_file() or not (env / ".complete").is_file():
        pytest.skip(f"the packages are not in an environment `make venv` built ({env}): no clone to layer on it")
    return env


def make_venv(clone: Path, venv_home: Path) -> subprocess.CompletedProcess:
    """`make venv VENV_HOME=venv_home` in `clone`, VENV_HOME holding a link to `shared_env()` under the clone's key."""
    # the Makefile's VENV_KEY: `cat pyproject.toml requirements.lock | sha256sum`
    files = (clone / "pyproject.toml").read_bytes() + (clone / "requirements.lock").read_bytes()
    key = hashlib.sha256(files).hexdigest()[:16]
    venv_home.mkdir(parents=True, exist_ok=True)
    if not (venv_home / key).exists():
        (venv_home / key).symlink_to(shared_env())
    return subprocess.run(["make", "-s", "venv", f"VENV_HOME={venv_home}"], cwd=clone, capture_output=True,
                          text=True, timeout=120, env={"HOME": os.environ["HOME"], "PATH": SYSTEM_PATH})


def fresh_shell(clone: Path, command: str, timeout: float = 600, activate: bool = True,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `command` with bash in a new environment, after `source .venv/bin/activate` unless told not to."""
    env = {"HOME": os.environ["HOME"], "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **QUIET}
    line = f"source {shlex.quote(str(clone / '.venv/bin/activate'))} && {command}" if activate else command
    return subprocess.run(["bash", "-c", line], cwd=cwd or clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


def output(proc: subprocess.CompletedProcess) -> str:
    """The end of a finished command's stdout and stderr, for an assertion message."""
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
