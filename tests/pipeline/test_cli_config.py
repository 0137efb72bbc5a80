"""Every stage CLI loads its config first: a value out of range (`--set` or params.yaml) ends the command with one
error line naming the key, before anything is written: no MLflow store, no models/ or ray_results/ folder, no
output file. Before (issue 32): `train.num_workers=-1` and `train.lr=-1` failed with a traceback after the MLflow
run was opened; `train.batch_size=0` trained at batch 1 and recorded 0."""

from __future__ import annotations

import importlib

import pytest

STAGES = {  # stage script -> its arguments besides the config options (as dvc.yaml runs it)
    "download": ["--out", "data/raw"],
    "detect": ["--raw", "data/raw", "--out", "detections/detected/val.json", "--no-progress"],
    "crops": ["--raw", "data/raw", "--out", "data/crops"],
    "pretrain": ["--index", "data/index", "--raw", "data/raw", "--out", "pretrain", "--no-progress"],
    "weights": ["--manifest", "weights/manifest.json", "--cache", "data/downloads", "--no-progress"],
    "train": ["--index", "data/index", "--raw", "data/raw", "--out", "models", "--no-progress"],
    "evaluate": ["--model", "models/final.pt", "--index", "data/index", "--raw", "data/raw", "--out", "reports",
                 "--metrics", "metrics/ap.json", "--no-progress"],
    "ablate": ["--table", "6", "--seeds", "2"],
}


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: expected an integer >= 1, found 0"),
    ("train.num_workers=-1", "train.num_workers: expected an integer >= 0, found -1"),
    ("augment.scale_min=2", "augment.scale_min 2.0 is greater than augment.scale_max 1.35"),
])
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_value_out_of_range_stops_the_stage_before_it_writes(stage, override, message, write_params, tmp_path,
                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, profile="demo")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = importlib.import_module(f"pipeline.{stage}").main([*STAGES[stage], "--set", override])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith(f"{stage}: error: params.yaml (profile demo): {message}"), err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no mlflow.db, models/, ...
