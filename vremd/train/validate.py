"""Validation: predict every sample of an index, map joints back to image pixels, write PoseTrack json
predictions and score them with the poseval-exact evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vremd.config import DetectConfig
from vremd.data.heatmaps import heatmaps_to_image_xy
from vremd.data.joints import FLIP_INDEX
from vremd.eval.postprocess import PersonPoses, crop_box_areas, postprocess
from vremd.eval.posetrack_ap import METRIC_NAMES, APResult, as_columns, evaluate_dirs
from vremd.eval.predictions import GTPersonRef, read_gt_videos, unpredicted_gt_persons, write_predictions
from vremd.errors import InputError
from vremd.model.vremd import autocast, predict_heatmaps

__all__ = ["Predictions", "Validation", "predict", "validate", "ap_metrics", "UNPREDICTED_METRIC",
           "UNPREDICTED_TAG"]

UNPREDICTED_METRIC = "val/unpredicted_persons"  # GT persons poseval counts that got no prediction
UNPREDICTED_TAG = "val.unpredicted_persons"  # their names (MLflow tag)


@dataclass(frozen=True)
class Predictions:
    """Per-sample predictions: joints in image pixels (S, J, 2), heatmap maxima (S, J), sample ids (S,)."""

    joints_xy_image: np.ndarray
    maxvals: np.ndarray
    sample_ids: np.ndarray


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, stride: int,
            flip_test: bool = False, progress: bool = False) -> Predictions:
    """Run `model` (eval mode) over an eval-mode dataset; return joints in original-image pixels."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    joints, maxvals, ids = [], [], []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        frames = batch["frames"].to(device)  # (B, T, 3, H, W)
        with autocast(device):
            heatmaps = predict_heatmaps(model, frames, FLIP_INDEX if flip_test else None)["heatmaps"]  # (B, J, h, w)
        xy_image, peak = heatmaps_to_image_xy(heatmaps, batch["crop_to_image"], stride)  # (B, J, 2), (B, J)
        joints.append(xy_image.numpy())
        maxvals.append(peak.numpy())
        ids.append(np.asarray(batch["sample_id"]))
    model.train(was_training)
    if not joints:
        raise InputError("predict: the dataset has no samples")
    return Predictions(np.concatenate(joints), np.concatenate(maxvals), np.concatenate(ids))


@dataclass(frozen=True)
class Validation:
    """The AP of one validation and the GT persons poseval counted that got no prediction (by name)."""

    ap: APResult
    unpredicted: tuple[GTPersonRef, ...]


def validate(model: nn.Module, dataset: Dataset, index: pd.DataFrame, gt_dir: Path, pred_dir: Path,
             batch_size: int, device: torch.device, stride: int, flip_test: bool = False,
             protocol: str = "posetrack18", progress: bool = False, detect: DetectConfig = DetectConfig(),
             joint_slots: Sequence[int] | None = None) -> Validation:
    """Predict `dataset`, write `<pred_dir>/<video>.json` for every GT video in `gt_dir`, score them.

    The poses go through `vremd.eval.postprocess` under `detect.postprocess`, as predict's do: joint scores are
    the heatmap maximum times the box score (1.0 for GT boxes); detector-box poses are kept (`none`) or rescored
    and OKS-NMS'd per frame (`oks_nms`) over the `joint_slots` the model predicts (`model.annotated_joints`).
    Every GT person poseval counts and no sample predicts (a val crop skipped under
    `data.on_bad_input: skip`) is returned by name: it still costs recall in the AP.
    """
    preds = predict(model, dataset, batch_size, device, stride, flip_test, progress)
    rows = index.set_index("sample_id").loc[preds.sample_ids].reset_index()
    box_scores = rows["score"].to_numpy(np.float64) if "score" in rows else np.ones(len(rows))  # (S,)
    detected = (rows["source"] == "det").to_numpy() if "source" in rows else np.zeros(len(rows), bool)  # (S,)
    keep, scores = postprocess(PersonPoses(
        frame_keys=list(zip(rows["video"], rows["frame_index"])), joints_xy=preds.joints_xy_image,
        maxvals=preds.maxvals, box_scores=box_scores, areas=crop_box_areas(rows["box_xywh"]), detected=detected,
    ), detect, joint_slots)  # (S,) bool, (S, J)
    records = rows[keep].to_dict("records")
    gt_videos = read_gt_videos(gt_dir)
    write_predictions(pred_dir, gt_videos, records, preds.joints_xy_image[keep], scores[keep])
    ap = evaluate_dirs(Path(gt_dir), Path(pred_dir), protocol=protocol)
    return Validation(ap, tuple(unpredicted_gt_persons(gt_videos, records)))


def ap_metrics(result: Validation) -> dict[str, float]:
    """The evaluator's table as MLflow metric names (`ap/head` ... `ap/mean`; NaN kept as NaN) and the
    count of GT persons without a prediction (`val/unpredicted_persons`)."""
    table = as_columns(result.ap.table)
    metrics = {name: float(table.get(col, float("nan"))) for col, name in METRIC_NAMES.items()}
    metrics[UNPREDICTED_METRIC] = float(len(result.unpredicted))
    return metrics
