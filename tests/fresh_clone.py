"""A fresh clone of this checkout, set up as the README says, and commands run in a fresh shell.

`copy_checkout` copies what a fresh clone of the work in progress would hold into a new git
repository: the tracked files, plus the untracked, not-ignored ones that no DVC stage writes (a new,
not yet committed source file comes along; the `metrics/` and `dvc.lock` of a `make demo` do not).
`make_venv` runs the clone's own `make venv` against a private VENV_HOME whose one entry links to
the environment this suite runs in, so it builds the clone's `.venv` layer without installing
anything and without touching the shared environment.
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


def _git_files(source: Path, *flags: str) -> list[str]:
    """The paths `git ls-files FLAGS` lists in `source` (relative, files that exist)."""
    out = subprocess.run(["git", "ls-files", *flags], cwd=source, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return [f for f in out if f and (source / f).is_file()]


def stage_outputs(source: Path, dvc_files: list[str]) -> set[str]:
    """The outs, metrics and plots of every stage of `dvc_files`, as paths relative to `source`."""
    written = set()
    for dvc_file in dvc_files:
        stages = (yaml.safe_load((source / dvc_file).read_text()) or {}).get("stages", {})
        for name, stage in stages.items():
            wdir = Path(dvc_file).parent / stage.get("wdir", ".")
            for entry in (e for key in ("outs", "metrics", "plots") for e in stage.get(key, [])):
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert "${" not in path, f"{dvc_file} stage {name}: cannot tell which files {path!r} names"
                written.add(os.path.normpath(wdir / path))
    return written


def checkout_files(source: Path = REPO) -> list[str]:
    """What a fresh clone of the work in `source` holds: its tracked files, then its untracked, not-ignored ones
    except what the pipeline writes (any stage's outs, metrics and plots, and dvc.lock files)."""
    tracked = _git_files(source, "--cached")
    untracked = _git_files(source, "--others", "--exclude-standard")
    written = stage_outputs(source, [f for f in tracked + untracked if Path(f).name == "dvc.yaml"])

    def by_pipeline(name: str) -> bool:
        return Path(name).name == "dvc.lock" or any(name == out or name.startswith(f"{out}/") for out in written)

    return tracked + [name for name in untracked if not by_pipeline(name)]


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


def copy_files(dest: Path, only: tuple[str, ...] = (), source: Path = REPO) -> Path:
    """Copy `checkout_files(source)` (those under the top-level names in `only`, if given) into `dest`; `dest`."""
    for name in checkout_files(source):
        if only and name.split("/")[0] not in only:
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, dest / name)
    return dest


def copy_checkout(dest: Path, only: tuple[str, ...] = (), params: dict | None = None,
                  source: Path = REPO) -> Path:
    """`copy_files` of this checkout (or of `source`) into a new git repo at `dest`, committed; `dest`.

    DVC gets a config without the remote, and no dvc.lock: the clone starts as a user's would.
    `params`, if given, replaces params.yaml.
    """
    copy_files(dest, only, source)
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


def venv_key(clone: Path) -> str:
    """The Makefile's VENV_KEY of `clone`: `cat pyproject.toml requirements.lock | sha256sum`, 16 hex digits."""
    files = (clone / "pyproject.toml").read_bytes() + (clone / "requirements.lock").read_bytes()
    return hashlib.sha256(files).hexdigest()[:16]


def make_venv(clone: Path, venv_home: Path) -> subprocess.CompletedProcess:
    """`make venv VENV_HOME=venv_home` in `clone`, VENV_HOME holding a link to `shared_env()` under the clone's key."""
    key = venv_key(clone)
    venv_home.mkdir(parents=True, exist_ok=True)
    if not (venv_home / key).exists():
        (venv_home / key).symlink_to(shared_env())
    return subprocess.run(**make_venv_call(clone, venv_home), capture_output=True, text=True, timeout=120)


def make_venv_call(clone: Path, venv_home: Path, *variables: str) -> dict:
    """subprocess's arguments for `make venv VENV_HOME=venv_home [VARIABLE=VALUE ...]` in `clone`, bare environment."""
    return {"args": ["make", "-s", "venv", f"VENV_HOME={venv_home}", *variables], "cwd": clone,
            "env": {"HOME": os.environ["HOME"], "PATH": SYSTEM_PATH}}


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
