"""Frames of the user's video: an mp4/avi file read with OpenCV, or a folder of image files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vremd.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class VideoReadError(InputError):
    """The video or frame folder cannot be read; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before its frames are decoded."""

    path: Path
    num_frames: int
    fps: float
    frame_names: tuple[str, ...]  # file names for a folder; "000000.jpg"-style names for a video


def _natural_key(name: str) -> tuple:
    """Sort key that orders "frame2" before "frame10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _folder_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: _natural_key(p.name))


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and frame names of a video file or frame folder; raises VideoReadError."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        files = _folder_files(path)
        if not files:
            raise VideoReadError(f"{path}: frame folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return VideoInfo(path, len(files), 25.0, tuple(p.name for p in files))
    cap = cv2.VideoCapture(str(path))
    try:
        ok, _frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            raise VideoReadError(f"{path}: not a readable video (OpenCV could not decode a frame)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    finally:
        cap.release()
    if count <= 0:  # some containers do not report a count: decode once to count
        count = sum(1 for _ in iter_frames(path))
    return VideoInfo(path, count, fps, tuple(f"{i:06d}.jpg" for i in range(count)))


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames in order as (H, W, 3) uint8 BGR arrays; raises VideoReadError on a bad file."""
    path = Path(path)
    if path.is_dir():
        for file in _folder_files(path):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise VideoReadError(f"{file}: not a readable image")
            yield image
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoReadError(f"{path}: not a readable video")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Decode only frame `index` (seeking in a video): the slow access the naive baseline uses."""
    path = Path(path)
    if path.is_dir():
        file = _folder_files(path)[index]
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoReadError(f"{file}: not a readable image")
        return image
    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise VideoReadError(f"{path}: frame {index} cannot be decoded")
    return frame
