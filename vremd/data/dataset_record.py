"""What a crops manifest or an index file holds: a json record in the parquet file's key-value metadata.

The crops stage records the dataset (`data.source`) it cut, its crop settings and the val boxes in the manifest
(`vremd.data.crop_store`); the preprocess stage copies that record into each index file with the split added
(`vremd.data.index`). One atomic write holds the rows and their record, so the two cannot disagree, and a copied
or renamed file keeps it. Every consumer of an index runs `check_index` before it starts: an index of another
dataset or split, or an older one without a record, is refused in one line naming the file, what it holds and
what was asked for (`vremd.data.index_check` compares the crop settings with a model's). This module
reads no crops, so the stages that only read an index do not depend on the crop code. See a record:
`python -c "import pyarrow.parquet as pq; print(pq.read_schema('data/index/train.parquet').metadata[b'vremd.record'])"`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vremd.config import CropsConfig, neutral_keys
from vremd.errors import InputError

RECORD_KEY = b"vremd.record"
RECORD_FORMAT = 1  # of the records in crops manifests and index files


class DatasetRecordError(InputError):
    """A crops manifest or index file has no record of what it holds, or holds other data than was asked for."""


def write_parquet(df: pd.DataFrame, dest: Path | BinaryIO, record: dict[str, Any]) -> None:
    """Write `df` (no index column) to `dest`, a path or an open binary file, with `record` in its metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), RECORD_KEY: orjson.dumps(record)})
    pq.write_table(table, dest)


def read_record(path: Path, stage: str, rebuild: str, wanted: str = "") -> dict[str, Any]:
    """The record of the parquet file `path`; DatasetRecordError for a file without one, written by an older
    `stage` before records existed (or of another record format), naming what was `wanted` of it and how to
    `rebuild` it."""
    raw = (pq.read_schema(path).metadata or {}).get(RECORD_KEY)
    record = orjson.loads(raw) if raw is not None else None
    if record is None or record.get("format") != RECORD_FORMAT:
        found = (f"no record of the dataset it was cut from (an older {stage} stage wrote it)" if record is None
                 else f"record format {record.get('format')}, this code reads {RECORD_FORMAT} (another version of "
                      f"the {stage} stage wrote it)")
        raise DatasetRecordError(f"{path}: {found}{', but ' if wanted else ''}{wanted}; {rebuild}")
    return record


def crop_settings(cfg: CropsConfig) -> dict[str, Any]:
    """The crop settings that change the crops: every `crops.*` key not marked NEUTRAL (the worker count is)."""
    neutral = neutral_keys()
    return {k: v for k, v in asdict(cfg).items() if f"crops.{k}" not in neutral}


REBUILD = "rebuild it: dvc repro preprocess, or python pipeline/crops.py and pipeline/preprocess.py"


@dataclass(frozen=True)
class IndexRecord:
    """What one index file holds: the dataset and split its samples were cut from, and how."""

    source: str  # the `data.source` of the raw data
    split: str  # "train" or "val"
    crops: dict[str, Any]  # the `crops.*` settings of its crops (`crop_settings`)
    val_boxes: str  # "gt", or the detection file the val crops were cut with

    def describe(self) -> str:
        """`posetrack17 train`: the dataset and split, as error messages name them."""
        return f"{self.source} {self.split}"


def read_index_record(index_file: Path, wanted: str = "") -> IndexRecord:
    """The `IndexRecord` of `<index dir>/<split>.parquet`; DatasetRecordError for a file without one (an index
    written before indexes recorded their dataset) or of another record format, naming what was `wanted`."""
    record = read_record(Path(index_file), "preprocess", REBUILD, wanted)
    return IndexRecord(record["source"], record["split"], record["crops"], record["val_boxes"])


def check_index(index_file: Path, source: str, split: str, asked_by: str) -> IndexRecord:
    """The record of `index_file` when it holds `source`'s `split`; else DatasetRecordError naming the file, what it
    holds and what `asked_by` (e.g. "params.yaml (profile paper)") asks for. Every consumer of an index runs this
    before it starts; whether its crops fit a model is `vremd.data.index_check.check_index_fits`."""
    record = read_index_record(index_file, f"{asked_by} asks for {source} {split}")
    if (record.source, record.split) != (source, split):
        raise DatasetRecordError(f"{index_file}: holds {record.describe()} samples, but {asked_by} asks for "
                                 f"{source} {split}; give it an index cut from {source}")
    return record
