"""Reading the crops stage's shards: one sample's frames, stored as raw pixels or as JPEG bytes with offsets.

A shard is one video's crops: a (S, T, H, W, 3) uint8 array (`crops.jpeg_quality: 0`), or a flat byte array of
JPEG files whose per-sample byte ranges the index's `jpeg_offsets` column holds. The Dataset reads shards only
through this module, so training and evaluation do not depend on how the crops stage makes them.
"""

from __future__ import annotations

import cv2
import numpy as np


def shard_sample(shard: np.ndarray, row: int, jpeg_offsets) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB crops of one sample of a shard (raw, or JPEG bytes with offsets)."""
    if shard.ndim > 1:
        return np.asarray(shard[row])
    bounds = list(jpeg_offsets)
    return np.stack([cv2.imdecode(np.asarray(shard[a:b]), cv2.IMREAD_COLOR_RGB) for a, b in zip(bounds, bounds[1:])])
