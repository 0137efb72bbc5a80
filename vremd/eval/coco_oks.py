"""COCO-style OKS AP/AR (pycocotools) for the same PoseTrack GT and prediction folders.

PoseTrack-2018 json is turned into COCO GT and detections in memory. Frames pair by position, as in
poseval. Only images with at least one GT annotation are scored. GT persons without any annotated
keypoint are ignored by COCOeval. A GT area comes from its `bbox` (w x h), or from the keypoint
extent when there is no bbox. Ignore regions are not applied: COCO has no polygon ignore.

Sigmas: PoseTrack18 keeps COCO's 17 slots but annotates head_bottom and head_top in the eye slots
(1, 2) and never annotates the ears. We keep COCO's sigmas unchanged (eye value 0.025 for
head_bottom and head_top), as mmpose's PoseTrack18 dataset does, so numbers compare with mmpose's
PoseTrack18 COCO-style results. The small eye sigma makes both head points strict.
"""

from __future__ import annotations

import contextlib
import glob
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vremd.eval.posetrack_ap import load_json
from vremd.eval.poseval_io import PoseTrackEvalError

# COCO order: nose, head_bottom (left_eye slot), head_top (right_eye slot), ears, shoulders, elbows,
# wrists, hips, knees, ankles
POSETRACK_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                             0.107, 0.107, 0.087, 0.087, 0.089, 0.089])
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def evaluate_coco_dirs(gt_dir: Path, pred_dir: Path, sigmas: np.ndarray = POSETRACK_SIGMAS) -> dict[str, float]:
    """Return COCO OKS stats (STAT_NAMES, 0..1, NaN if undefined) for every GT json and its prediction."""
    gts, preds = [], []
    for gt_path in map(Path, glob.glob(os.path.join(glob.escape(str(gt_dir)), "*.json"))):
        pred_path = Path(pred_dir) / gt_path.name
        if not pred_path.is_file():
            raise PoseTrackEvalError(f"{pred_path}: prediction file does not exist (GT {gt_path.name})")
        gts.append(load_json(gt_path))
        preds.append(load_json(pred_path))
    return evaluate_coco(gts, preds, sigmas=sigmas)


def evaluate_coco(gt_videos: Sequence[Mapping], pred_videos: Sequence[Mapping],
                  sigmas: np.ndarray = POSETRACK_SIGMAS) -> dict[str, float]:
    """Return COCO OKS stats for parsed PoseTrack-2018 dicts, one GT and one prediction per video."""
    if len(sigmas) != 17:
        raise ValueError(f"sigmas: expected 17 values, found {len(sigmas)}")
    images, gt_anns, dt_anns = [], [], []
    for v, (gt, pred) in enumerate(zip(gt_videos, pred_videos)):
        gt_by, pr_by = _by_image(gt, f"gt[{v}]"), _by_image(pred, f"pred[{v}]")
        if len(gt_by) != len(pr_by):
            raise PoseTrackEvalError(f"pred[{v}]: images: {len(pr_by)} frames, GT has {len(gt_by)}")
        for (gt_persons, pr_persons) in zip(gt_by, pr_by):
            if not gt_persons:
                continue
            image_id = len(images) + 1
            images.append({"id": image_id})
            gt_anns += [_gt_ann(a, image_id, len(gt_anns) + 1 + k) for k, a in enumerate(gt_persons)]
            dt_anns += [_dt_ann(a, image_id) for a in pr_persons]
    if not images:
        return {k: math.nan for k in STAT_NAMES}
    if not dt_anns:
        return {k: 0.0 for k in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": [{"id": 1, "name": "person"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (math.nan if s < 0 else float(s)) for k, s in zip(STAT_NAMES, ev.stats)}


def _by_image(data: Mapping, where: str) -> list[list[Mapping]]:
    """Return the annotations of each image, images in list order."""
    images, anns = data.get("images"), data.get("annotations", [])
    if not isinstance(images, list) or not isinstance(anns, list):
        raise PoseTrackEvalError(f"{where}: images/annotations: expected lists")
    by: dict[Any, list[Mapping]] = {}
    for a in anns:
        by.setdefault(a.get("image_id"), []).append(a)
    return [by.get(im.get("id"), []) for im in images]


def _keypoints(a: Mapping, where: str) -> np.ndarray:
    try:
        kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)  # (17, 3) x, y, v
    except (KeyError, TypeError, ValueError):
        raise PoseTrackEvalError(f"{where}: keypoints: expected 51 numbers") from None
    return kps


def _gt_ann(a: Mapping, image_id: int, ann_id: int) -> dict:
    kps = _keypoints(a, f"GT annotation {a.get('id')}")
    labeled = kps[:, 2] > 0
    if a.get("bbox") and len(a["bbox"]) == 4:
        x, y, w, h = (float(v) for v in a["bbox"])
    elif labeled.any():
        lo, hi = kps[labeled, :2].min(0), kps[labeled, :2].max(0)
        (x, y), (w, h) = lo, hi - lo
    else:
        x = y = w = h = 0.0
    kps[~labeled] = 0
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": [x, y, w, h],
            "area": float(w * h), "keypoints": kps.ravel().tolist(), "num_keypoints": int(labeled.sum())}


def _dt_ann(a: Mapping, image_id: int) -> dict:
    kps = _keypoints(a, f"prediction on image {a.get('image_id')}")
    scores = a.get("scores")
    score = a.get("score")
    if score is None:
        score = float(np.mean(scores)) if scores else 1.0
    kps[:, 2] = 1
    return {"image_id": image_id, "category_id": 1, "keypoints": kps.ravel().tolist(), "score": float(score)}
