"""The sample index: one parquet per split, written by the preprocess stage from the crops manifest.

Index columns: sample_id, split, video, json_path, frame_index, image_id, file_name, track_id,
person_id, source, box_xywh (enlarged crop box, image pixels), score, joints_crop_xyv ((J, 3)
row-major, crop pixels + visibility), num_visible, crop_to_image ((2, 3) row-major), neighbour_clamped,
shard (path of the video's crops relative to the index file's folder), row (sample in the shard),
jpeg_offsets (byte range of each frame's JPEG in the shard; empty when the shard holds raw pixels),
margin_px ((x, y) stored pixels of the frame on each side of the crop: train crops' augmentation canvas).
Each file's parquet metadata keeps the crop settings its crops were cut with (`vremd.data.crop_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from vremd.atomic import atomic_write
from vremd.data.crop_settings import read_crop_settings, write_parquet
from vremd.data.crop_store import MANIFEST, STATS, read_manifest
from vremd.errors import InputError
from vremd.data.posetrack import SPLITS
from vremd.data.joints import JOINT_NAMES


def build_index(crops_dir: Path, index_dir: Path) -> dict:
    """Write `<index_dir>/{train,val}.parquet` from the crops manifest (atomically); return dataset stats."""
    crops_dir, index_dir = Path(crops_dir), Path(index_dir)
    manifest = read_manifest(crops_dir)
    settings = read_crop_settings(crops_dir / MANIFEST)
    if settings is None:
        raise InputError(f"{crops_dir / MANIFEST}: records no crop settings (written by an older checkout); "
                         "re-run the crops stage (pipeline/crops.py, or dvc repro crops)")
    crop_stats = orjson.loads((crops_dir / STATS).read_bytes())
    index_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in SPLITS:
        df = manifest[manifest["split"] == split].reset_index(drop=True)
        df.insert(0, "sample_id", np.arange(len(df), dtype=np.int64))
        df["shard"] = [os.path.relpath(crops_dir / s, index_dir) for s in df["shard"]]
        path = index_dir / f"{split}.parquet"
        atomic_write(path, lambda tmp, df=df: write_parquet(df, tmp, settings))
        stats[split] = _split_stats(df, crop_stats["splits"][split])
    return stats


def rebase_index(src: Path, dst: Path) -> Path:
    """Copy the index file `src` to `dst` (atomically), its `shard` paths made relative to `dst`'s folder."""
    src, dst = Path(src), Path(dst)
    df = pd.read_parquet(src)
    df["shard"] = [os.path.relpath(src.parent / s, dst.parent) for s in df["shard"]]
    settings = read_crop_settings(src)
    if settings is None:
        return atomic_write(dst, lambda tmp: df.to_parquet(tmp, index=False))  # the check refuses it when read
    return atomic_write(dst, lambda tmp: write_parquet(df, tmp, settings))


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
