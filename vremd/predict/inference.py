"""VREMD on 3-frame crops, as validation runs it: `normalise_frames`, the model under `autocast` (with the flip
test when asked), and `heatmaps_to_image_xy` through each crop's affine. Cropping a video is `video_poses.py`'s.
"""

from __future__ import annotations

import numpy as np
import torch

from vremd.data.dataset import normalise_frames
from vremd.data.heatmaps import heatmaps_to_image_xy
from vremd.data.joints import FLIP_INDEX
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import VREMD, autocast, predict_heatmaps


def predict_crops(
    model: VREMD, crops_rgb: np.ndarray, device: str | torch.device = "cpu", return_aux: bool = False,
    flip_test: bool = False, crop_to_image: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Run the model on (B, T=3, H, W, 3) uint8 RGB crops, as validation does (`flip_test`: its flip test).

    Returns "joints_xy" (B, J, 2) float64 in image pixels through the (B, 2, 3) `crop_to_image` affines (crop-input
    pixels without them), "scores" (B, J) float64 heatmap maxima, "heatmaps" (B, J, h, w) float32 (flip-tested),
    and with `return_aux` the model's masks (B, T, N) and sampling points.
    """
    device = torch.device(device)
    # normalised on the CPU, as the Dataset does for validation, so CPU and GPU runs see the same input floats
    frames = normalise_frames(torch.from_numpy(crops_rgb)).to(device)  # (B, T, 3, H, W)
    with torch.inference_mode(), autocast(device):
        out = predict_heatmaps(model, frames, FLIP_INDEX if flip_test else None, return_aux=return_aux)
    if crop_to_image is None:
        crop_to_image = np.tile(np.eye(2, 3), (len(crops_rgb), 1, 1))  # (B, 2, 3): crop-input pixels
    joints_xy, maxvals = heatmaps_to_image_xy(out["heatmaps"], crop_to_image, HEATMAP_STRIDE)  # (B, J, 2), (B, J)
    result = {
        "joints_xy": joints_xy.numpy(),
        "scores": maxvals.numpy().astype(np.float64),
        "heatmaps": out["heatmaps"].cpu().numpy(),
    }
    for key in ("human_mask", "keypoint_mask", "sampling_points"):
        if key in out:
            result[key] = out[key].float().cpu().numpy()
    return result
