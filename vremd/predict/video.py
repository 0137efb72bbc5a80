"""Frames of the user's video: an mp4/avi file read with OpenCV, or a folder of image files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vremd.data import jpeg
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


def _read_image(file: Path) -> np.ndarray:
    """One frame file as (H, W, 3) uint8 BGR; a JPEG's header is checked first, as crops check it
    (vremd.data.jpeg: a claimed size above MAX_FRAME_PIXELS is refused before any decoding)."""
    if file.suffix.lower() in (".jpg", ".jpeg"):
        return jpeg.read_frame(file)
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is None:
        raise VideoReadError(f"{file}: not a readable image")
    return image


def _decoded(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name for messages, BGR frame) of every frame of a video file or frame folder, in order."""
    if path.is_dir():
        for file in _folder_files(path):
            yield str(file), _read_image(file)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoReadError(f"{path}: not a readable video")
    try:
        t = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield f"{path}: frame {t}", frame
            t += 1
    finally:
        cap.release()


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames in order as (H, W, 3) uint8 BGR arrays, all of the first frame's size.

    Raises VideoReadError (JpegError for a bad JPEG file) naming the file, and for a frame whose size is not
    the first frame's: a person box and its 3-frame window only have one geometry in frames of one size.
    """
    first: tuple[str, tuple[int, ...]] | None = None
    for name, image in _decoded(Path(path)):
        if first is None:
            first = (name, image.shape)
        elif image.shape != first[1]:
            (h, w), (first_h, first_w) = image.shape[:2], first[1][:2]
            raise VideoReadError(f"{name}: {w}x{h} pixels, but the first frame ({Path(first[0]).name}) is "
                                 f"{first_w}x{first_h}; the frames of one video must all have one size")
        yield image


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Decode only frame `index` (seeking in a video): the slow access the naive baseline uses."""
    path = Path(path)
    if path.is_dir():
        return _read_image(_folder_files(path)[index])
    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise VideoReadError(f"{path}: frame {index} cannot be decoded")
    return frame
