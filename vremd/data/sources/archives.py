"""Safe extraction of .tar, .tar.gz/.tgz, .tar.bz2/.tar.xz and .zip archives, and of split tars
(`x.tar.aa`, `x.tar.ab`, ... as made by `split`, read as one stream).

Every member is checked before anything is written: absolute paths, `..` components
(zip-slip / tar traversal), links pointing outside the tree and device files are refused with
an error naming the archive and the member. One cap (`_Budget`) bounds what zip and tar alike may
write: at most `max_bytes` (default `MAX_EXTRACTED_BYTES`) in all and no more than the free disk
space, counted while the bytes are written (a decompression bomb is stopped at the cap, whatever its
headers declare); a zip whose headers already add up to more is refused before anything is written.
A tar is read as one stream (single pass, also for split parts) and must end with its end-of-archive
block followed by zero padding only: tarfile itself stops silently at the first bytes that are no
header, dropping the later members (a header that understates its size). Extraction goes into a
temporary folder beside the target, which is renamed into place only when the whole archive
extracted, so an interrupted or failed extraction never leaves a half-filled target.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from vremd.atomic import temp_dir_beside
from vremd.errors import InputError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
# a piece of a tar cut with `split` (PoseTrack18 ships its images as posetrack18_images.tar.aa, .ab, ...)
_SPLIT_PART = re.compile(r"^(.+\.(?:tar|tar\.gz|tgz|tar\.bz2|tar\.xz))\.[a-z]{2,3}$")


MAX_EXTRACTED_BYTES = 512 * 2**30  # all PoseTrack releases together are far smaller


class ArchiveError(InputError):
    """An archive is corrupt, truncated, of an unknown kind or holds an unsafe member."""


def archive_kind(path: Path) -> str:
    """`"zip"` or `"tar"` from the file name; raises ArchiveError for anything else."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES):
        return "tar"
    raise ArchiveError(f"{path}: not a supported archive, expected one of {', '.join(ARCHIVE_SUFFIXES)}")


def _check_member_name(archive: Path, name: str) -> str:
    """The member's normalised relative POSIX path; raises if it would land outside the target."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in unified.split("/"):
        raise ArchiveError(f"{archive}: member {name!r} escapes the target folder via '..'; refusing to extract")
    return posixpath.normpath(unified)


def _check_link_target(archive: Path, member: str, target: str, hard: bool) -> None:
    """Refuse a link whose target resolves outside the extraction root."""
    unified = target.replace("\\", "/")
    base = "" if hard else posixpath.dirname(member)  # hard links are relative to the root
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if unified.startswith("/") or resolved == ".." or resolved.startswith("../"):
        kind = "hard link" if hard else "symlink"
        raise ArchiveError(
            f"{archive}: member {member!r} is a {kind} to {target!r} outside the target folder; refusing to extract"
        )


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = _check_member_name(archive, member.name)
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise ArchiveError(f"{archive}: member {member.name!r} is a device or fifo; refusing to extract")
    if member.issym() or member.islnk():
        _check_link_target(archive, name, member.linkname, hard=member.islnk())
    elif not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive}: member {member.name!r} has an unsupported type; refusing to extract")


def _check_tar(archive: Path, tar: tarfile.TarFile) -> int:
    """Validate every member of an open tar; returns the total size of regular files in bytes."""
    total = 0
    for member in tar.getmembers():
        _check_tar_member(archive, member)
        total += member.size if member.isfile() else 0
    return total


def _zip_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> int:
    """Validate every member of an open zip; returns the total uncompressed size in bytes."""
    total = 0
    for info in zf.infolist():
        _check_member_name(archive, info.filename)
        mode = _zip_mode(info)  # Unix mode bits; the file type part is 0 when the writer left it out
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"{archive}: member {info.filename!r} is a symlink; refusing to extract")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ArchiveError(f"{archive}: member {info.filename!r} is a device or special file; refusing to extract")
        total += info.file_size
    return total


class _Budget:
    """The one cap on what an archive may write, zip and tar alike: at most `max_bytes` in all, and no more
    than the disk had free when extraction began. Bytes are counted as they are written, so a member whose
    header understates its size, or a stream that is never summed up front (a split tar), cannot get past it."""

    def __init__(self, archive: Path, dest: Path, max_bytes: int) -> None:
        self.archive, self.dest, self.max_bytes = archive, dest, max_bytes
        self.free = shutil.disk_usage(dest).free
        self.written = 0

    def check(self, total: int, what: str) -> None:
        """Refuse when `total` bytes (`what` says whose) exceed the cap or the free space."""
        if total > self.max_bytes:
            raise ArchiveError(f"{self.archive}: {what} {total} bytes uncompressed, more than the "
                               f"{self.max_bytes}-byte cap on extraction (a decompression bomb?); refusing to extract")
        if total > self.free:
            raise ArchiveError(f"{self.archive}: {what} {total} bytes uncompressed, more than the {self.free} bytes "
                               f"free in {self.dest}; refusing to extract")

    def copy(self, src: BinaryIO, out: Path, member: str) -> None:
        """Stream `src` into the new file `out`, each chunk counted against the cap before it is written."""
        with open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                self.written += len(chunk)
                self.check(self.written, f"member {member!r} takes the extracted total to at least")
                dst.write(chunk)


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        budget.check(_check_zip(archive, zf), "members add up to")  # the headers' sum: refused before writing
        bad = zf.testzip()  # CRC of every member: catches corrupt data before extraction
        if bad is not None:
            raise ArchiveError(f"{archive}: member {bad!r} is corrupt (CRC mismatch)")
        for info in zf.infolist():
            out = dest / _check_member_name(archive, info.filename)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                budget.copy(src, out, info.filename)


def check_archive(archive: Path) -> int:
    """Validate an archive's members without extracting; returns the total file size in bytes."""
    archive = Path(archive)
    try:
        if archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                return _check_zip(archive, zf)
        with tarfile.open(archive, "r:*") as tar:
            return _check_tar(archive, tar)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from None


class _Concatenated(io.RawIOBase):
    """Read-only stream over several files, one after the other (a split `x.tar.aa`, `x.tar.ab`, ...)."""

    def __init__(self, paths: list[Path]):
        self._paths, self._file = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = open(self._paths.pop(0), "rb")
            n = self._file.readinto(buffer)
            if n:
                return n
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


class _StrictTarInfo(tarfile.TarInfo):
    """Reads a header as tarfile does, but refuses to end the archive early: where the next header or the
    end-of-archive block should be, tarfile stops silently at bytes that are no header (a member whose header
    understates its size is followed by its own data) or at the end of the data, dropping every later member."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            if tar.offset == 0:
                raise  # tarfile's own "invalid header": not a tar at all
            raise tarfile.ReadError(f"byte {tar.offset} is no tar header ({exc}): a member's header understates "
                                    "its size, or the archive is corrupt") from None
        except tarfile.EmptyHeaderError:
            if tar.offset == 0:
                raise
            raise tarfile.ReadError(f"the data ends at byte {tar.offset} without the end-of-archive block") from None


def _check_tar_end(tar: tarfile.TarFile, budget: _Budget) -> None:
    """After the end-of-archive block only zero padding may follow (it is read, never written: bounded by the cap
    on its own, so a stream of zeros cannot keep us reading)."""
    read = 0
    while chunk := tar.fileobj.read(1 << 20):
        read += len(chunk)
        budget.check(read, "the padding after the end-of-archive block holds at least")
        if chunk.count(0) != len(chunk):
            raise tarfile.ReadError(f"data after the end-of-archive block at byte {tar.offset}: a member's header "
                                    "understates its size, or the archive is corrupt")


def _extract_tar(parts: list[Path], label: Path, dest: Path, budget: _Budget) -> None:
    """Stream a tar (or the parts of a split one, in order) into `dest`, a temp folder: each member is checked
    before it is written, each regular file's bytes are counted against `budget` as they are written."""
    with _Concatenated(parts) as raw, tarfile.open(fileobj=io.BufferedReader(raw, 1 << 20), mode="r|*",
                                                    tarinfo=_StrictTarInfo) as tar:
        for member in tar:
            _check_tar_member(label, member)
            try:
                safe = tarfile.data_filter(member, str(dest))  # paths, links and modes, against what is on disk
            except tarfile.FilterError as exc:
                raise ArchiveError(f"{label}: member {member.name!r}: {exc}; refusing to extract") from None
            if not member.isreg():  # folders and links: no data
                tar.extract(member, dest, filter="data")
                continue
            out = dest / safe.name
            out.parent.mkdir(parents=True, exist_ok=True)
            budget.copy(tar.extractfile(member), out, member.name)
            os.chmod(out, safe.mode)
            os.utime(out, (safe.mtime, safe.mtime))
        _check_tar_end(tar, budget)


def split_base(path: Path) -> str | None:
    """`"x.tar"` for a part of a split archive named like `x.tar.aa`, `x.tar.ab`; None otherwise."""
    match = _SPLIT_PART.match(Path(path).name)
    return match.group(1) if match else None


def group_split_parts(paths: list[Path]) -> list[list[Path]]:
    """Consecutive parts of one split archive (`x.tar.aa`, `x.tar.ab`, ...) grouped; other archives alone."""
    groups: list[list[Path]] = []
    for path in paths:
        base = split_base(path)
        if base is not None and groups and split_base(groups[-1][-1]) == base:
            groups[-1].append(path)
        else:
            groups.append([path])
    return groups


def extract_archive(archive: Path | list[Path], target: Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Extract `archive` safely into the new folder `target` (which must not exist); returns `target`.

    `archive` may be a list of the parts of one split tar (`x.tar.aa`, `x.tar.ab`, ...), read
    as one stream in the given order. The archive is extracted into a temporary folder inside
    `target.parent` and renamed to `target` only after every member was checked and written. On
    any error the temporary folder is removed and `target` is left as it was.
    """
    parts = [Path(p) for p in archive] if isinstance(archive, (list, tuple)) else [Path(archive)]
    archive, target = parts[0], Path(target)
    if target.exists():
        raise ArchiveError(f"{target}: extraction target already exists; remove it first")
    for part in parts:
        if not part.is_file():
            raise ArchiveError(f"{part}: archive not found")
    split = all(split_base(p) is not None for p in parts)
    if not split and len(parts) > 1:
        raise ArchiveError(f"{archive}: only the parts of a split tar (x.tar.aa, x.tar.ab, ...) can be joined")
    kind = "tar" if split else archive_kind(archive)
    label = Path(f"{parts[0]}..{parts[-1].name}") if len(parts) > 1 else archive
    tmp = temp_dir_beside(target)
    try:
        budget = _Budget(label, tmp, max_bytes)
        if kind == "zip":
            _extract_zip(archive, tmp, budget)
        else:
            _extract_tar(parts, label, tmp, budget)
        os.replace(tmp, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{label}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link `src` at `dest` (no copy; the source stays intact for a re-run), copying across devices."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
