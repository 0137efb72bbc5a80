"""Atomic file writes: a temporary file beside the target, renamed over it only once complete.

The temporary name is `.<name>.<random>.tmp`: hidden, and never matching a reader's `*.json` /
`*.npy` glob even when a killed process leaves it behind. Writers that pick the format from the
file extension (cv2.imwrite, np.save on a path) should encode to bytes or write to the open file;
a streaming writer that cannot (cv2.VideoWriter) gets a temporary name ending in the extension
(`atomic_path(path, suffix=".mp4")`). Writers that can fail silently are checked (`check_written`).

Temporary files and folders are created with mode 0666 / 0777 and the process umask applied by the
kernel, exactly as a plain `open()` or `mkdir` would (`tempfile.mkstemp` / `mkdtemp` make them 0600 /
0700, which the rename would carry onto every output: another user of a shared data folder or
tracking store would be refused). A failed write raises `OSError` naming the target, never its temp
file, and leaves an existing target untouched. `replace_dir` swaps a finished folder in with one
rename; `AtomicBatch` replaces several outputs together: all or none.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, NoReturn, TypeVar

T = TypeVar("T")

__all__ = ["atomic_path", "atomic_write", "atomic_write_stream", "atomic_write_bytes", "atomic_write_text",
           "temp_beside", "temp_dir_beside", "replace_dir", "AtomicBatch"]


def _temp_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def _make_parent(path: Path) -> None:
    """Make `path`'s folder; a file where a folder should be is named as such."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder", str(path)) from None


def temp_beside(path: str | Path, suffix: str = "") -> Path:
    """A new empty hidden file beside `path` (its folder made if needed), mode 0666 less the umask, its name
    ending in `.tmp<suffix>`; an `OSError` names `path`."""
    path = Path(path)
    _make_parent(path)
    while True:
        tmp = _temp_name(path, f"tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            return tmp
        except FileExistsError:  # another writer drew the same 32 random bits
            continue
        except OSError as exc:  # a read-only folder or a full disk: name the output, not its temp file
            raise _naming(exc, tmp, path) from exc


def temp_dir_beside(path: str | Path) -> Path:
    """A new empty hidden folder beside `path` (same file system: it can be renamed onto `path`), mode
    0777 less the umask; an `OSError` names `path`."""
    path = Path(path)
    _make_parent(path)
    while True:
        tmp = _temp_name(path, "staging")
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _naming(exc, tmp, path) from exc


def _naming(exc: OSError, tmp: Path, path: Path) -> OSError:
    """`exc` naming the target `path` when it named no file, the temporary one (gone by then) or a file inside
    the temporary folder (`path`'s file of that name); else `exc` (about another file)."""
    name = exc.filename
    inside = name is not None and (name == str(tmp) or name.startswith(f"{tmp}{os.sep}"))
    if name is not None and not inside:
        return exc  # about another file
    if name is None and str(path) in str(exc):
        return exc  # names the target already
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    target = path if name in (None, str(tmp)) else path / os.path.relpath(name, tmp)
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def _raise_naming(exc: OSError, tmp: Path, path: Path) -> NoReturn:
    """Raise `exc`, or `_naming`'s version of it from `exc`."""
    named = _naming(exc, tmp, path)
    if named is exc:
        raise exc
    raise named from exc


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
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        if check_written and (not tmp.is_file() or tmp.stat().st_size == 0):
            raise OSError("nothing was written (the writer failed: disk full, or a format it cannot write?)")
        os.replace(tmp, path)
    except OSError as exc:
        _raise_naming(exc, tmp, path)
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
    """Write `payload` to `path` atomically; return `path`."""
    return atomic_write(path, lambda tmp: _write_all(tmp, payload))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return `path`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _write_all(tmp: Path, payload: bytes) -> None:
    """Write `payload` to `tmp` and check the file holds exactly that many bytes."""
    with open(tmp, "wb") as f:
        f.write(payload)
    size = tmp.stat().st_size
    if size != len(payload):
        raise OSError(f"holds {size} bytes after writing {len(payload)}")


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one atomic rename (Linux renameat2 RENAME_EXCHANGE); False where the C
    library or the file system has no such rename."""
    import ctypes  # here, not at import: only a folder replacement needs it

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without exchange
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_dir(new: str | Path, dest: str | Path) -> Path:
    """Put the finished folder `new` at `dest`, replacing an older `dest` as a whole; return `dest`.

    One rename either way: the two folders are swapped atomically (then the old one, now at `new`, is
    removed), so a reader or a crash sees the whole old folder or the whole new one. Where the file system
    cannot swap, the old folder is renamed aside to a hidden `.<dest>.<random>.old` first (a crash between
    the two renames leaves it complete there).
    """
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return dest
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)
        return dest
    old = _temp_name(dest, "old")
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(old, dest)  # put the old folder back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


class AtomicBatch:
    """Several outputs replaced together, all or none: each is first written to a temp file or folder beside
    its target (`reserve`, `write`, `folder`); `commit()` renames them all into place once every one was
    written. Leaving the `with` block without `commit` (an error) removes every temp and touches no target.

    Reserving early (before a long computation) refuses an unwritable destination before the work is done.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # target -> its temp file or folder

    def __enter__(self) -> "AtomicBatch":
        return self

    def __exit__(self, *exc_info) -> None:
        for tmp in self._staged.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        self._staged.clear()

    def _stage(self, path: Path, make: Callable[[Path], Path]) -> Path:
        """The temp of `path`, made by `make(path)` the first time (an `OSError` names `path`)."""
        if path not in self._staged:
            self._staged[path] = make(path)
        return self._staged[path]

    def reserve(self, path: str | Path) -> Path:
        """The temp file that will become `path` (created now, empty)."""
        return self._stage(Path(path), temp_beside)

    def write(self, path: str | Path, write: Callable[[Path], object]) -> Path:
        """Call `write(tmp)` on the temp file of `path`; return `path`."""
        path = Path(path)
        tmp = self.reserve(path)
        try:
            write(tmp)
        except OSError as exc:
            _raise_naming(exc, tmp, path)
        self._staged[path] = self._staged.pop(path)  # committed in the order written: the last written goes last
        return path

    def folder(self, path: str | Path) -> Path:
        """A new empty temp folder that will replace the folder `path` on commit (made once); `fill` fills it."""
        return self._stage(Path(path), temp_dir_beside)

    def fill(self, path: str | Path, fill: Callable[[Path], T]) -> T:
        """Call `fill(tmp)` on the temp folder that will replace the folder `path` (made now); return its result.
        An `OSError` while filling names `path`."""
        path = Path(path)
        tmp = self.folder(path)
        try:
            return fill(tmp)
        except OSError as exc:
            _raise_naming(exc, tmp, path)

    def commit(self) -> list[Path]:
        """Rename every temp onto its target, in the order each was last written (a folder: made; a file
        reserved but not yet written: reserved); return the targets."""
        done = []
        for path, tmp in list(self._staged.items()):
            try:
                replace_dir(tmp, path) if tmp.is_dir() else os.replace(tmp, path)
            except OSError as exc:
                _raise_naming(exc, tmp, path)
            del self._staged[path]
            done.append(path)
        return done
