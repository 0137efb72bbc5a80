"""vremd.atomic: complete file or the old one, never a half-written file or a leftover temp file."""

from __future__ import annotations

import errno
import fnmatch
from pathlib import Path

import numpy as np
import pytest

from vremd.atomic import atomic_path, atomic_write, atomic_write_bytes, atomic_write_stream, atomic_write_text


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.json"
    assert atomic_write_text(target, '{"a": 1}') == target and target.read_text() == '{"a": 1}'
    atomic_write_bytes(target, b'{"a": 2}')
    assert target.read_bytes() == b'{"a": 2}'
    atomic_write_stream(tmp_path / "x.npy", lambda f: np.save(f, np.arange(3)))
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2]  # no second .npy appended
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "sub", "x.npy"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    seen: list[Path] = []

    def half_then_fail(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    # the temp name is hidden and ends in .tmp: a reader's *.json glob never sees a killed writer's file
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".a.json.") and seen[0].suffix == ".tmp"
    assert not fnmatch.fnmatch(seen[0].name, "*.json")  # what list_videos / the evaluators glob for


def test_a_checked_writer_that_writes_nothing_is_an_error_naming_the_target(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match=f"^{target}: nothing was written"):
        atomic_write(target, lambda tmp: False, check_written=True)  # as cv2.imwrite fails: False, no bytes
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    atomic_write(target, lambda tmp: tmp.write_bytes(b"png"), check_written=True)
    assert target.read_bytes() == b"png"


def test_a_full_disk_names_the_target_not_the_vanished_temp_file(tmp_path):
    target = tmp_path / "overlay.mp4"
    with pytest.raises(OSError) as info:
        with atomic_path(target, ".mp4") as tmp:
            assert tmp.name.startswith(".overlay.mp4.") and tmp.name.endswith(".tmp.mp4")  # a writer picks mp4
            tmp.unlink()
            tmp.symlink_to("/dev/full")  # a real ENOSPC
            tmp.write_bytes(b"x" * 100_000)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(target) in str(info.value) and list(tmp_path.iterdir()) == []
    other = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "frame.jpg"))
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise other  # an error about another file passes unchanged
    assert info.value is other and list(tmp_path.iterdir()) == []
