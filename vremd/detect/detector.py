"""Person detector for test-time boxes: a torchvision detector, its weights, and a provenance record.

The paper scores with an object detector's boxes. The default is torchvision's Faster R-CNN ResNet-50 FPN
v2 (COCO box AP 46.7, the most accurate torchvision detector with COCO weights; a two-stage detector like
the ones the DCPose/PoseWarper box files came from). `fasterrcnn_mobilenet_v3_large_fpn` (box AP 32.8,
about 10x cheaper) is there for CPUs. Weights come from torchvision's own download and cache
(`torch.hub.get_dir()/checkpoints`), or from a local file (`detect.weights`), which must be a state dict
of the chosen architecture. Only COCO class 1 (person) is kept.

Boxes scoring at least `detect.score_threshold` are kept, as DCPose keeps its boxes (`score >= 0.2`); torchvision
keeps `score > box_score_thresh` in float32, so the detector is built with the float32 just below the threshold
(`torchvision_score_thresh`).

`Provenance` records what a user needs to reproduce a box file: detector, weights file and sha256, score
threshold and the rule it is applied with, NMS IoU, input size and the torchvision version.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models import detection
from tqdm import tqdm

from vremd.config import DetectConfig
from vremd.errors import InputError

__all__ = ["ARCHITECTURES", "DetectorError", "Provenance", "build_detector", "detect_images"]

PERSON = 1  # COCO category id of a person (torchvision's detection labels are COCO ids)

# name -> (constructor, its COCO weights); an explicit table, read only by `build_detector`
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], detection.Weights]] = {  # type: ignore[name-defined]
    "fasterrcnn_resnet50_fpn_v2": (detection.fasterrcnn_resnet50_fpn_v2,
                                   detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    "fasterrcnn_mobilenet_v3_large_fpn": (detection.fasterrcnn_mobilenet_v3_large_fpn,
                                          detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
}


class DetectorError(InputError):
    """The detector cannot be built: unknown name, unreadable or mismatched weights, no download possible."""


@dataclass(frozen=True)
class Provenance:
    """Everything that decides a box file's content, as recorded beside it."""

    detector: str
    weights: str  # the file the weights were read from
    weights_sha256: str
    score_threshold: float
    score_rule: str  # which boxes were kept, e.g. "score >= 0.2"
    nms_iou: float
    min_size: int  # torchvision resizes the shorter side to this ...
    max_size: int  # ... unless the longer side would exceed this
    torchvision_version: str

    def to_dict(self) -> dict:
        return asdict(self)


def torchvision_score_thresh(threshold: float) -> float:
    """The `box_score_thresh` under which torchvision's `score > box_score_thresh` (float32 scores, roi_heads.py
    `postprocess_detections`) keeps exactly the boxes with ``score >= threshold``: the float32 just below the
    least float32 that is >= `threshold`."""
    least = np.float32(threshold)
    if float(least) < threshold:  # rounded down (e.g. 0.7): that float32 score is below the threshold
        least = np.nextafter(least, np.float32(np.inf))
    return float(np.nextafter(least, np.float32(-np.inf)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_file(cfg: DetectConfig, weights: detection.Weights) -> Path:  # type: ignore[name-defined]
    """The local weights file: `detect.weights`, or torchvision's cached download (fetched once)."""
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file():
            raise DetectorError(f"{path}: no such detector weights file (detect.weights)")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
        except Exception as exc:  # offline, proxy, disk: anything that stops the first download
            raise DetectorError(
                f"{cfg.model}: could not download torchvision's weights {weights.url} ({type(exc).__name__}: {exc}); "
                "download the file elsewhere and set detect.weights to its local path"
            ) from None
    return path


def build_detector(cfg: DetectConfig) -> tuple[nn.Module, Provenance]:
    """The detector of `cfg` in eval mode on CPU, with its weights loaded strictly, and its provenance."""
    if cfg.model not in ARCHITECTURES:
        raise DetectorError(f"detect.model: unknown detector {cfg.model!r}, expected one of {sorted(ARCHITECTURES)}")
    build, weights = ARCHITECTURES[cfg.model]
    model = build(weights=None, weights_backbone=None, box_score_thresh=torchvision_score_thresh(cfg.score_threshold),
                  box_nms_thresh=cfg.nms_iou, min_size=cfg.min_size, max_size=cfg.max_size)
    path = _weights_file(cfg, weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DetectorError(f"{path}: not a readable weights-only state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise DetectorError(f"{path}: expected a state dict, found {type(state).__name__}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if missing or unexpected or misshapen:
        raise DetectorError(
            f"{path}: not {cfg.model} weights (detect.model): {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(misshapen)} of another shape "
            f"(e.g. {misshapen[:2]})"
        )
    model.load_state_dict(state, strict=True)
    provenance = Provenance(
        detector=cfg.model, weights=str(path), weights_sha256=_sha256(path), score_threshold=cfg.score_threshold,
        score_rule=f"score >= {cfg.score_threshold}", nms_iou=cfg.nms_iou, min_size=cfg.min_size,
        max_size=cfg.max_size, torchvision_version=torchvision.__version__,
    )
    return model.eval(), provenance


def _to_tensor(image_bgr: np.ndarray, device: str) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (3, H, W) float RGB in [0, 1], as torchvision detectors take it."""
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1).float().div_(255.0)


def detect_images(
    model: nn.Module, images: Iterable[tuple[object, np.ndarray]], batch_size: int = 4, device: str = "cpu",
    total: int | None = None, progress: bool = True,
) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
    """Person boxes of each ``(key, image_bgr)``: yields ``(key, boxes_xywh (P, 4), scores (P,))``, best first.

    Images go through the model ``batch_size`` at a time (torchvision batches images of any size); the
    detector's own score threshold and NMS apply, and only persons are kept.
    """
    model = model.to(device)
    batch: list[tuple[object, np.ndarray]] = []

    def flush() -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
        with torch.inference_mode():
            outputs = model([_to_tensor(img, device) for _, img in batch])
        for (key, _), out in zip(batch, outputs):
            keep = out["labels"] == PERSON
            xyxy = out["boxes"][keep].float().cpu().numpy().astype(np.float64)  # (P, 4)
            scores = out["scores"][keep].float().cpu().numpy().astype(np.float64)  # (P,)
            order = np.argsort(-scores, kind="stable")
            xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)[order]
            yield key, xywh, scores[order]
        batch.clear()

    with tqdm(total=total, desc="detect", unit="img", disable=not progress) as bar:
        for item in images:
            batch.append(item)
            if len(batch) == batch_size:
                yield from flush()
                bar.update(batch_size)
        if batch:
            n = len(batch)
            yield from flush()
            bar.update(n)
