"""Suite-wide settings (no telemetry, no hub access, a quiet CPU) and the fixtures every test folder shares.

- `smoke_data`: the smoke config's synthetic videos -> crops -> index, built once per session; read-only.
  `build_smoke_data(root, cfg)` builds the same chain for another config.
- `local_ray`: this process's own local Ray (2 CPUs, no dashboard), kept up for the session;
  `no_local_ray` stops it for a test whose code starts Ray in this process itself.
- `free_port`: a function returning a free TCP port on 127.0.0.1.
- `write_params`: writes a params.yaml with one profile: a `Config` or a profile tree, plus overrides.
- `tmpfs`, `small_disk`: a tiny tmpfs of the test's own (full disks and read-only folders; needs root to mount).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@dataclass(frozen=True)
class SmokeData:
    """`root` holds raw/<source>/, crops/ and index/ of `cfg` (smoke_config()); tests read it, never write it."""

    cfg: Any  # vremd.config.Config
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def dataset_dir(self) -> Path:
        return self.raw / self.cfg.data.source

    @property
    def gt_dir(self) -> Path:
        return self.dataset_dir / "annotations" / "val"

    @property
    def crops(self) -> Path:
        return self.root / "crops"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def run_paths(self):
        """The `RunPaths` a training on this data gets (no run folder, no tracking)."""
        from vremd.train.loop import RunPaths

        return RunPaths(index_dir=str(self.index), gt_dir=str(self.gt_dir), run_dir="")

    def link_into(self, dest: Path) -> None:
        """Symlink raw/, crops/ and index/ into `dest`, for a stage run from `dest` with relative paths."""
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("raw", "crops", "index"):
            (dest / name).symlink_to(self.root / name, target_is_directory=True)

    def copy_to(self, dest: Path) -> SmokeData:
        """A private copy of raw/, crops/ and index/ in `dest` (which may exist), for a test that changes its data."""
        shutil.copytree(self.root, dest, symlinks=True, dirs_exist_ok=True)
        return SmokeData(self.cfg, dest)


def _build(root: Path, cfg) -> SmokeData:
    """Synthetic raw videos -> crops -> index for `cfg` under `root` (about a second at smoke size)."""
    from vremd.data.crop_store import build_crops
    from vremd.data.index import build_index
    from vremd.data.sources.download import prepare_synthetic

    data = SmokeData(cfg, root)
    prepare_synthetic(cfg.data.synthetic, data.dataset_dir, progress=False)
    build_crops(data.dataset_dir, data.crops, cfg.crops, cfg.data.on_bad_input, cfg.data.val_boxes, progress=False)
    build_index(data.crops, data.index)
    return data


@pytest.fixture(scope="session")
def build_smoke_data():
    """`build_smoke_data(root, cfg) -> SmokeData`: the smoke data's chain for another config (a test's own)."""
    return _build


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> SmokeData:
    """The smoke data, shared by the whole session; a test that wrote into it fails the session's last test."""
    from vremd.config import smoke_config

    data = _build(tmp_path_factory.mktemp("smoke-data"), smoke_config())
    before = _tree_state(data.root)
    yield data
    assert _tree_state(data.root) == before, f"{data.root}: a test wrote into the shared smoke data (copy_to it)"


@pytest.fixture(scope="session")
def _ray_session():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def local_ray(_ray_session) -> None:
    """A local Ray of this process's own (never a cluster a `ray start` left on the machine), started on first
    use and shut down when the session ends (idle, it costs about 2% of one core and 0.35 GB on the 2-core
    machine); tests that start their own nodes (tests/ray_nodes.py) run them as separate processes beside it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)


@pytest.fixture
def no_local_ray() -> None:
    """No Ray in this process: for a test whose code calls `ray.init` itself (and `ray.shutdown` after).
    The next `local_ray` test starts a new one. Ray is not imported here: it reads settings such as
    RAY_AUTH_MODE from the environment when first imported, which the test may still set."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def free_port():
    """`free_port()`: a free TCP port on 127.0.0.1, for the servers and Ray nodes tests start (the library's own,
    which the team's tracking server uses; helpers such as tests/ray_nodes.py import it directly)."""
    from vremd.tracking_server.server import free_port

    return free_port


def _profile_tree(cfg, **dotted: Any) -> dict:
    """`cfg` as a profile tree (a Config as config_to_dict writes it, or a partial tree copied as is), with dotted
    overrides (`train__epochs=3` sets train.epochs)."""
    import copy

    from vremd.config import Config, config_to_dict, set_dotted

    if isinstance(cfg, Config):
        tree = config_to_dict(cfg)
        tree.pop("profile")
    else:
        tree = copy.deepcopy(cfg)
    for key, value in dotted.items():
        set_dotted(tree, key.replace("__", "."), value)
    return tree


@pytest.fixture(scope="session")
def write_params():
    """`write_params(root, cfg=smoke_config(), profile="smoke", **dotted) -> root/params.yaml`: one profile, the
    selected one, holding `cfg` (a Config or a partial profile tree) with dotted overrides (`train__epochs=3`)."""
    from vremd.config import smoke_config

    def write(root: Path, cfg=None, profile: str = "smoke", **dotted: Any) -> Path:
        path = Path(root) / "params.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tree = _profile_tree(smoke_config() if cfg is None else cfg, **dotted)
        path.write_text(yaml.safe_dump({"profile": profile, "profiles": {profile: tree}}, sort_keys=False))
        return path

    return write


@dataclass(frozen=True)
class SmallDisk:
    """A 16 KiB tmpfs mounted at `path`: a write past 16 KiB fails with ENOSPC, as on a full disk."""

    path: Path

    def fill(self, leave_bytes: int) -> None:
        """Take all but about `leave_bytes` of the free space (tmpfs counts whole 4 KiB pages)."""
        free = shutil.disk_usage(self.path).free
        (self.path / ".filler").write_bytes(bytes(max(0, free - leave_bytes)))

    def read_only(self) -> None:
        """Remount it read-only: every write there fails with EROFS, as for root in a read-only folder."""
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size="16k") -> Path`: a real tiny file system mounted at tmp_path/disk for the test and unmounted
    after it (writes past `size` fail with ENOSPC, as on a full disk); mounting needs root (the suite runs as root
    here: chmod cannot make a folder read-only for root, a read-only mount can)."""
    path = tmp_path / "disk"

    def mount(size: str = "16k") -> Path:
        path.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()} (needs root)")
        return path

    yield mount
    if path.is_mount():
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def small_disk(tmpfs) -> SmallDisk:
    """A 16 KiB tmpfs of the test's own (`tmpfs`), with helpers to fill it and make it read-only."""
    return SmallDisk(tmpfs("16k"))
