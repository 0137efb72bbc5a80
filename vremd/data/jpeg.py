"""JPEG frame files: header checks before decoding, and decoding at full, 1/2 or 1/4 resolution.

`load_jpeg` reads a file once and checks its markers and the size its start-of-frame header claims (a
frame larger than `MAX_FRAME_PIXELS` is refused before any allocation); `decode_jpeg` decodes those bytes,
at 1/scale resolution through libjpeg's DCT scaling (`DECODE_SCALES`). Errors name the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vremd.errors import InputError


class JpegError(InputError):
    """A frame file is missing, truncated, corrupt or too large; the message names the file."""


MAX_FRAME_PIXELS = 8192 * 8192  # a frame header claiming more is refused before decoding (no huge allocation)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame: baseline, progressive, ...


def jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, or None if no such header is found."""
    data, i = memoryview(buf), 2  # no copy of the file
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            return data[i + 5] << 8 | data[i + 6], data[i + 7] << 8 | data[i + 8]
        i += 2 + (data[i + 2] << 8 | data[i + 3])
    return None


DECODE_SCALES = (4, 2, 1)  # reduced decodes tried, largest first
_DECODE_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def load_jpeg(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """A JPEG file's bytes and (height, width) from its header (None if absent); checks markers and size.

    Raises `JpegError` naming the file when it is missing, truncated, corrupt or too large.
    """
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise JpegError(f"{path}: missing frame file") from None
    if buf.size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise JpegError(f"{path}: corrupt JPEG (no start-of-image marker)")
    tail = buf[-64:].tobytes()
    if b"\xff\xd9" not in tail:
        raise JpegError(f"{path}: truncated JPEG (no end-of-image marker)")
    size = jpeg_size(buf)
    if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
        raise JpegError(f"{path}: JPEG header claims {size[1]}x{size[0]} pixels, more than the "
                        f"{MAX_FRAME_PIXELS} a frame may have")
    return buf, size


def decode_jpeg(buf: np.ndarray, path: Path, scale: int = 1) -> np.ndarray:
    """Decode JPEG bytes to (ceil(H / scale), ceil(W / scale), 3) uint8 BGR (scale 1, 2 or 4)."""
    try:
        image = cv2.imdecode(buf, _DECODE_FLAGS[scale])
    except cv2.error as exc:  # OpenCV asserts on some malformed headers instead of returning None
        raise JpegError(f"{path}: corrupt JPEG ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise JpegError(f"{path}: corrupt JPEG (cannot be decoded)")
    return image


def read_frame(path: Path, scale: int = 1) -> np.ndarray:
    """Decode a JPEG to an (H, W, 3) uint8 BGR array (1/scale size); raises `JpegError` naming the file."""
    return decode_jpeg(load_jpeg(path)[0], path, scale)
