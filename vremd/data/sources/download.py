"""Fetch dataset archives and turn them (or the synthetic generator's output) into data/raw/<source>.

Fetching: http(s) URLs, file:// URLs or local paths (relative to the working directory).
HTTP downloads go to `<cache>/<name>.part`, resume with a `Range` request after an interruption
and are renamed to `<cache>/<name>` only when complete (size checked against the server's).
Local archives are used where they lie. A verified sha256 is remembered in
`<cache>/<name>.sha256.json` (keyed by path, size and mtime) so a re-run does not hash gigabytes again.

Building: `prepare_real` verifies every archive before extracting any, extracts safely,
converts PoseTrack2017, validates, and swaps the finished tree into place; `prepare_synthetic`
generates into a temporary folder and swaps it in. Both write a marker recording their inputs,
so a re-run with the same inputs and an intact tree does nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from vremd.atomic import atomic_write_text, replace_dir, temp_dir_beside
from vremd.config import SyntheticConfig
from vremd.data.sources.archives import extract_archive, group_split_parts, link_or_copy
from vremd.data.posetrack import SPLITS, PoseTrackFormatError, list_videos, read_video, validate_layout
from vremd.data.sources.posetrack17 import convert_posetrack17
from vremd.data.synthetic.generate import generate_dataset
from vremd.errors import InputError

CHUNK_BYTES = 1 << 20


class DownloadError(InputError):
    """A source cannot be used: bad URL or scheme, HTTP error (404...), missing local file, sha256 mismatch."""


class NetworkError(OSError):
    """The network kept failing after every retry: not the input's fault, so an `OSError` (retry later)."""


@dataclass(frozen=True)
class Fetched:
    """One archive on local disk: where it came from, where it is and its verified digest."""

    source: str
    path: Path
    sha256: str


def is_remote(source: str) -> bool:
    """True for http:// and https:// sources."""
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    """The file a local source names: a `file://` URL or a plain path."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise DownloadError(f"{source}: unsupported URL scheme {parts.scheme!r}, expected http, https, file or a path")
    return Path(source).expanduser()


def cache_name(source: str) -> str:
    """File name of a remote source in the cache: the last path component of the URL."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path)).name
    if not name:
        raise DownloadError(f"{source}: URL has no file name to store the download under")
    return name


def sha256_file(path: Path, progress: bool = True) -> str:
    """Hex sha256 of a file, with a byte progress bar."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      desc=f"sha256 {path.name}", disable=not progress, leave=False) as bar:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _digest_record(path: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{path.name}.sha256.json"


def cached_sha256(path: Path, cache_dir: Path, progress: bool = True) -> str:
    """sha256 of `path`, reusing the digest recorded for the same path, size and mtime."""
    st = path.stat()
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    record = _digest_record(path, cache_dir)
    try:
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path, progress)
    atomic_write_text(record, json.dumps({**key, "sha256": digest}))
    return digest


def _total_size(response, offset: int) -> int | None:
    """Full size of the resource from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _download_once(url: str, part: Path, progress: bool, timeout_s: float) -> int | None:
    """Append the rest of `url` to `part` (resuming from its size); returns the expected total size."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vremd-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # range not satisfiable: the .part is complete if the server's size equals it, else stale
        total = exc.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit() and int(total) == offset:
            return offset
        part.unlink()
        return _download_once(url, part, progress, timeout_s)
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        total = _total_size(response, offset)
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
            disable=not progress,
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    return total


def download_url(url: str, cache_dir: Path, progress: bool = True, retries: int = 4,
                 timeout_s: float = 60.0, retry_wait_s: float = 2.0) -> Path:
    """Download `url` into `cache_dir/<name>` (kept as `<name>.part` until complete, resumed on retry).

    A dropped connection is retried `retries` times, each resuming where the last stopped,
    waiting `retry_wait_s` times the attempt number in between. HTTP errors such as 404 fail at once.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / cache_name(url)
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            total = _download_once(url, part, progress, timeout_s)
            size = part.stat().st_size
            if total is None or size == total:
                break
            problem = f"connection closed after {size} of {total} bytes"
            if size > total:  # a stale .part of some other file: start over
                part.unlink()
                problem = f"{part} was larger ({size} bytes) than the file ({total} bytes)"
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            problem = repr(exc)
        if attempt == retries:
            kept = f"; the partial file {part} is kept and resumed next time" if part.exists() else ""
            raise NetworkError(f"{url}: download failed after {retries} attempts ({problem}){kept}")
        time.sleep(retry_wait_s * attempt)
    os.replace(part, dest)
    return dest


def fetch(source: str, cache_dir: Path, expected_sha256: str = "", progress: bool = True,
          sha256_key: str | None = "data.sha256") -> Fetched:
    """Make `source` available on local disk and verify its sha256 when one is expected.

    Raises DownloadError naming the file, the expected and the found digest on a mismatch; the
    file is left in place (fix `sha256_key` or delete the file to download it again). Without an expected
    digest one line says the file is unverified, naming `sha256_key`; None: the caller verifies and says so.
    """
    cache_dir = Path(cache_dir)
    if is_remote(source):
        path = download_url(source, cache_dir, progress)
    else:
        path = local_path(source)
        if not path.is_file():
            raise DownloadError(f"{source}: no such local archive {path}")
    digest = cached_sha256(path, cache_dir, progress)
    expected = expected_sha256.strip().lower()
    if not expected and sha256_key is not None:  # one line, so an unverified archive never passes unnoticed
        print(f"download: {path.name}: no sha256 given in {sha256_key}, not verified (its sha256 is {digest})",
              file=sys.stderr, flush=True)
    elif expected and digest != expected:
        raise DownloadError(
            f"{path}: sha256 mismatch for {source}: expected {expected}, found {digest}. "
            f"Nothing was extracted; fix {sha256_key or 'the expected sha256'} or delete the file to download it again."
        )
    return Fetched(source=source, path=path, sha256=digest)


def fetch_all(sources: tuple[str, ...], sha256s: tuple[str, ...], cache_dir: Path,
              progress: bool = True) -> list[Fetched]:
    """Fetch and verify every source; `sha256s` is empty or has one digest per source."""
    if sha256s and len(sha256s) != len(sources):
        raise DownloadError(f"data.sha256: expected {len(sources)} digests (one per data.urls entry) "
                            f"or none, found {len(sha256s)}")
    if not sources:
        raise DownloadError("data.urls: no archive URLs or paths given for a real dataset; "
                            "list the PoseTrack archives you are licensed to use in params.yaml")
    seen: dict[str, str] = {}
    for source in filter(is_remote, sources):
        if (name := cache_name(source)) in seen:
            raise DownloadError(f"data.urls: {seen[name]} and {source} would both be cached as {name}; "
                                "rename one or download it yourself and list the local path")
        seen[name] = source
    return [fetch(s, cache_dir, sha256s[i] if sha256s else "", progress) for i, s in enumerate(sources)]


# ---------------------------------------------------------------------------------------------
# from verified archives (or the synthetic generator) to data/raw/<source>

MARKER = ".download.json"  # inside data/raw/<source>: what the folder was built from


def _read_marker(dataset_dir: Path) -> dict | None:
    try:
        return json.loads((dataset_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _find_dirs(root: Path, name: str, max_depth: int = 4) -> list[Path]:
    """Folders called `name` under `root`, at most `max_depth` levels down, sorted."""
    found = []
    for current, dirs, _files in os.walk(root):
        depth = len(Path(current).relative_to(root).parts)
        if depth >= max_depth:
            dirs[:] = []
        found += [Path(current) / d for d in dirs if d == name]
    return sorted(found)


def _install_posetrack18(parts: list[Path], dest: Path) -> None:
    """Link the 2018/2021 trees' `images/<split>/` and annotation jsons into `dest`'s layout.

    PoseTrack18 keeps annotations in `annotations/<split>/`, PoseTrack21 in `posetrack_data/<split>/`.
    """
    for part in parts:
        for images in _find_dirs(part, "images"):
            for split in SPLITS:
                if (images / split).is_dir():
                    shutil.copytree(images / split, dest / "images" / split, copy_function=link_or_copy,
                                    dirs_exist_ok=True)
        for folder in _find_dirs(part, "annotations") + _find_dirs(part, "posetrack_data"):
            for split in SPLITS:
                for json_path in sorted((folder / split).glob("*.json")):
                    (dest / "annotations" / split).mkdir(parents=True, exist_ok=True)
                    link_or_copy(json_path, dest / "annotations" / split / json_path.name)


def _extract_all(fetched: list[Fetched], staging: Path) -> list[Path]:
    """Extract each archive (split tars joined) into its own folder under `staging`, once."""
    digest_of = {item.path: item.sha256 for item in fetched}
    parts = []
    for k, group in enumerate(group_split_parts([item.path for item in fetched])):
        key = hashlib.sha256("".join(digest_of[p] for p in group).encode()).hexdigest()[:16]
        part = staging / f"{k:02d}-{key}"  # named by content: a re-run after a failure reuses it
        if not part.exists():
            extract_archive(group, part)
        parts.append(part)
    return parts


def _is_built(dataset_dir: Path, wanted: dict) -> bool:
    """True when `dataset_dir` was built from `wanted` and still has every file it refers to."""
    if _read_marker(dataset_dir) != wanted:
        return False
    try:
        validate_layout(dataset_dir)
    except PoseTrackFormatError:
        return False
    return True


def prepare_real(source: str, urls: tuple[str, ...], sha256s: tuple[str, ...], dataset_dir: Path,
                 cache_dir: Path, progress: bool = True) -> bool:
    """Fetch, verify, extract (and for posetrack17 convert) archives into `dataset_dir`.

    Every archive is verified before anything is extracted, and `dataset_dir` is replaced only
    by a complete, validated tree. Extraction happens under `cache_dir/extracted/<name>` and
    files are hard-linked into place (copied across devices). Returns False when `dataset_dir`
    was already built from the same sources (nothing to do), True when it was (re)built.
    """
    dataset_dir, cache_dir = Path(dataset_dir), Path(cache_dir)
    wanted = {"source": source, "urls": list(urls), "sha256": [s.strip().lower() for s in sha256s]}
    if _is_built(dataset_dir, wanted):
        return False
    fetched = fetch_all(urls, sha256s, cache_dir, progress)
    staging = cache_dir / "extracted" / dataset_dir.name
    parts = _extract_all(fetched, staging)
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    build = temp_dir_beside(dataset_dir)
    try:
        if source == "posetrack17":
            roots = sorted({d.parent for p in parts for d in _find_dirs(p, "annotations") + _find_dirs(p, "images")})
            convert_posetrack17(roots, build, progress)
        else:
            _install_posetrack18(parts, build)
        try:
            validate_layout(build)
        except PoseTrackFormatError as exc:  # name the folder the user knows, not the temp one
            known = f"{dataset_dir} (from {source} archives)"
            raise PoseTrackFormatError(str(exc).replace(str(build), known)) from None
        (build / MARKER).write_text(json.dumps(wanted, indent=1))
        replace_dir(build, dataset_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return True


def prepare_synthetic(cfg: SyntheticConfig, dataset_dir: Path, progress: bool = True) -> bool:
    """Generate the synthetic dataset into `dataset_dir`, atomically.

    Returns False when `dataset_dir` already holds the dataset of the same config.
    """
    wanted = {"source": "synthetic", "synthetic": asdict(cfg)}
    if _is_built(dataset_dir, wanted):
        return False
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    build = temp_dir_beside(dataset_dir)
    try:
        generate_dataset(build, cfg, progress=progress)
        (build / MARKER).write_text(json.dumps(wanted, indent=1))
        replace_dir(build, dataset_dir)
    finally:
        for leftover in [build, *dataset_dir.parent.glob(f".{build.name}.*")]:  # the generator's own staging
            shutil.rmtree(leftover, ignore_errors=True)
    return True


def summarize(dataset_dir: Path) -> dict[str, dict[str, int]]:
    """`{split: {videos, frames, labeled_frames, persons}}` of a PoseTrack-layout dataset."""
    summary = {}
    for split in SPLITS:
        videos = [read_video(p, split) for p in list_videos(dataset_dir, split)]
        frames = [f for v in videos for f in v.frames]
        summary[split] = {"videos": len(videos), "frames": len(frames),
                          "labeled_frames": sum(f.is_labeled for f in frames),
                          "persons": sum(len(f.persons) for f in frames)}
    return summary
