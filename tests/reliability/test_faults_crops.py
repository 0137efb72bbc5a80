"""Fault: the `crops` stage is SIGKILLed midway; re-running it completes with outputs identical to an
uninterrupted run (shard bytes, per-video records, manifest and stats)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
import pandas as pd
import pytest

from pipeline import download
from reliability_fixtures import REPO, kill_group, stage_env, wait_for


def _crops_argv(root: Path, params: Path, out: str) -> list[str]:
    return [sys.executable, str(REPO / "pipeline" / "crops.py"), "--params", str(params), "--raw", str(root / "raw"),
            "--out", str(root / out), "--no-progress"]


def _digest(out: Path) -> dict[str, str]:
    """sha256 of every shard and record, keyed by path relative to the crops dir."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*/*")) if p.suffix in (".npy", ".json")}


@pytest.mark.slow
def test_killed_crops_stage_resumes_to_identical_outputs(write_params, tmp_path):
    params = write_params(tmp_path, data__synthetic__train_videos=14, data__synthetic__val_videos=6,
                          data__synthetic__min_frames=24, data__synthetic__max_frames=30,
                          data__synthetic__image_height=240, data__synthetic__image_width=320,
                          data__synthetic__max_people=4, crops__workers=1, crops__height=128, crops__width=96,
                          model__img_height=128, model__img_width=96)
    assert download.main(["--params", str(params), "--out", str(tmp_path / "raw"), "--no-progress"]) == 0
    n_videos = 20

    clean = subprocess.run(_crops_argv(tmp_path, params, "clean"), env=stage_env(), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(_crops_argv(tmp_path, params, "killed"), env=stage_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(list(out.glob("*/*.json"))) >= 3, proc, 120, "three finished videos")
    finally:
        kill_group(proc)
    done = len(list(out.glob("*/*.json")))
    assert proc.returncode == -9 and 3 <= done < n_videos, f"killed after {done} of {n_videos} videos"
    assert not (out / "manifest.parquet").exists()  # the stage really was interrupted

    rerun = subprocess.run(_crops_argv(tmp_path, params, "killed"), env=stage_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n_videos - done} video(s) extracted" in rerun.stdout or f"{n_videos - done + 1} video(s) extracted" in rerun.stdout
    assert not list(out.glob("*/*.tmp*")), "temp files of the killed run were left behind"
    assert _digest(out) == _digest(tmp_path / "clean")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(tmp_path / "clean" / "manifest.parquet"))
    stats = [orjson.loads((d / "stats.json").read_bytes())["splits"] for d in (out, tmp_path / "clean")]
    assert stats[0] == stats[1]
