"""The crop settings a crops manifest or an index file was cut with, kept in its parquet metadata.

The crops stage writes them into manifest.parquet, the preprocess stage copies them into each index file,
so an index says how its crops were cut wherever it is read (`vremd.data.index_check` compares them with
a model's config). Small on purpose: a reader of an index needs none of the extraction code.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vremd.config import CropsConfig, neutral_keys

__all__ = ["SETTINGS_KEY", "crop_settings", "write_parquet", "read_crop_settings"]

SETTINGS_KEY = b"vremd.crops"  # parquet metadata key: the crop settings as json


def crop_settings(cfg: CropsConfig) -> dict:
    """The crop settings that change the crops: every `crops.*` key not marked NEUTRAL (the worker count is)."""
    neutral = neutral_keys()
    return {k: v for k, v in asdict(cfg).items() if f"crops.{k}" not in neutral}


def write_parquet(df: pd.DataFrame, file: Path | BinaryIO, settings: dict) -> None:
    """Write `df` as parquet to `file` (a path or binary file), the crop `settings` in its metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), SETTINGS_KEY: orjson.dumps(settings)})
    pq.write_table(table, file)


def read_crop_settings(path: Path) -> dict | None:
    """The crop settings a manifest or index parquet file records (`write_parquet`); None for a file without
    (written by an older checkout)."""
    raw = (pq.read_schema(path).metadata or {}).get(SETTINGS_KEY)
    return orjson.loads(raw) if raw is not None else None
