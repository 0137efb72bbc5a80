"""Atomic file writes: a temporary file beside the target, renamed over it only once complete.

The temporary name is `.<name>.<random>.tmp`: hidden, and never matching a reader's `*.json` /
`*.npy` glob even when a killed process leaves it behind. Writers that pick the format from the
file extension (cv2.imwrite, np.save on a path) should encode to bytes or write to the open file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_stream", "atomic_write_bytes", "atomic_write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path`; on failure the
    temp file is removed and an existing `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Like `atomic_write`, but `write` gets the temp file opened for binary writing."""
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_write(path, to_file)


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write `payload` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
