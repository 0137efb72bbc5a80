"""Heatmap loss: the joints MSE of SimpleBaseline / DCPose / ViTPose with per-joint visibility weights."""

from __future__ import annotations

import torch

__all__ = ["heatmap_mse"]


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Return ``0.5 * mean over (B, J, h, w) of (w_j * (pred - target))^2`` as a scalar tensor.

    This is DCPose's / SimpleBaseline's ``JointsMSELoss`` with ``use_target_weight``: each joint's MSE
    (mean over batch and pixels) is halved and averaged over joints; a joint with weight 0 (not visible)
    contributes nothing but still counts in the mean.

    Args:
        pred: ``(B, J, h, w)`` predicted heatmaps.
        target: ``(B, J, h, w)`` Gaussian target heatmaps.
        weight: ``(B, J)`` per-joint weights (1 visible, 0 not).
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"heatmap_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, J, h, w)"
        )
    if weight.shape != pred.shape[:2]:
        raise ValueError(f"heatmap_mse: weight {tuple(weight.shape)} must be (B, J) = {tuple(pred.shape[:2])}")
    w = weight.to(pred.dtype)[:, :, None, None]  # (B, J, 1, 1)
    return 0.5 * ((pred - target) * w).pow(2).mean()
