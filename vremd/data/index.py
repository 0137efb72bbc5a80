"""The sample index: one parquet per split, written by the preprocess stage from the crops manifest.

Index columns: sample_id, split, video, json_path, frame_index, image_id, file_name, track_id,
person_id, source, box_xywh (enlarged crop box, image pixels), score, joints_crop_xyv ((J, 3)
row-major, crop pixels + visibility), num_visible, crop_to_image ((2, 3) row-major), neighbour_clamped,
shard (path of the video's crops relative to the index file's folder), row (sample in the shard),
jpeg_offsets (byte range of each frame's JPEG in the shard; empty when the shard holds raw pixels),
margin_px ((x, y) stored pixels of the frame on each side of the crop: train crops' augmentation canvas).

Each index file records what it holds in its parquet metadata, taken from the crops manifest's record with the
split added: the dataset (`data.source`) and split it was cut from, the crop settings and the val boxes. Every
consumer checks it before it starts (`vremd.data.dataset_record.check_index`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from vremd.atomic import atomic_write
from vremd.data.crop_store import STATS, read_manifest, read_manifest_record
from vremd.data.dataset_record import REBUILD, read_record, write_parquet
from vremd.data.posetrack import SPLITS
from vremd.data.joints import JOINT_NAMES

def build_index(crops_dir: Path, index_dir: Path) -> dict:
    """Write `<index_dir>/{train,val}.parquet` from the crops manifest (atomically); return dataset stats."""
    crops_dir, index_dir = Path(crops_dir), Path(index_dir)
    record = read_manifest_record(crops_dir)  # the dataset the crops were cut from: each split's file records it
    manifest = read_manifest(crops_dir)
    crop_stats = orjson.loads((crops_dir / STATS).read_bytes())
    index_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in SPLITS:
        df = manifest[manifest["split"] == split].reset_index(drop=True)
        df.insert(0, "sample_id", np.arange(len(df), dtype=np.int64))
        df["shard"] = [os.path.relpath(crops_dir / s, index_dir) for s in df["shard"]]
        path = index_dir / f"{split}.parquet"
        atomic_write(path, lambda tmp, df=df, split=split: write_parquet(df, tmp, {**record, "split": split}))
        stats[split] = _split_stats(df, crop_stats["splits"][split])
    return stats


def rebase_index(src: Path, dst: Path) -> Path:
    """Copy the index file `src` to `dst` (atomically) with its record, its `shard` paths made relative to `dst`'s
    folder."""
    src, dst = Path(src), Path(dst)
    record = read_record(src, "preprocess", REBUILD)
    df = pd.read_parquet(src)
    df["shard"] = [os.path.relpath(src.parent / s, dst.parent) for s in df["shard"]]
    return atomic_write(dst, lambda tmp: write_parquet(df, tmp, record))


def _split_stats(df: pd.DataFrame, crop_stats: dict) -> dict:
    """Counts of one split: persons, samples, frames, videos, visible joints by name, skips."""
    joints = np.stack(df["joints_crop_xyv"].to_numpy()).reshape(len(df), -1, 3) if len(df) else np.zeros((0, len(JOINT_NAMES), 3))
    visible = (joints[:, :, 2] > 0).sum(axis=0)
    return {
        "videos": int(crop_stats["videos"]),
        "samples": int(len(df)),
        "persons": int(df.loc[df["track_id"] >= 0, ["video", "track_id"]].drop_duplicates().shape[0]),
        "frames": int(df[["video", "frame_index"]].drop_duplicates().shape[0]),
        "visible_per_joint": {name: int(visible[j]) for j, name in enumerate(JOINT_NAMES[: joints.shape[1]])},
        "skipped": crop_stats["skipped"],
        "skipped_total": int(sum(crop_stats["skipped"].values())),
        "clamped_neighbours": int(crop_stats["clamped_neighbours"]),
    }
