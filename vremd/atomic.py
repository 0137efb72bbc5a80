"""Atomic file writes: a temporary file beside the target, renamed over it only once complete.

The temporary name is `.<name>.<random>.tmp`: hidden, and never matching a reader's `*.json` /
`*.npy` glob even when a killed process leaves it behind. Writers that pick the format from the
file extension (cv2.imwrite, np.save on a path) should encode to bytes or write to the open file;
a streaming writer that cannot (cv2.VideoWriter) gets a temporary name ending in the extension
(`atomic_path(path, suffix=".mp4")`). Writers that can fail silently are checked (`check_written`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_path", "atomic_write", "atomic_write_stream", "atomic_write_bytes", "atomic_write_text"]


def _naming(exc: OSError, tmp: Path, path: Path) -> OSError:
    """`exc` naming the target `path` when it named no file or the temporary one (gone by then); else `exc`."""
    if exc.filename not in (None, str(tmp)):
        return exc  # about another file
    if exc.filename is None and str(path) in str(exc):
        return exc  # names the target already
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


@contextmanager
def atomic_path(path: str | Path, suffix: str = "", check_written: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends without error, rename it over `path`.

    `suffix` ends the temporary name, for writers that pick the format from it (".mp4" for cv2.VideoWriter).
    `check_written`: a temporary file left missing or empty raises OSError naming `path`, for writers that
    can fail without raising (OpenCV's, matplotlib's); check their return values inside the block. On any
    error the temporary file is removed and an existing `path` is left untouched; an OSError that named no
    file, or the temporary one, is raised again naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if check_written and (not tmp.is_file() or tmp.stat().st_size == 0):
            raise OSError("nothing was written (the writer failed: disk full, or a format it cannot write?)")
        os.replace(tmp, path)
    except OSError as exc:
        named = _naming(exc, tmp, path)
        if named is exc:
            raise
        raise named from exc
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object], check_written: bool = False) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path`; on failure the
    temp file is removed and an existing `path` is left untouched (see `atomic_path`). Returns `path`."""
    with atomic_path(path, check_written=check_written) as tmp:
        write(tmp)
    return Path(path)


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
