"""An index meets a model only when its crops are cut as the model's config says (issue 32, item 9).

Before: `evaluate` compared only the crop size, so a checkpoint trained on 1.25-enlarged boxes scored an index
cut with `crops.enlarge=1.5` (AP 0.3 -> 0.0, no warning); train, pretrain, reproduce and the ablation's trials
did not compare the settings at all. Now the crops stage records its settings in the manifest, preprocess copies
them into every index file, and `check_index_fits` refuses a mismatch naming both files and both values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from tests.predict.predict_fixtures import save_smoke_checkpoint
from vremd.ablation.grid import build_grid, check_inputs, load_tables
from vremd.config import ConfigError, smoke_config
from vremd.data.crop_settings import crop_settings, read_crop_settings
from vremd.data.index import rebase_index
from vremd.data.index_check import check_index_fits

REPO = Path(__file__).resolve().parents[2]


def _with_crops(cfg, **changes):
    return dataclasses.replace(cfg, crops=dataclasses.replace(cfg.crops, **changes))


@pytest.fixture(scope="module")
def wide(build_smoke_data, tmp_path_factory):
    """The smoke data cut with crops.enlarge = 1.5 (the smoke config's is 1.25): same size, other crops."""
    return build_smoke_data(tmp_path_factory.mktemp("wide"), _with_crops(smoke_config(), enlarge=1.5))


def test_the_index_records_the_settings_its_crops_were_cut_with(smoke_data, wide, tmp_path):
    assert read_crop_settings(smoke_data.crops / "manifest.parquet") == crop_settings(smoke_config().crops)
    for split in ("train", "val"):
        assert read_crop_settings(smoke_data.index / f"{split}.parquet") == crop_settings(smoke_config().crops)
        assert read_crop_settings(wide.index / f"{split}.parquet")["enlarge"] == 1.5
    moved = rebase_index(smoke_data.index / "val.parquet", tmp_path / "elsewhere" / "val.parquet")
    assert read_crop_settings(moved) == crop_settings(smoke_config().crops)  # the pretrain stage's copy keeps them


def test_every_setting_the_model_sees_is_compared(smoke_data):
    index = smoke_data.index / "val.parquet"
    check_index_fits(index, smoke_config(), "the smoke config")  # the same settings: accepted
    check_index_fits(index, _with_crops(smoke_config(), workers=2, min_box_px=9.0), "x")  # no change to the pixels
    with pytest.raises(ConfigError) as raised:
        check_index_fits(index, _with_crops(smoke_config(), jpeg_quality=0, enlarge=1.3), "model.pt")
    message = str(raised.value)
    assert message.startswith(f"{index} holds crops cut with crops.enlarge = 1.25, crops.jpeg_quality = 95, "
                              "but model.pt has crops.enlarge = 1.3, crops.jpeg_quality = 0")
    assert "\n" not in message


def test_evaluate_refuses_a_checkpoint_on_crops_enlarged_otherwise(wide, write_params, tmp_path, capsys):
    from pipeline import evaluate

    ckpt = save_smoke_checkpoint(tmp_path / "final.pt")  # trained (here: built) with crops.enlarge = 1.25
    params = write_params(tmp_path)
    rc = evaluate.main(["--params", str(params), "--model", str(ckpt), "--index", str(wide.index), "--raw",
                        str(wide.raw), "--out", str(tmp_path / "reports"), "--metrics", str(tmp_path / "ap.json"),
                        "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err  # before: scored, exit 0
    assert err == (f"evaluate: error: {wide.index / 'val.parquet'} holds crops cut with crops.enlarge = 1.5, but "
                   f"{ckpt} has crops.enlarge = 1.25: the model would see other crops than its config says; cut "
                   "the crops with the same settings (pipeline/crops.py, pipeline/preprocess.py) or use a matching "
                   "index\n")
    assert not (tmp_path / "ap.json").exists() and not (tmp_path / "reports").exists()


def test_train_refuses_an_index_cut_otherwise_before_any_run(wide, write_params, tmp_path, capsys, monkeypatch):
    from pipeline import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_params(tmp_path)
    rc = train.main(["--params", str(params), "--index", str(wide.index), "--raw", str(wide.raw), "--out",
                     str(tmp_path / "models"), "--storage", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "crops.enlarge = 1.5, but the model of" in err and "has crops.enlarge = 1.25" in err, err
    assert not any((tmp_path / name).exists() for name in ("mlflow.db", "runs", "models"))


def test_an_index_of_an_older_checkout_is_refused(smoke_data, tmp_path):
    old = rebase_index(smoke_data.index / "val.parquet", tmp_path / "val.parquet")
    pd.read_parquet(old).to_parquet(old, index=False)  # rewritten as before: no settings recorded
    with pytest.raises(ConfigError, match=r"val.parquet: records no crop settings .* dvc repro preprocess"):
        check_index_fits(old, smoke_config(), "models/final.pt")


def test_an_ablation_row_is_checked_against_its_index(wide):
    trials = build_grid(smoke_config(), load_tables(REPO / "experiments" / "ablations.yaml")[4], 1)
    with pytest.raises(ConfigError, match=r"crops.enlarge = 1.5, but table row 'baseline' \(seed 0\) has "):
        check_inputs(trials, str(wide.index), wide.raw)
