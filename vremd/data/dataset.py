"""The sample index (one parquet per split) and the torch Dataset of 3-frame crops it describes.

Index columns: sample_id, split, video, json_path, frame_index, image_id, file_name, track_id,
person_id, source, box_xywh (enlarged crop box, image pixels), score, joints_crop_xyv ((J, 3)
row-major, crop pixels + visibility), num_visible, crop_to_image ((2, 3) row-major), neighbour_clamped,
shard (path of the video's crops relative to the index file's folder), row (sample in the shard),
jpeg_offsets (byte range of each frame's JPEG in the shard; empty when the shard holds raw pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import orjson
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from vremd.atomic import atomic_write
from vremd.config import AugmentConfig
from vremd.data.augment import apply_augmentation, sample_affine
from vremd.data.boxes import compose_affine, invert_affine
from vremd.data.crop_store import STATS, read_manifest
from vremd.data.crops import shard_sample
from vremd.data.heatmaps import encode
from vremd.data.joints import JOINT_NAMES
from vremd.data.posetrack import SPLITS

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def build_index(crops_dir: Path, index_dir: Path) -> dict:
    """Write `<index_dir>/{train,val}.parquet` from the crops manifest (atomically); return dataset stats."""
    crops_dir, index_dir = Path(crops_dir), Path(index_dir)
    manifest = read_manifest(crops_dir)
    crop_stats = orjson.loads((crops_dir / STATS).read_bytes())
    index_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in SPLITS:
        df = manifest[manifest["split"] == split].reset_index(drop=True)
        df.insert(0, "sample_id", np.arange(len(df), dtype=np.int64))
        df["shard"] = [os.path.relpath(crops_dir / s, index_dir) for s in df["shard"]]
        path = index_dir / f"{split}.parquet"
        atomic_write(path, lambda tmp, df=df: df.to_parquet(tmp, index=False))
        stats[split] = _split_stats(df, crop_stats["splits"][split])
    return stats


def rebase_index(src: Path, dst: Path) -> Path:
    """Copy the index file `src` to `dst` (atomically), its `shard` paths made relative to `dst`'s folder."""
    src, dst = Path(src), Path(dst)
    df = pd.read_parquet(src)
    df["shard"] = [os.path.relpath(src.parent / s, dst.parent) for s in df["shard"]]
    return atomic_write(dst, lambda tmp: df.to_parquet(tmp, index=False))


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


def _cap_opencv_threads_in_loader_worker() -> None:
    """One OpenCV thread in a DataLoader worker process, as torch does for its own threads there: each of the
    `train.loader_workers` processes would otherwise start a pool of one thread per core for every warp."""
    if get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


class PoseTrackCrops(Dataset):
    """3-frame person crops of one index file, with heatmap targets and optional augmentation.

    Args:
        index_path: `data/index/<split>.parquet` written by `build_index`.
        augment: the training recipe, or None for eval mode (no augmentation).
        sigma_px, heatmap_stride: target encoding in eval mode (augment=None); default AugmentConfig's.
    Item: frames (T, 3, H, W) float32 ImageNet-normalised RGB (t-1, t, t+1); heatmaps (J, H/s, W/s);
    target_weight (J,); joints_xy (J, 2) crop-input pixels; visible (J,); crop_to_image (2, 3) float64
    mapping crop-input pixels to original image pixels; sample_id.
    """

    def __init__(self, index_path: Path, augment: AugmentConfig | None, num_joints: int = 17, seed: int = 0,
                 *, sigma_px: float | None = None, heatmap_stride: int | None = None):
        index_path = Path(index_path)
        self.index = pd.read_parquet(index_path)
        self.augment = augment
        self.seed = seed
        target = augment or AugmentConfig()
        self.sigma_px = sigma_px if sigma_px is not None else target.sigma_px
        self.stride = heatmap_stride if heatmap_stride is not None else target.heatmap_stride
        S = len(self.index)
        self.joints = np.stack(self.index["joints_crop_xyv"].to_numpy()).reshape(S, -1, 3) if S else np.zeros((0, num_joints, 3))
        if self.joints.shape[1] != num_joints:
            raise ValueError(f"{index_path}: joints_crop_xyv has {self.joints.shape[1]} joints, expected {num_joints}")
        self.crop_to_image = np.stack(self.index["crop_to_image"].to_numpy()).reshape(S, 2, 3) if S else np.zeros((0, 2, 3))
        self.shards = [str(index_path.parent / s) for s in self.index["shard"]]
        self.rows = self.index["row"].to_numpy()
        self.jpeg_offsets = self.index["jpeg_offsets"].to_numpy()
        self.sample_ids = self.index["sample_id"].to_numpy()
        self._open: dict[str, np.ndarray] = {}  # per process: shard path -> memory map

    def __len__(self) -> int:
        return len(self.index)

    def _crops(self, i: int) -> np.ndarray:
        path = self.shards[i]
        if path not in self._open:  # opened lazily, so each DataLoader worker maps its own
            self._open[path] = np.load(path, mmap_mode="r")
        return shard_sample(self._open[path], self.rows[i], self.jpeg_offsets[i])  # (T, H, W, 3) uint8 RGB

    def raw_crops(self, i: int) -> np.ndarray:
        """Sample `i`'s stored crops, (T, H, W, 3) uint8 RGB, t-1, t, t+1, before augmentation."""
        return np.asarray(self._crops(i))

    def _augmented(self, epoch: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample `i`'s frames (T, H, W, 3) uint8 RGB, joints_xy (J, 2), visible (J,) and crop_to_image (2, 3),
        with `epoch`'s augmentation applied when training."""
        frames = self._crops(i)
        T, H, W, _ = frames.shape
        joints_xy, visible = self.joints[i, :, :2].copy(), (self.joints[i, :, 2] > 0).astype(np.float64)
        crop_to_image = self.crop_to_image[i]
        if self.augment is not None:
            affine, flip = self.augmentation(epoch, i, joints_xy, visible, (W, H))
            frames, joints_xy, visible = apply_augmentation(frames, joints_xy, visible, affine, flip)
            crop_to_image = compose_affine(crop_to_image, invert_affine(affine))
        return frames, joints_xy, visible, crop_to_image

    def augmentation(self, epoch: int, i: int, joints_xy: np.ndarray, visible: np.ndarray,
                     crop_wh: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """The (2, 3) crop-in -> crop-out affine and flip of sample `i` in `epoch` (drawn from (seed, epoch, i))."""
        return sample_affine(np.random.default_rng([self.seed, epoch, i]), self.augment, joints_xy, visible, crop_wh)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Sample `key`: an index (epoch 0's augmentation), or `(epoch, index)` as `EpochSampler` yields.

        The epoch travels in the key, not as dataset state, so DataLoader worker processes (which hold
        copies of the dataset) draw each epoch's augmentation too.
        """
        _cap_opencv_threads_in_loader_worker()
        epoch, i = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        frames, joints_xy, visible, crop_to_image = self._augmented(epoch, i)
        T, H, W, _ = frames.shape
        heatmaps, weight = encode(joints_xy, visible, (H // self.stride, W // self.stride), self.stride, self.sigma_px)
        pixels = (frames.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (T, H, W, 3)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))),  # (T, 3, H, W)
            "heatmaps": torch.from_numpy(heatmaps),
            "target_weight": torch.from_numpy(weight),
            "joints_xy": torch.from_numpy(joints_xy.astype(np.float32)),
            "visible": torch.from_numpy(visible.astype(np.float32)),
            "crop_to_image": torch.from_numpy(np.array(crop_to_image, np.float64)),
            "sample_id": int(self.sample_ids[i]),
        }
