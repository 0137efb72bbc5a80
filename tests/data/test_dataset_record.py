"""Crops manifests and index files record the dataset, split and crop settings they were cut from; `check_index`
refuses an index of another dataset or split, or one without a record, in one line naming both (the crop settings
against a model's: tests/data/test_index_check.py)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from vremd.data.crop_store import MANIFEST, STATS, read_manifest_record
from vremd.data.dataset_record import (DatasetRecordError, check_index, crop_settings, read_index_record,
                                       read_record, write_parquet)
from vremd.data.index import build_index, rebase_index
from vremd.errors import InputError


def test_crops_and_index_record_what_they_were_cut_from(smoke_data):
    crops = crop_settings(smoke_data.cfg.crops)
    assert "workers" not in crops and crops["enlarge"] == 1.25  # NEUTRAL: speed only
    assert read_manifest_record(smoke_data.crops) == {"format": 1, "source": "synthetic", "crops": crops,
                                                      "val_boxes": "gt"}
    for split in ("train", "val"):
        record = read_index_record(smoke_data.index / f"{split}.parquet")
        assert (record.source, record.split, record.crops, record.val_boxes) == ("synthetic", split, crops, "gt")
        assert check_index(smoke_data.index / f"{split}.parquet", "synthetic", split,
                           "params.yaml (profile smoke)") == record
    assert len(pd.read_parquet(smoke_data.index / "train.parquet")) > 0  # the rows read as before


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, InputError)
    return message


def test_an_index_of_another_dataset_or_split_is_refused_naming_both(smoke_data):
    train = smoke_data.index / "train.parquet"
    with pytest.raises(DatasetRecordError) as err:
        check_index(train, "posetrack17", "train", "trial 'baseline' (seed 0)")
    assert _one_line(err) == (f"{train}: holds synthetic train samples, but trial 'baseline' (seed 0) asks for "
                              "posetrack17 train; give it an index cut from posetrack17")
    with pytest.raises(DatasetRecordError, match=r"val\.parquet: holds synthetic val samples, but x asks for "
                                                 r"synthetic train"):
        check_index(smoke_data.index / "val.parquet", "synthetic", "train", "x")  # val copied as train


def test_an_older_index_or_crops_manifest_without_a_record_is_refused(smoke_data, tmp_path):
    old = tmp_path / "index" / "train.parquet"
    old.parent.mkdir()
    pd.read_parquet(smoke_data.index / "train.parquet").to_parquet(old, index=False)  # as the old stage wrote it
    with pytest.raises(DatasetRecordError) as err:
        check_index(old, "synthetic", "train", "params.yaml (profile demo)")
    assert _one_line(err) == (f"{old}: no record of the dataset it was cut from (an older preprocess stage wrote it), "
                              "but params.yaml (profile demo) asks for synthetic train; rebuild it: dvc repro "
                              "preprocess, or python pipeline/crops.py and pipeline/preprocess.py")
    write_parquet(pd.read_parquet(old), old, {"format": 2, "source": "synthetic", "split": "train"})
    with pytest.raises(DatasetRecordError, match=r"train\.parquet: record format 2, this code reads 1 \(another "
                                                 r"version of the preprocess stage wrote it\), but x asks for"):
        check_index(old, "synthetic", "train", "x")
    crops = tmp_path / "crops"
    crops.mkdir()
    shutil.copy(smoke_data.crops / STATS, crops)
    pd.read_parquet(smoke_data.crops / MANIFEST).to_parquet(crops / MANIFEST, index=False)
    with pytest.raises(DatasetRecordError, match=r"manifest\.parquet: no record of the dataset it was cut from \(an "
                                                 r"older crops stage wrote it\).*re-run it: dvc repro crops"):
        build_index(crops, tmp_path / "new-index")
    assert not (tmp_path / "new-index").exists()  # refused before anything is written


def test_a_rebased_or_rewritten_file_keeps_its_record(smoke_data, tmp_path):
    moved = rebase_index(smoke_data.index / "val.parquet", tmp_path / "elsewhere" / "val.parquet")
    assert read_index_record(moved) == read_index_record(smoke_data.index / "val.parquet")
    assert pd.read_parquet(moved)["shard"].map(lambda s: (moved.parent / s).resolve().is_file()).all()
    path = tmp_path / "x.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), path, {"format": 1, "note": "kept"})
    assert read_record(path, "test", "-")["note"] == "kept" and pd.read_parquet(path)["a"].tolist() == [1, 2]
