"""Overlay videos, frame folders and figures on a disk that fills up (a real 64 KiB tmpfs): every write is checked,
the failure is one line naming the file, the CLI exits 2 without reporting the file, and nothing half-written stays."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from predict_fixtures import CLIP, clip_boxes, clip_frames, save_smoke_checkpoint

from vremd.predict.cli import main
from vremd.predict.overlay import OverlayWriter, count_frames


@pytest.fixture
def full_disk(tmpfs):
    """A 64 KiB tmpfs mounted for the test (root only): writes past 64 KiB fail with ENOSPC, as on a full disk."""
    return tmpfs("64k")


def _fill(disk: Path) -> None:
    """Use up every free byte of `disk`."""
    with open(disk / "filler", "wb", buffering=0) as f:  # unbuffered: the write that fails raises, not the close
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.fixture(scope="module")
def frames():
    return clip_frames()  # real 1280x720 frames: 5 of them do not fit in 64 KiB, in any of the formats


@pytest.mark.parametrize("name", ["overlay.mp4", "overlay.avi", "overlay_frames"])
def test_an_overlay_that_does_not_fit_is_an_error_and_leaves_nothing(frames, full_disk, name):
    target = full_disk / name
    with pytest.raises(OSError) as info:
        with OverlayWriter(target, 30.0) as writer:
            for image in frames:
                writer.write(image)
    assert str(info.value).startswith(f"{target}: ") or info.value.filename == str(target)
    assert len(str(info.value).splitlines()) == 1
    assert list(full_disk.iterdir()) == []  # no half video, no temp file, no staging folder


@pytest.mark.parametrize("name", ["overlay.mp4", "overlay.avi", "overlay_frames"])
def test_an_overlay_is_put_in_place_only_when_complete(frames, tmp_path, name):
    target = tmp_path / name
    with OverlayWriter(target, 30.0) as writer:
        for image in frames[:3]:
            writer.write(image)
    if target.is_dir():
        assert sorted(p.name for p in target.iterdir()) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    else:
        assert count_frames(target) == writer.frames_written == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with pytest.raises(ValueError, match="a frame of bad input"):  # a run that fails keeps the previous overlay
        with OverlayWriter(target, 30.0) as writer:
            writer.write(frames[3])
            raise ValueError("a frame of bad input")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (len(list(target.iterdir())) if target.is_dir() else count_frames(target)) == 3


def _predict(args: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args] + ["--quiet"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_predict_with_an_overlay_on_a_full_disk_exits_2_without_reporting_it(full_disk, tmp_path, capsys):
    """Issue 32 item 12: the overlay was reported written while cv2's unchecked writes had failed."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(clip_boxes()))
    ckpt = save_smoke_checkpoint(tmp_path / "final.pt")
    overlay = full_disk / "overlay.mp4"
    rc, stdout, err = _predict([CLIP, "--boxes", boxes, "--checkpoint", ckpt, "--out", tmp_path / "p.json",
                                "--overlay", overlay], capsys)
    assert rc == 2 and stdout == ""  # no "-> overlay" summary
    assert err.startswith(f"error: {overlay}: ") and err.count("\n") == 1
    assert list(full_disk.iterdir()) == []
    figure = full_disk / "sample.png"
    _fill(full_disk)
    rc, stdout, err = _predict([CLIP, "--boxes", boxes, "--checkpoint", ckpt, "--out", tmp_path / "p.json",
                                "--sample-figure", figure], capsys)
    assert rc == 2 and "figure:" not in stdout
    assert err.startswith("error: [Errno 28] No space left on device: ") and str(figure) in err
    assert [p.name for p in full_disk.iterdir()] == ["filler"]


@pytest.mark.parametrize("name", ["overlay.mp4", "overlay_frames"])
def test_an_overlay_gets_the_mode_a_plain_open_or_mkdir_would(frames, tmp_path, name):
    """Not 0600 / 0700 as tempfile makes them: another user of a shared output folder can read the overlay."""
    old = os.umask(0o022)
    try:
        with OverlayWriter(tmp_path / name, 30.0) as writer:
            writer.write(frames[0])
    finally:
        os.umask(old)
    expected = 0o755 if name == "overlay_frames" else 0o644
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
