"""Checkpoint files: atomic writes that keep the previous checkpoint on failure, RNG round trips, the local store."""

import os
import random
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vremd.model.checkpoint import CheckpointError
from vremd.train.checkpoints import (
    STATE_FILE, CheckpointWriteError, LocalCheckpointStore, checkpoint_dir_name, latest_checkpoint, load_state,
    rng_state, save_state, set_rng_state,
)


def test_save_and_load_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"loss": 0.5}]}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["epoch"] == 3 and back["history"] == [{"loss": 0.5}]
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert not [p for p in tmp_path.iterdir() if p.name != STATE_FILE], "temp files left behind"


def test_disk_full_keeps_previous_checkpoint(tmp_path):
    save_state(tmp_path, {"epoch": 1})
    # the temp file the next write uses is a link to /dev/full: a real ENOSPC on flush
    tmp = tmp_path / f".{STATE_FILE}.tmp{os.getpid()}"
    tmp.symlink_to("/dev/full")
    with pytest.raises(CheckpointWriteError, match="previous checkpoint is kept"):
        save_state(tmp_path, {"epoch": 2, "big": torch.zeros(100_000)})
    assert load_state(tmp_path)["epoch"] == 1
    assert not tmp.exists() and not tmp.is_symlink()


def test_unwritable_location_raises_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointWriteError, match=str(blocker)):
        save_state(blocker / "ckpt", {"epoch": 1})


def test_unreadable_checkpoint_names_the_file(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=STATE_FILE):
        load_state(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_state(tmp_path / "nowhere")


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_state(tmp_path, {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_state(tmp_path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_local_store_keeps_newest_and_finds_latest(tmp_path):
    store = LocalCheckpointStore(tmp_path / "run", keep=2)
    assert store.latest() is None
    for epoch in (1, 2, 3):
        src = tmp_path / f"src{epoch}"
        save_state(src, {"epoch": epoch})
        store.publish(src, epoch)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint_epoch_0002", "checkpoint_epoch_0003"]
    assert load_state(store.latest())["epoch"] == 3


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoints_get_the_modes_the_umask_gives(tmp_path, umask):
    """Training saves into a private temp folder (0700); the published checkpoint must not keep that mode, or
    another user of a shared ray_results could not resume from or adopt it."""
    old = os.umask(umask)
    try:
        with tempfile.TemporaryDirectory() as private:
            save_state(private, {"epoch": 1})
            final = LocalCheckpointStore(tmp_path / "run", keep=2).publish(Path(private), 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((final / STATE_FILE).stat().st_mode) == 0o666 & ~umask


def test_local_store_and_the_ray_driver_share_one_newest_checkpoint_rule(tmp_path):
    """A checkpoint folder without its state file (a copy cut short) is never the one to resume from: the
    in-process store and the run-folder rules (`latest_checkpoint`) agree. Before, the store picked it."""
    store = LocalCheckpointStore(tmp_path / "run", keep=3)
    save_state(tmp_path / "src", {"epoch": 1})
    store.publish(tmp_path / "src", 1)
    (tmp_path / "run" / checkpoint_dir_name(2)).mkdir()  # epoch 2's folder, no state.pt
    assert store.latest() == latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoint_epoch_0001"
