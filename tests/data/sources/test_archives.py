"""Safe archive extraction: good archives round-trip; traversal, links out, devices and truncation are refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from vremd.data.sources.archives import ArchiveError, check_archive, extract_archive, group_split_parts, split_base

FILES = {"posetrack_data/annotations/val/000001_mpii_test.json": b'{"images": []}',
         "posetrack_data/images/val/000001_mpii_test/000000.jpg": os.urandom(3000)}


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    """A tar archive of `members` ((TarInfo, bytes or None for links and folders)); tests/reliability uses it too."""
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _assert_extracted(target: Path) -> None:
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data


def _assert_nothing_left(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]  # no temp folder


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.xz", "w:xz")])
def test_tar_archives_extract(tmp_path, suffix, mode):
    archive = write_tar(tmp_path / f"a{suffix}", [_file(n, d) for n, d in FILES.items()], mode)
    assert check_archive(archive) == sum(len(d) for d in FILES.values())
    assert extract_archive(archive, tmp_path / "out") == tmp_path / "out"
    _assert_extracted(tmp_path / "out")


def test_zip_extracts(tmp_path):
    archive = _zip(tmp_path / "a.zip", FILES)
    extract_archive(archive, tmp_path / "out")
    _assert_extracted(tmp_path / "out")


def test_in_tree_symlink_is_allowed(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", [_file("d/real.txt", b"hi"), _link("d/alias.txt", "real.txt")])
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out/d/alias.txt").read_bytes() == b"hi"


@pytest.mark.parametrize("member,needle", [
    (_file("../evil.txt", b"x"), "escapes the target"),
    (_file("ok/../../evil.txt", b"x"), "escapes the target"),
    (_file("/tmp/evil.txt", b"x"), "absolute path"),
    (_link("d/out", "../../outside"), "symlink"),
    (_link("d/abs", "/etc/passwd"), "symlink"),
    (_link("d/hard", "../outside", tarfile.LNKTYPE), "hard link"),
])
def test_unsafe_tar_members_are_refused(tmp_path, member, needle):
    archive = write_tar(tmp_path / "bad.tar.gz", [_file("fine.txt", b"fine"), member])
    target = tmp_path / "sub" / "out"
    with pytest.raises(ArchiveError, match=needle) as err:
        extract_archive(archive, target)
    assert "bad.tar.gz" in str(err.value)
    _assert_nothing_left(tmp_path, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()


def test_device_member_is_refused(tmp_path):
    dev = tarfile.TarInfo("dev/null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    archive = write_tar(tmp_path / "dev.tar", [(dev, None)], "w")
    with pytest.raises(ArchiveError, match="device"):
        extract_archive(archive, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name,needle", [("../evil.txt", "escapes"), ("/abs/evil.txt", "absolute"),
                                         ("a\\..\\..\\evil.txt", "escapes")])
def test_zip_slip_is_refused(tmp_path, name, needle):
    archive = _zip(tmp_path / "slip.zip", {"fine.txt": b"ok", name: b"evil"})
    with pytest.raises(ArchiveError, match=needle):
        extract_archive(archive, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("d/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(ArchiveError, match="symlink"):
        extract_archive(archive, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name,mode", [("t.tar.gz", "w:gz"), ("t.tar", "w"), ("t.zip", None)])
def test_truncated_archive_gives_clear_error(tmp_path, name, mode):
    big = {"a/big.bin": os.urandom(200_000), "a/b.bin": os.urandom(50_000)}
    full = _zip(tmp_path / "full.zip", big) if mode is None else \
        write_tar(tmp_path / f"full{name[1:]}", [_file(n, d) for n, d in big.items()], mode)
    archive = tmp_path / name
    archive.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt") as err:
        extract_archive(archive, tmp_path / "out")
    assert str(archive) in str(err.value)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_existing_target_is_left_alone(tmp_path):
    archive = _zip(tmp_path / "a.zip", FILES)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_archive(archive, target)
    assert (target / "keep.txt").read_text() == "mine" and len(list(target.iterdir())) == 1


def test_unknown_suffix_is_refused(tmp_path):
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="not a supported archive"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out")


def _split(archive: Path, pieces: int) -> list[Path]:
    data = archive.read_bytes()
    step = -(-len(data) // pieces)
    out = []
    for i in range(pieces):
        part = archive.with_name(f"{archive.name}.a{'abcdefgh'[i]}")
        part.write_bytes(data[i * step:(i + 1) * step])
        out.append(part)
    archive.unlink()
    return out


def test_split_tar_parts_are_joined(tmp_path):
    parts = _split(write_tar(tmp_path / "images.tar.gz", [_file(n, d) for n, d in FILES.items()]), 3)
    other = _zip(tmp_path / "labels.zip", {"x.txt": b"x"})
    assert group_split_parts([other, *parts]) == [[other], parts]
    assert split_base(parts[1]) == "images.tar.gz" and split_base(other) is None
    extract_archive(parts, tmp_path / "out")
    _assert_extracted(tmp_path / "out")


def test_split_tar_with_missing_part_or_bad_member_is_refused(tmp_path):
    parts = _split(write_tar(tmp_path / "a.tar.gz", [_file("a/big.bin", os.urandom(100_000))]), 3)
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        extract_archive(parts[:2], tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")
    bad = _split(write_tar(tmp_path / "b.tar", [_file("ok.txt", b"1"), _file("../evil.txt", b"x")], "w"), 2)
    with pytest.raises(ArchiveError, match="escapes the target"):
        extract_archive(bad, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_larger_than_the_cap_is_refused_before_writing(tmp_path):
    """A zip bomb: 64 MiB of zeros deflate to about 64 KiB; the declared total is checked against the cap."""
    bomb = _zip(tmp_path / "bomb.zip", {"posetrack_data/zeros.bin": bytes(64 * 2**20)})
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ArchiveError, match=r"bomb\.zip: members add up to 67108864 bytes uncompressed, more than "
                                           r"the 33554432-byte cap"):
        extract_archive(bomb, tmp_path / "out", max_bytes=32 * 2**20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]  # nothing extracted, no temp folder left
    assert (extract_archive(bomb, tmp_path / "out", max_bytes=64 * 2**20) / "posetrack_data" / "zeros.bin").stat().st_size \
        == 64 * 2**20


# ------------------------------------------------------------------ one cap for zip and tar, counted while writing


def _zeros_tar_gz(path: Path, size: int) -> Path:
    """A real .tar.gz whose one member is `size` zero bytes: 64 MiB compress to about 65 KB."""
    return write_tar(path, [_file("posetrack_data/zeros.bin", bytes(size)), _file("posetrack_data/after.txt", b"x")])


def test_a_tar_gz_bomb_is_stopped_at_the_cap_while_streaming(tmp_path):
    bomb = _zeros_tar_gz(tmp_path / "bomb.tar.gz", 64 * 2**20)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match=r"bomb\.tar\.gz: member 'posetrack_data/zeros\.bin' takes the extracted "
                                           r"total to at least \d+ bytes uncompressed, more than the 8388608-byte cap"):
        extract_archive(bomb, tmp_path / "out", max_bytes=8 * 2**20)
    _assert_nothing_left(tmp_path, tmp_path / "out")
    out = extract_archive(bomb, tmp_path / "out", max_bytes=64 * 2**20 + 1)  # the cap counts every member
    assert (out / "posetrack_data" / "zeros.bin").stat().st_size == 64 * 2**20


def test_split_tar_parts_are_capped_too(tmp_path):
    parts = _split(_zeros_tar_gz(tmp_path / "images.tar.gz", 16 * 2**20), 2)
    with pytest.raises(ArchiveError, match=r"images\.tar\.gz\.aa\.\.images\.tar\.gz\.ab: member .* more than the "
                                           r"4194304-byte cap"):
        extract_archive(parts, tmp_path / "out", max_bytes=4 * 2**20)
    _assert_nothing_left(tmp_path, tmp_path / "out")


def _understated(path: Path, data: bytes, declared: int) -> Path:
    """A tar whose first member holds `data` but whose header declares `declared` bytes, then a second member."""
    write_tar(path, [_file("a/big.bin", data), _file("a/after.txt", b"after")], mode="w")
    raw = bytearray(path.read_bytes())
    raw[124:136] = b"%011o\0" % declared  # ustar size field
    raw[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("fill", [b"x", b"\0"], ids=["data", "zeros"])
def test_a_tar_header_that_understates_its_size_is_refused(tmp_path, fill):
    """tarfile reads the declared 10 bytes, then meets the member's own data where the next header should be
    and ends the archive there without a word (the zeros even look like the end-of-archive block): the later
    member would be silently missing."""
    archive = _understated(tmp_path / "lies.tar", fill * 2**20, declared=10)
    with pytest.raises(ArchiveError, match=r"lies\.tar: truncated or corrupt archive .*understates its size"):
        extract_archive(archive, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")


def test_a_tar_without_its_end_of_archive_block_is_refused(tmp_path):
    full = write_tar(tmp_path / "full.tar", [_file("a/one.bin", os.urandom(1024)), _file("a/two.bin", b"2")], "w")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[:512 + 1024])  # the first member whole, nothing after it
    with pytest.raises(ArchiveError, match=r"cut\.tar: truncated or corrupt archive .*without the end-of-archive"):
        extract_archive(cut, tmp_path / "out")
    _assert_nothing_left(tmp_path, tmp_path / "out")
