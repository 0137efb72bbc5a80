"""Run figures: the training curve (loss, mean AP per epoch) and predicted poses drawn on val key frames."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state

from vremd.atomic import atomic_write
from vremd.data.draw import draw_pose, write_image
from vremd.data.posetrack import read_video
from vremd.eval.posetrack_ap import MEAN_METRIC

__all__ = ["plot_training_curve", "pose_overlays"]

PRED_COLOR = (0, 200, 255)  # BGR orange: predictions
GT_COLOR = (80, 220, 80)  # BGR green: ground truth


def plot_training_curve(history: Sequence[dict[str, float]], path: Path) -> Path:
    """PNG of training loss (left axis) and val mean AP (right axis) against epoch."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("heatmap MSE loss", color="tab:blue")
    ap = [(h["epoch"], h[MEAN_METRIC]) for h in history if math.isfinite(h.get(MEAN_METRIC, float("nan")))]
    if ap:
        ax2 = ax.twinx()
        ax2.plot(*zip(*ap), "s-", color="tab:red", label="val mean AP")
        ax2.set_ylabel("val mean AP (%)", color="tab:red")
    ax.set_title("VREMD training")
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"), check_written=True)


def pose_overlays(gt_dir: Path, pred_dir: Path, dataset_dir: Path, out_dir: Path, count: int = 4) -> list[Path]:
    """Draw GT (green) and predicted (orange) poses on `count` labeled val key frames; return PNG paths.

    Frames are the first labeled frame with persons of each video, in sorted order, until `count`.
    """
    written: list[Path] = []
    for gt_path in sorted(Path(gt_dir).glob("*.json")):
        if len(written) >= count:
            break
        pred_path = Path(pred_dir) / gt_path.name
        if not pred_path.is_file():
            continue
        gt, pred = read_video(gt_path), read_video(pred_path)
        for gt_frame, pred_frame in zip(gt.frames, pred.frames):
            if not (gt_frame.is_labeled and gt_frame.persons and pred_frame.persons):
                continue
            image = cv2.imread(str(Path(dataset_dir) / gt_frame.file_name), cv2.IMREAD_COLOR)
            if image is None:
                break
            for person in gt_frame.persons:
                image = draw_pose(image, person.keypoints[:, :2], person.keypoints[:, 2], GT_COLOR, 1)
            for person in pred_frame.persons:
                image = draw_pose(image, person.keypoints[:, :2], np.ones(len(person.keypoints)), PRED_COLOR, 1)
            written.append(write_image(Path(out_dir) / f"{gt.name}_{gt_frame.frame_index:06d}.png", image))
            break
    return written
