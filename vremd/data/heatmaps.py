"""Gaussian heatmap targets and their sub-pixel decoding.

Pixel centres line up between the crop input and the heatmap: input pixel x and heatmap pixel
(x + 0.5) / stride - 0.5 are the same point, so a horizontal flip of the input is exactly a flip of
the heatmap. Gaussians are centred at the exact (non-integer) position, and `decode` refines the
argmax with a second-order Taylor step on the log heatmap (exact for a clean Gaussian), falling back
to the quarter-pixel shift towards the higher neighbour where the log surface is not concave.
"""

from __future__ import annotations

import numpy as np
import torch


def input_to_heatmap_xy(xy, stride: int):
    """Crop-input pixels -> heatmap pixels (works on numpy arrays and tensors)."""
    return (xy + 0.5) / stride - 0.5


def heatmap_to_input_xy(xy, stride: int):
    """Heatmap pixels -> crop-input pixels (works on numpy arrays and tensors)."""
    return (xy + 0.5) * stride - 0.5


def encode(joints_xy: np.ndarray, visible: np.ndarray, heatmap_hw: tuple[int, int], stride: int,
           sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets for (J, 2) joints in crop-input pixels: heatmaps (J, h, w) and weight (J,).

    `sigma_px` is in heatmap pixels. A joint gets weight 1 when visible and its Gaussian centre lies
    inside the heatmap, else weight 0 and an all-zero heatmap.
    """
    h, w = heatmap_hw
    centres = input_to_heatmap_xy(np.asarray(joints_xy, np.float64), stride)  # (J, 2)
    weight = (np.asarray(visible) > 0).astype(np.float32)
    inside = (centres[:, 0] >= -0.5) & (centres[:, 0] <= w - 0.5) & (centres[:, 1] >= -0.5) & (centres[:, 1] <= h - 0.5)
    weight *= inside
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    gx = np.exp(-((xs[None, :] - centres[:, :1]) ** 2) / (2 * sigma_px**2))  # (J, w)
    gy = np.exp(-((ys[None, :] - centres[:, 1:]) ** 2) / (2 * sigma_px**2))  # (J, h)
    heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)  # (J, h, w): separable Gaussian
    heatmaps *= weight[:, None, None]
    return heatmaps, weight


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of (B, J, h, w) heatmaps refined to sub-pixel: ((B, J, 2) x, y heatmap pixels, (B, J) maxvals)."""
    B, J, h, w = heatmaps.shape
    hm = heatmaps.detach().float()
    maxvals, flat = hm.flatten(2).max(dim=2)  # (B, J): peak value and its flat index
    px, py = flat % w, flat // w
    logs = hm.clamp_min(1e-10).log()
    padded = torch.nn.functional.pad(logs, (1, 1, 1, 1), mode="replicate")  # (B, J, h+2, w+2)

    def at(dx: int, dy: int) -> torch.Tensor:  # (B, J) log value at the peak + (dx, dy)
        idx = (py + 1 + dy) * (w + 2) + (px + 1 + dx)
        return padded.flatten(2).gather(2, idx.unsqueeze(2)).squeeze(2)

    c = at(0, 0)
    dx = (at(1, 0) - at(-1, 0)) / 2
    dy = (at(0, 1) - at(0, -1)) / 2
    dxx = at(1, 0) - 2 * c + at(-1, 0)
    dyy = at(0, 1) - 2 * c + at(0, -1)
    dxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    det = dxx * dyy - dxy**2
    concave = (dxx < 0) & (det > 1e-12)
    safe_det = torch.where(concave, det, torch.ones_like(det))
    off_x = -(dyy * dx - dxy * dy) / safe_det  # -H^-1 g
    off_y = -(dxx * dy - dxy * dx) / safe_det
    taylor = torch.stack([off_x, off_y], dim=-1).clamp(-1, 1)  # (B, J, 2)
    quarter = 0.25 * torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)  # (B, J, 2)
    offset = torch.where(concave.unsqueeze(-1), taylor, quarter)
    joints_xy = torch.stack([px, py], dim=-1).float() + offset
    return joints_xy, maxvals


def input_to_image_xy(joints_xy_input: torch.Tensor, crop_to_image: torch.Tensor) -> torch.Tensor:
    """(B, J, 2) crop-input pixels -> (B, J, 2) float64 image pixels through the (B, 2, 3) crop->image affines."""
    ones = torch.ones_like(joints_xy_input[..., :1])
    homog = torch.cat([joints_xy_input.double(), ones.double()], dim=-1)  # (B, J, 3): x, y, 1
    return homog @ crop_to_image.double().transpose(1, 2)  # (B, J, 2)


def heatmaps_to_image_xy(heatmaps: torch.Tensor, crop_to_image, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints of (B, J, h, w) heatmaps in image pixels: ((B, J, 2) float64, (B, J) heatmap maxima), on the CPU.

    `crop_to_image` is the (B, 2, 3) crop->image affine of each crop (tensor or array; the identity gives
    crop-input pixels), `stride` the heatmap's stride in input pixels. Decoded in float32 on the CPU, so every
    device gives the same joints for the same heatmaps.
    """
    xy_hm, maxvals = decode(heatmaps.float().cpu())  # (B, J, 2) heatmap pixels, (B, J)
    affine = torch.as_tensor(crop_to_image, dtype=torch.float64)  # (B, 2, 3)
    return input_to_image_xy(heatmap_to_input_xy(xy_hm, stride), affine), maxvals
