"""Fetching archives (local path, file://, local HTTP with resume), checksums, and the download stage end to end."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.download import main
from vremd.data.sources.download import MARKER, DownloadError, NetworkError, download_url, fetch, prepare_real
from vremd.data.posetrack import Frame, Person, Video, list_videos, read_video, validate_layout, write_video
from vremd.errors import InputError


# ---------------------------------------------------------------- fixtures: data, archives, server


def write_posetrack18(root: Path) -> dict[str, int]:
    """A tiny PoseTrack-2018 tree under `root/posetrack_data`: one 3-frame video per split, 1 person a frame."""
    data = root / "posetrack_data"
    for number, split, suffix in ((1, "train", "train"), (2, "val", "test")):
        name = f"{number:06d}_mpii_{suffix}"
        frames = []
        for i in range(3):
            file_name = f"images/{split}/{name}/{i:06d}.jpg"
            (data / file_name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data / file_name), np.full((40, 56, 3), 30 * i, np.uint8))
            keypoints = np.zeros((17, 3))
            keypoints[[0, 5, 6], :] = [[20, 10, 1], [15, 20, 1], [30, 20, 1]]
            person = Person(track_id=0, person_id=i, keypoints=keypoints, bbox_xywh=(10, 5, 25, 30),
                            bbox_head_xywh=(15, 3, 10, 10))
            image_id = 10_000_000_000 + number * 10_000 + i
            frames.append(Frame(image_id=image_id, frame_index=i, file_name=file_name, is_labeled=True,
                                persons=(person,), ignore_regions=()))
        write_video(Video(name=name, split=split, json_path=Path(), frames=tuple(frames)),
                    data / "annotations" / split / f"{name}.json")
    return {"videos": 1, "frames": 3, "persons": 3}


def pack(src: Path, archive: Path, only: str = "") -> Path:
    """Pack every file under `src` whose relative path contains `only` as .tar.gz or .zip."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and only in p.relative_to(src).as_posix())
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zf:
            for p in files:
                zf.write(p, p.relative_to(src).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for p in files:
                tar.add(p, p.relative_to(src).as_posix())
    return archive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of `server.root` with Range support; records (path, Range) of every request.

    `server.cut_first` cuts the first response to a path after half its body (a dropped connection).
    """

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "not here")
            return
        body = path.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if self.path in server.cut_first:
            server.cut_first.discard(self.path)
            chunk = chunk[: len(chunk) // 2]
        self.wfile.write(chunk)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path):
    """A ThreadingHTTPServer on 127.0.0.1 (random port) serving tmp_path/www, shut down after the test."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.root, httpd.log, httpd.cut_first = root, [], set()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def blob(path: Path, size: int = 300_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# ---------------------------------------------------------------- fetching


def test_local_path_and_file_url_are_used_in_place(tmp_path):
    src = blob(tmp_path / "dir with space" / "a.tar.gz")
    cache = tmp_path / "cache"
    for source in (str(src), src.as_uri()):
        got = fetch(source, cache, expected_sha256=sha256(src).upper(), progress=False)
        assert got.path == src and got.sha256 == sha256(src)
    with pytest.raises(DownloadError, match="no such local archive"):
        fetch(str(tmp_path / "missing.zip"), cache, progress=False)


def test_http_download_resumes_a_part_file(tmp_path, server):
    src = blob(server.root / "pack.tar.gz")
    cache = tmp_path / "cache"
    cache.mkdir()
    half = src.stat().st_size // 2
    (cache / "pack.tar.gz.part").write_bytes(src.read_bytes()[:half])
    got = fetch(f"{server.url}/pack.tar.gz", cache, expected_sha256=sha256(src), progress=False)
    assert got.path == cache / "pack.tar.gz" and got.path.read_bytes() == src.read_bytes()
    assert server.log == [("/pack.tar.gz", f"bytes={half}-")]
    assert not (cache / "pack.tar.gz.part").exists()
    fetch(f"{server.url}/pack.tar.gz", cache, progress=False)  # already complete: no request
    assert len(server.log) == 1


def test_dropped_connection_is_retried_from_where_it_stopped(tmp_path, server):
    src = blob(server.root / "a.zip")
    server.cut_first.add("/a.zip")
    path = download_url(f"{server.url}/a.zip", tmp_path / "cache", progress=False, retry_wait_s=0)
    assert path.read_bytes() == src.read_bytes()
    assert server.log == [("/a.zip", None), ("/a.zip", f"bytes={src.stat().st_size // 2}-")]


def test_a_network_that_keeps_failing_is_an_os_error_not_an_input_error(tmp_path, server):
    blob(server.root / "a.zip")
    server.cut_first.add("/a.zip")
    with pytest.raises(NetworkError, match=r"/a\.zip: download failed after 1 attempts .*is kept") as err:
        download_url(f"{server.url}/a.zip", tmp_path / "cache", progress=False, retries=1, retry_wait_s=0)
    assert isinstance(err.value, OSError) and not isinstance(err.value, InputError)  # the input may be right
    assert isinstance(DownloadError("x"), InputError)  # a bad URL, a 404 or a wrong sha256 is


def test_stale_part_larger_than_the_file_is_restarted(tmp_path, server):
    src = blob(server.root / "a.zip", 1000)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "a.zip.part").write_bytes(b"x" * 5000)
    path = download_url(f"{server.url}/a.zip", tmp_path / "cache", progress=False, retry_wait_s=0)
    assert path.read_bytes() == src.read_bytes()
    assert server.log == [("/a.zip", "bytes=5000-"), ("/a.zip", None)]  # 416, then from the start


def test_http_404_is_a_clear_error(tmp_path, server):
    with pytest.raises(DownloadError, match=r"/nothing\.zip: HTTP 404"):
        fetch(f"{server.url}/nothing.zip", tmp_path / "cache", progress=False)


def test_wrong_checksum_names_file_expected_and_found(tmp_path):
    src = blob(tmp_path / "a.zip")
    with pytest.raises(DownloadError) as err:
        fetch(str(src), tmp_path / "cache", expected_sha256="ab" * 32, progress=False)
    assert str(src) in str(err.value) and "ab" * 32 in str(err.value) and sha256(src) in str(err.value)
    assert src.exists()


# ---------------------------------------------------------------- the stage, end to end


@pytest.fixture
def run_stage(write_params, tmp_path, capsys):
    """`run_stage(data) -> (exit code, stdout, stderr)`: the stage in tmp_path with `data` as the profile's data."""

    def run(data: dict) -> tuple[int, str, str]:
        params = write_params(tmp_path, {"data": data}, profile="t")
        rc = main(["--params", str(params), "--out", str(tmp_path / "raw"), "--cache", str(tmp_path / "downloads"),
                   "--no-progress"])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def test_posetrack18_archives_over_http_end_to_end(run_stage, tmp_path, server):
    write_posetrack18(tmp_path / "src")
    annotations = pack(tmp_path / "src", server.root / "annotations.zip", only="annotations/")
    images = pack(tmp_path / "src", server.root / "images.tar.gz", only="images/")
    data = {"source": "posetrack18", "urls": [f"{server.url}/annotations.zip", f"{server.url}/images.tar.gz"],
            "sha256": [sha256(annotations), sha256(images)]}
    rc, out, err = run_stage(data)
    assert rc == 0, err
    assert "not verified" not in err  # both archives had a sha256
    dataset = tmp_path / "raw" / "posetrack18"
    validate_layout(dataset)
    assert "train 1 videos, 3 frames, 3 labeled frames, 3 persons" in out
    video = read_video(list_videos(dataset, "val")[0])
    assert video.name == "000002_mpii_test" and len(video.frames) == 3
    assert (dataset / MARKER).is_file()
    assert not list((tmp_path / "raw").glob(".posetrack18*"))  # no staging or build folders left

    requests = len(server.log)
    start = time.perf_counter()
    rc, out, _ = run_stage(data)
    assert rc == 0 and "up to date" in out and len(server.log) == requests
    assert time.perf_counter() - start < 2.0


def test_wrong_checksum_keeps_the_existing_dataset(run_stage, tmp_path, server):
    write_posetrack18(tmp_path / "src")
    archive = pack(tmp_path / "src", server.root / "all.tar.gz")
    good = {"source": "posetrack18", "urls": [f"{server.url}/all.tar.gz"], "sha256": [sha256(archive)]}
    assert run_stage(good)[0] == 0
    dataset = tmp_path / "raw" / "posetrack18"
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))

    pack(tmp_path / "src", archive, only="annotations/")  # the served archive changes
    (tmp_path / "downloads" / "all.tar.gz").unlink()
    bad = {**good, "urls": [f"{server.url}/all.tar.gz"], "sha256": [sha256(archive)[::-1]]}
    rc, _, err = run_stage(bad)
    assert rc == 1
    assert "sha256 mismatch" in err and sha256(archive)[::-1] in err and sha256(archive) in err
    assert "all.tar.gz" in err
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    assert not (tmp_path / "downloads" / "extracted" / "posetrack18").exists()  # nothing was extracted


def test_truncated_archive_fails_clearly_and_leaves_no_dataset(run_stage, tmp_path):
    write_posetrack18(tmp_path / "src")
    full = pack(tmp_path / "src", tmp_path / "full.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    rc, _, err = run_stage({"source": "posetrack18", "urls": [str(cut)]})
    assert rc == 1 and "cut.tar.gz: truncated or corrupt archive" in err
    assert not (tmp_path / "raw" / "posetrack18").exists()


def test_archive_without_the_layout_lists_what_is_missing(run_stage, tmp_path):
    write_posetrack18(tmp_path / "src")
    only_annotations = pack(tmp_path / "src", tmp_path / "ann.zip", only="annotations/")
    rc, _, err = run_stage({"source": "posetrack21", "urls": [only_annotations.as_uri()]})
    assert rc == 1
    assert f"{tmp_path / 'raw' / 'posetrack21'} (from posetrack21 archives): layout: 2 problem(s)" in err
    assert "images/train/000001_mpii_train/: image folder referenced by 000001_mpii_train.json is missing" in err
    assert "images/val/000002_mpii_test/" in err
    assert [p.name for p in (tmp_path / "raw").iterdir()] == []  # the temporary build was removed


def test_sha256_count_must_match_urls(run_stage):
    rc, _, err = run_stage({"source": "posetrack18", "urls": ["a.zip", "b.zip"], "sha256": ["00"]})
    assert rc == 1 and "data.sha256: expected 2 digests" in err
    rc, _, err = run_stage({"source": "posetrack18"})
    assert rc == 1 and "data.urls: no archive" in err


def test_synthetic_source_is_generated_atomically_and_skipped_when_done(run_stage, tmp_path):
    synthetic = {"seed": 3, "train_videos": 1, "val_videos": 1, "min_frames": 6, "max_frames": 6,
                 "image_height": 96, "image_width": 128, "max_people": 2, "unlabeled_fraction": 0.0}
    rc, out, err = run_stage({"source": "synthetic", "synthetic": synthetic})
    assert rc == 0, err
    dataset = tmp_path / "raw" / "synthetic"
    validate_layout(dataset)
    assert "train 1 videos, 6 frames" in out and "val   1 videos, 6 frames" in out
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["synthetic"]  # no build folder left
    stamp = (dataset / MARKER).stat().st_mtime_ns
    rc, out, _ = run_stage({"source": "synthetic", "synthetic": synthetic})
    assert rc == 0 and "up to date" in out and (dataset / MARKER).stat().st_mtime_ns == stamp
    rc, out, _ = run_stage({"source": "synthetic", "synthetic": {**synthetic, "seed": 4}})
    assert rc == 0 and "built" in out and (dataset / MARKER).stat().st_mtime_ns != stamp


def test_prepare_real_reuses_cache_after_the_output_is_removed(tmp_path, server):
    write_posetrack18(tmp_path / "src")
    archive = pack(tmp_path / "src", server.root / "all.zip")
    dataset = tmp_path / "raw" / "posetrack18"
    url = f"{server.url}/all.zip"
    assert prepare_real("posetrack18", (url,), (), dataset, tmp_path / "cache", progress=False)
    assert not prepare_real("posetrack18", (url,), (), dataset, tmp_path / "cache", progress=False)
    shutil.rmtree(dataset)
    assert prepare_real("posetrack18", (url,), (), dataset, tmp_path / "cache", progress=False)
    assert len(server.log) == 1  # the rebuild came from the cache
    validate_layout(dataset)
    (dataset / "images/val/000002_mpii_test/000001.jpg").unlink()  # a damaged tree is rebuilt
    assert prepare_real("posetrack18", (url,), (), dataset, tmp_path / "cache", progress=False)
    validate_layout(dataset)
    assert (tmp_path / "cache" / "all.zip").read_bytes() == archive.read_bytes()


def test_failed_synthetic_run_leaves_the_old_dataset_and_no_debris(run_stage, tmp_path):
    synthetic = {"seed": 3, "train_videos": 1, "val_videos": 1, "min_frames": 6, "max_frames": 6,
                 "image_height": 96, "image_width": 128, "max_people": 2}
    assert run_stage({"source": "synthetic", "synthetic": synthetic})[0] == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "raw").rglob("*"))
    rc, _, err = run_stage({"source": "synthetic", "synthetic": {**synthetic, "image_height": 8}})
    assert rc == 1 and "data.synthetic" in err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "raw").rglob("*")) == before


def test_posetrack21_layout_is_recognised(run_stage, tmp_path):
    write_posetrack18(tmp_path / "src")
    src21 = tmp_path / "src21"
    shutil.copytree(tmp_path / "src" / "posetrack_data" / "images", src21 / "images")
    shutil.copytree(tmp_path / "src" / "posetrack_data" / "annotations", src21 / "posetrack_data")
    archive = pack(src21, tmp_path / "pt21.tar.gz")
    rc, out, err = run_stage({"source": "posetrack21", "urls": [str(archive)]})
    assert rc == 0, err
    validate_layout(tmp_path / "raw" / "posetrack21")
    assert "val   1 videos, 3 frames" in out


def test_split_image_archive_over_http_is_joined(run_stage, tmp_path, server):
    write_posetrack18(tmp_path / "src")
    labels = pack(tmp_path / "src", server.root / "labels.tar.gz", only="annotations/")
    images = pack(tmp_path / "src", tmp_path / "images.tar", only="images/")
    data, third = images.read_bytes(), -(-images.stat().st_size // 3)
    names = [f"images.tar.a{c}" for c in "abc"]
    for i, name in enumerate(names):
        (server.root / name).write_bytes(data[i * third:(i + 1) * third])
    urls = [f"{server.url}/{n}" for n in names] + [f"{server.url}/labels.tar.gz"]
    rc, out, err = run_stage({"source": "posetrack18", "urls": urls})
    assert rc == 0, err
    validate_layout(tmp_path / "raw" / "posetrack18")
    assert sorted(p for p, _ in server.log) == sorted(f"/{n}" for n in names + ["labels.tar.gz"])
    assert labels.is_file()


def test_two_urls_with_the_same_file_name_are_refused(run_stage):
    urls = ["http://127.0.0.1:9/train/labels.zip", "http://127.0.0.1:9/val/labels.zip"]
    rc, _, err = run_stage({"source": "posetrack18", "urls": urls})
    assert rc == 1 and "would both be cached as labels.zip" in err


def test_archive_without_sha256_says_so_in_one_line(run_stage, tmp_path):
    write_posetrack18(tmp_path / "src")
    archive = pack(tmp_path / "src", tmp_path / "posetrack18.zip")
    rc, _, err = run_stage({"source": "posetrack18", "urls": [str(archive)]})
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "not verified" in line]
    assert lines == [f"download: posetrack18.zip: no sha256 given in data.sha256, not verified "
                     f"(its sha256 is {sha256(archive)})"]
