"""The torch Dataset of 3-frame crops that one sample index file describes (columns: `vremd.data.index`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from vremd.config import AugmentConfig, ConfigError, ModelConfig
from vremd.data.augment import augment_joints, augment_reach, required_margin_px, sample_affine, warp_frames
from vremd.data.boxes import compose_affine, invert_affine
from vremd.data.heatmaps import encode
from vremd.data.shards import shard_sample
from vremd.errors import InputError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalise_frames(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 RGB -> (..., 3, H, W) float32 ImageNet-normalised, on `frames`' device: the model's
    input, for training, validation and predict alike."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=frames.device)
    std = torch.as_tensor(IMAGENET_STD, device=frames.device)
    return ((frames.float() / 255.0 - mean) / std).movedim(-1, -3).contiguous()



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
        heatmap_stride: the model's output stride (`vremd.model.heads.HEATMAP_STRIDE`, passed in: the data
            package does not import the model); None for a dataset read only for its stored crops (`raw_crops`),
            whose items cannot be taken. sigma_px: target sigma in eval mode (augment=None), default
            AugmentConfig's.
    Item: frames (T, 3, H, W) float32 ImageNet-normalised RGB (t-1, t, t+1); heatmaps (J, H/s, W/s);
    target_weight (J,); joints_xy (J, 2) crop-input pixels; visible (J,); crop_to_image (2, 3) float64
    mapping crop-input pixels to original image pixels; sample_id.

    Stored train crops carry `margin_px` of the frame around them; `augment.borders` "frame" warps that
    canvas, "crop" and eval mode read its centre window, the crop. An augmentation whose warps would reach
    past the stored margin is refused here (ConfigError naming both), before any sample is drawn.
    """

    def __init__(self, index_path: Path, augment: AugmentConfig | None, num_joints: int = 17, seed: int = 0,
                 *, heatmap_stride: int | None, sigma_px: float | None = None):
        index_path = Path(index_path)
        self.index = pd.read_parquet(index_path)
        self.augment = augment
        self.seed = seed
        target = augment or AugmentConfig()
        self.sigma_px = sigma_px if sigma_px is not None else target.sigma_px
        self.stride = heatmap_stride
        S = len(self.index)
        self.joints = np.stack(self.index["joints_crop_xyv"].to_numpy()).reshape(S, -1, 3) if S else np.zeros((0, num_joints, 3))
        if self.joints.shape[1] != num_joints:
            raise InputError(f"{index_path}: joints_crop_xyv has {self.joints.shape[1]} joints, expected {num_joints}")
        self.crop_to_image = np.stack(self.index["crop_to_image"].to_numpy()).reshape(S, 2, 3) if S else np.zeros((0, 2, 3))
        self.shards = [str(index_path.parent / s) for s in self.index["shard"]]
        self.rows = self.index["row"].to_numpy()
        self.jpeg_offsets = self.index["jpeg_offsets"].to_numpy()
        self.sample_ids = self.index["sample_id"].to_numpy()
        # (S, 2) int: x, y stored pixels around each crop; index files made before margins existed have none
        margins = self.index["margin_px"].to_numpy() if "margin_px" in self.index.columns else []
        self.margins = np.stack(margins).astype(int).reshape(S, 2) if len(margins) else np.zeros((S, 2), int)
        self._open: dict[str, np.ndarray] = {}  # per process: shard path -> memory map
        self._check_margin(index_path)

    def __len__(self) -> int:
        return len(self.index)

    def _crops(self, i: int) -> np.ndarray:
        path = self.shards[i]
        if path not in self._open:  # opened lazily, so each DataLoader worker maps its own
            self._open[path] = np.load(path, mmap_mode="r")
        return shard_sample(self._open[path], self.rows[i], self.jpeg_offsets[i])  # (T, H, W, 3) uint8 RGB

    def _window(self, i: int, stored: np.ndarray) -> np.ndarray:
        """The crop inside sample `i`'s stored (T, H + 2 my, W + 2 mx, 3) canvas: (T, H, W, 3), a view."""
        mx, my = self.margins[i]
        return stored[:, my:stored.shape[1] - my, mx:stored.shape[2] - mx]

    def raw_crops(self, i: int) -> np.ndarray:
        """Sample `i`'s stored crops, (T, H, W, 3) uint8 RGB, t-1, t, t+1, before augmentation (no margin)."""
        return np.asarray(self._window(i, self._crops(i)))

    def _augmented(self, epoch: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample `i`'s frames (T, H, W, 3) uint8 RGB, joints_xy (J, 2), visible (J,) and crop_to_image (2, 3),
        with `epoch`'s augmentation applied when training."""
        stored = self._crops(i)  # (T, H + 2 my, W + 2 mx, 3)
        crop = self._window(i, stored)  # (T, H, W, 3)
        T, H, W, _ = crop.shape
        joints_xy, visible = self.joints[i, :, :2].copy(), (self.joints[i, :, 2] > 0).astype(np.float64)
        crop_to_image = self.crop_to_image[i]
        if self.augment is None:
            return np.asarray(crop), joints_xy, visible, crop_to_image
        affine, flip = self.augmentation(epoch, i, joints_xy, visible, (W, H))
        if self.augment.borders == "frame":  # canvas pixel (x, y) is crop pixel (x - mx, y - my)
            mx, my = self.margins[i]
            frames = warp_frames(stored, compose_affine(affine, np.array([[1.0, 0, -mx], [0, 1.0, -my]])), (W, H))
        else:
            frames = warp_frames(crop, affine, (W, H))
        joints_xy, visible = augment_joints(joints_xy, visible, affine, flip, (W, H))
        return frames, joints_xy, visible, compose_affine(crop_to_image, invert_affine(affine))

    def augmentation(self, epoch: int, i: int, joints_xy: np.ndarray, visible: np.ndarray,
                     crop_wh: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """The (2, 3) crop-in -> crop-out affine and flip of sample `i` in `epoch` (drawn from (seed, epoch, i));
        with borders "frame", a half-body region stays on the stored canvas (`augment.sample_augmentation`)."""
        margin = tuple(int(v) for v in self.margins[i]) if self.augment.borders == "frame" else None
        return sample_affine(np.random.default_rng([self.seed, epoch, i]), self.augment, joints_xy, visible, crop_wh,
                             margin)

    def _check_margin(self, index_path: Path) -> None:
        """ConfigError when borders "frame" warps would read past the margin stored around the crops."""
        if self.augment is None or self.augment.borders != "frame" or not len(self):
            return
        H, W = self.raw_crops(0).shape[1:3]
        self._open.clear()  # DataLoader workers map the shards themselves (a pickled map would copy them)
        need = required_margin_px(self.augment, (W, H))
        have = tuple(int(v) for v in self.margins.min(axis=0))
        if need[0] <= have[0] and need[1] <= have[1]:
            return
        scale, angle_deg = augment_reach(self.augment)
        angle_key = "augment.rotation_deg" if self.augment.sampling == "uniform" else "augment.rotation_clip_deg"
        raise ConfigError(
            f"{index_path}: its crops keep a margin of {have[0]}x{have[1]} px around each {W}x{H} crop "
            f"(crops.train_context_scale), but augment.borders frame with augment.scale_max {scale:g} and "
            f"{angle_key} {angle_deg:g} reads {need[0]}x{need[1]} px: re-run the crops stage with "
            f"crops.train_context_scale >= {scale:g}, narrow the augmentation, or set augment.borders crop")

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Sample `key`: an index (epoch 0's augmentation), or `(epoch, index)` as `EpochSampler` yields.

        The epoch travels in the key, not as dataset state, so DataLoader worker processes (which hold
        copies of the dataset) draw each epoch's augmentation too.
        """
        _cap_opencv_threads_in_loader_worker()
        epoch, i = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        if self.stride is None:
            raise TypeError("PoseTrackCrops(heatmap_stride=None) holds no target encoding: only raw_crops() is available")
        frames, joints_xy, visible, crop_to_image = self._augmented(epoch, i)
        T, H, W, _ = frames.shape
        heatmaps, weight = encode(joints_xy, visible, (H // self.stride, W // self.stride), self.stride, self.sigma_px)
        return {
            "frames": normalise_frames(torch.tensor(frames)),  # (T, 3, H, W); a copy: the shard map is read-only
            "heatmaps": torch.from_numpy(heatmaps),
            "target_weight": torch.from_numpy(weight),
            "joints_xy": torch.from_numpy(joints_xy.astype(np.float32)),
            "visible": torch.from_numpy(visible.astype(np.float32)),
            "crop_to_image": torch.from_numpy(np.array(crop_to_image, np.float64)),
            "sample_id": int(self.sample_ids[i]),
        }


def check_crop_size(index_path: Path, model: ModelConfig, model_name: str) -> None:
    """Refuse an index whose stored crops are not the model's input size; the message names both sizes."""
    dataset = PoseTrackCrops(index_path, None, model.num_joints, heatmap_stride=None)  # only its stored crops
    if not len(dataset):
        return
    crop_hw = tuple(dataset.raw_crops(0).shape[1:3])  # (T, H, W, 3) -> (H, W)
    if crop_hw != (model.img_height, model.img_width):
        raise ConfigError(f"{model_name} takes {model.img_height}x{model.img_width} crops (model.img_height x "
                          f"model.img_width) but {index_path} holds {crop_hw[0]}x{crop_hw[1]} crops (made with other "
                          "crops.height/crops.width)")


def check_augment_margin(index_path: Path, augment: AugmentConfig, num_joints: int = 17) -> None:
    """Refuse an augmentation whose warps reach past the margin stored around the index's crops (ConfigError
    naming the index, the stored margin, crops.train_context_scale and the augment keys)."""
    PoseTrackCrops(index_path, augment, num_joints, heatmap_stride=None)  # its constructor checks
