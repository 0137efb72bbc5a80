"""`python -m vremd.predict` on real pixels: the vendored 5-frame 1280x720 PoseTrack clip end to end
(tests/fixtures/poseval_real/video, see its SOURCE.md), and frame folders cut from it: frames of mixed sizes
and a JPEG whose header claims 20000x20000 are refused naming the file, with nothing written."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from predict_fixtures import CLIP, CLIP_FPS, CLIP_FRAMES, CLIP_WH, clip_boxes, clip_frames, jpeg_claiming_size, \
    save_smoke_checkpoint

from vremd.config import smoke_config
from vremd.data.boxes import crop_rect
from vremd.data.posetrack import POSEVAL_FILE_NAME, read_video
from vremd.predict.cli import main
from vremd.predict.overlay import count_frames
from vremd.predict.video_poses import person_crop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    boxes = root / "boxes.json"
    boxes.write_text(json.dumps(clip_boxes()))
    return clip_frames(), boxes, save_smoke_checkpoint(root / "final.pt")


def test_the_vendored_clip_is_the_real_5_frame_1280x720_video(clip):
    frames, _, _ = clip
    assert CLIP.stat().st_size == 158_849 and (CLIP.parent / "SOURCE.md").is_file()
    assert len(frames) == CLIP_FRAMES and all(f.shape == (720, 1280, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[4]).mean() > 10  # a real, moving picture


@pytest.mark.slow  # a fresh interpreter imports torch and timm
def test_python_m_vremd_predict_on_the_real_clip(clip, tmp_path):
    _, boxes, ckpt = clip
    out, overlay = tmp_path / "pred" / "clip.json", tmp_path / "overlay.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "vremd.predict", str(CLIP), "--boxes", str(boxes), "--track", "--checkpoint",
         str(ckpt), "--out", str(out), "--overlay", str(overlay), "--quiet"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{CLIP_FRAMES} frames, {2 * CLIP_FRAMES} person crops, 2 tracks -> {out}" in proc.stdout
    pred = read_video(out)
    assert [f.file_name for f in pred.frames] == [f"images/000001_mpiinew_test/{t:06d}.jpg" for t in range(5)]
    assert all(POSEVAL_FILE_NAME.search(f.file_name) for f in pred.frames)
    crops = smoke_config().crops
    for t, frame in enumerate(pred.frames):
        assert sorted(p.track_id for p in frame.persons) == [0, 1]  # the same two players, tracked
        for person in frame.persons:
            x, y = person.keypoints[:, 0], person.keypoints[:, 1]
            assert np.all((x >= 0) & (x < CLIP_WH[0]) & (y >= 0) & (y < CLIP_WH[1]))  # inside the frame
            col, row, w, h = crop_rect(person.bbox_xywh, crops.enlarge, (crops.width, crops.height))
            assert np.all((x >= col - 1) & (x <= col + w) & (y >= row - 1) & (y <= row + h))  # and its crop
            assert len(person.scores) == 17 and np.all(np.isfinite(person.scores))
            assert np.all(person.keypoints[:, 2] == 1)
    cap = cv2.VideoCapture(str(overlay))
    size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))
    cap.release()
    assert size == (*CLIP_WH, CLIP_FPS) and count_frames(overlay) == CLIP_FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4", "pred"]  # no temp file left


def _frame_folder(root: Path, frames: list[np.ndarray]) -> Path:
    folder = root / "frames"
    folder.mkdir()
    for t, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{t:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def _predict(args: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args] + ["--quiet"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_a_frame_folder_of_mixed_sizes_is_refused_naming_the_odd_frame(clip, tmp_path, capsys):
    """Issue 32 item 8: a box and its t-1, t, t+1 window have one geometry only in frames of one size."""
    frames, boxes, ckpt = clip
    frames = list(frames)
    frames[2] = cv2.resize(frames[2], (960, 540), interpolation=cv2.INTER_AREA)
    folder = _frame_folder(tmp_path, frames)
    out, overlay = tmp_path / "p.json", tmp_path / "o.mp4"
    rc, stdout, err = _predict([folder, "--boxes", boxes, "--checkpoint", ckpt, "--out", out, "--overlay", overlay],
                               capsys)
    assert rc == 2 and stdout == ""
    assert err == (f"error: {folder / '000002.jpg'}: 960x540 pixels, but the first frame (000000.jpg) is 1280x720; "
                   "the frames of one video must all have one size\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no json, no overlay, no temp file


def test_a_window_crop_takes_its_geometry_from_the_key_frame(clip):
    """The person box is in the key frame's pixels: a neighbour of another size never clips it."""
    frames, _, _ = clip
    key = cv2.cvtColor(frames[1], cv2.COLOR_BGR2RGB)
    small = cv2.resize(key, (640, 360), interpolation=cv2.INTER_AREA)
    cfg = smoke_config().crops
    out, expected_out = (np.zeros((3, cfg.height, cfg.width, 3), np.uint8) for _ in range(2))
    box = (900.0, 300.0, 200.0, 300.0)  # right of x = 640: outside the small frame
    expected = person_crop([key, key, key], box, cfg, expected_out)
    got = person_crop([small, key, small], box, cfg, out)
    np.testing.assert_array_equal(got.crop_to_image, expected.crop_to_image)
    np.testing.assert_array_equal(got.box_xywh, expected.box_xywh)
    np.testing.assert_array_equal(out[1], expected_out[1])  # the key frame's crop: the same rectangle


def test_a_jpeg_header_claiming_20000x20000_is_refused_before_decoding(clip, tmp_path, capsys):
    """Issue 32 item 16: a 4 KB JPEG whose header claims 20000x20000 made predict decode 1.2 GB of pixels."""
    frames, _, ckpt = clip
    small = [cv2.resize(f, (128, 72), interpolation=cv2.INTER_AREA) for f in frames[:3]]
    folder = _frame_folder(tmp_path, small)
    bomb = folder / "000001.jpg"
    bomb.write_bytes(jpeg_claiming_size(bomb.read_bytes(), (20000, 20000)))
    assert bomb.stat().st_size < 4096
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(clip_boxes(3, scale=0.1)))
    out = tmp_path / "p.json"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, stdout, err = _predict([folder, "--boxes", boxes, "--checkpoint", ckpt, "--out", out], capsys)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 300 * 1024  # before the fix: +2.3 GB
    assert rc == 2 and stdout == ""
    assert err.startswith(f"error: {bomb}: JPEG header claims 20000x20000 pixels, more than the ")
    assert err.count("\n") == 1 and not out.exists()
