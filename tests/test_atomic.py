"""vremd.atomic: complete file or the old one, never a half-written file or a leftover temp file."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.data.sources.test_archives import write_tar
from vremd.atomic import (AtomicBatch, atomic_path, atomic_write, atomic_write_bytes, atomic_write_stream, atomic_write_text,
                          replace_dir, temp_dir_beside)
from vremd.data.sources.archives import extract_archive


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


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_modes_a_plain_open_and_mkdir_would(tmp_path, umask):
    """mkstemp / mkdtemp create 0600 / 0700, and the rename would carry that onto every output: another user of
    a shared data folder or tracking store could not read it."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write(tmp_path / "b.png", lambda tmp: tmp.write_bytes(b"png"))
        with AtomicBatch() as batch:
            batch.write(tmp_path / "c.csv", lambda tmp: tmp.write_text("c"))
            batch.fill(tmp_path / "folder", lambda tmp: (tmp / "inside.json").write_text("{}"))
            batch.commit()
        replace_dir(temp_dir_beside(tmp_path / "other"), tmp_path / "other")
        extracted = extract_archive(write_tar(tmp_path / "x.tar", [(tarfile.TarInfo("d/f.txt"), b"f")], "w"),
                                    tmp_path / "extracted")
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "plain.txt") == 0o666 & ~umask and mode(tmp_path / "plain") == 0o777 & ~umask
    for name in ("a.json", "b.png", "c.csv", "folder/inside.json"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    for folder in (tmp_path / "folder", tmp_path / "other", extracted):
        assert mode(folder) == 0o777 & ~umask, folder


def test_a_batch_replaces_all_its_outputs_or_none(tmp_path):
    old = {"a.md": "old a", "b.json": "old b"}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "stale.json").write_text("{}")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=rf"No space left on device: '{tmp_path}/b\.json'"), AtomicBatch() as batch:
        batch.write(tmp_path / "a.md", lambda tmp: tmp.write_text("new a"))
        batch.fill(tmp_path / "preds", lambda tmp: (tmp / "v.json").write_text("[]"))
        batch.write(tmp_path / "b.json", fail)
        batch.commit()
    assert {n: (tmp_path / n).read_text() for n in old} == old  # the first write was never renamed into place
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.md", "b.json", "preds", "stale.json"]  # no temps
    with AtomicBatch() as batch:
        reserved = batch.reserve(tmp_path / "b.json")  # reserved first, written last: committed last
        batch.write(tmp_path / "a.md", lambda tmp: tmp.write_text("new a"))
        batch.fill(tmp_path / "preds", lambda tmp: (tmp / "v.json").write_text("[]"))
        batch.write(tmp_path / "b.json", lambda tmp: tmp.write_text("new b"))
        assert reserved.parent == tmp_path and reserved.name.startswith(".b.json.")
        assert batch.commit() == [tmp_path / "a.md", tmp_path / "preds", tmp_path / "b.json"]
    assert (tmp_path / "a.md").read_text() == "new a" and (tmp_path / "b.json").read_text() == "new b"
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["v.json"]  # the folder replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.json", "preds"]


def test_an_unwritable_destination_is_named_and_refused_before_writing(tmp_path, small_disk):
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(NotADirectoryError,
                       match=rf"{tmp_path}/file is a file, not a folder: .{tmp_path}/file/sub/a\.json."):
        atomic_write_text(tmp_path / "file" / "sub" / "a.json", "{}")
    (small_disk.path / "a.json").write_text("old")
    small_disk.fill(leave_bytes=0)
    with pytest.raises(OSError, match=rf"No space left on device: '{small_disk.path}/a\.json'"):
        atomic_write_bytes(small_disk.path / "a.json", bytes(8192))
    assert (small_disk.path / "a.json").read_text() == "old"
    small_disk.read_only()
    with pytest.raises(OSError, match=rf"Read-only file system: '{small_disk.path}/a\.json'"), \
            AtomicBatch() as batch:
        batch.reserve(small_disk.path / "a.json")
    assert sorted(p.name for p in small_disk.path.iterdir()) == [".filler", "a.json"]
