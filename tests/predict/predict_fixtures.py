"""Shared test data for tests/predict: a tiny synthetic video on disk and a smoke checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from vremd.config import Config, smoke_config
from vremd.data.posetrack import write_video
from vremd.data.synthetic.generate import render_video
from vremd.model.checkpoint import save_trained
from vremd.model.vremd import build_model


@dataclass(frozen=True)
class TinyVideo:
    """One synthetic video as a user would have it, plus its GT."""

    mp4: Path  # the frames encoded with mp4v
    frames_dir: Path  # the same frames as JPEGs (PoseTrack layout: <dataset>/images/val/<name>/)
    dataset_dir: Path
    gt_json: Path  # PoseTrack-2018 GT
    coco_json: Path  # COCO results list of the GT boxes, image_id = frame index
    name: str
    num_frames: int
    frames_bgr: list


def make_tiny_video(root: Path, index: int = 0) -> TinyVideo:
    """Render a smoke-sized synthetic video (vremd.data.synthetic.generate) and write it in every input form."""
    cfg = smoke_config().data.synthetic
    video, frames, _scene, _owners = render_video(cfg, "val", index)
    dataset = root / "dataset"
    frames_dir = dataset / "images" / "val" / video.name
    frames_dir.mkdir(parents=True)
    for t, image in enumerate(frames):
        cv2.imwrite(str(frames_dir / f"{t:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    gt_json = dataset / "annotations" / "val" / f"{video.name}.json"
    write_video(video, gt_json)
    mp4 = root / f"{video.name}.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames[0].shape[1], frames[0].shape[0]))
    for image in frames:
        writer.write(image)
    writer.release()
    dets = [{"image_id": f.frame_index, "category_id": 1, "bbox": list(p.bbox_xywh), "score": 0.9}
            for f in video.frames for p in f.persons]
    coco_json = root / "dets.json"
    coco_json.write_text(json.dumps(dets))
    return TinyVideo(mp4, frames_dir, dataset, gt_json, coco_json, video.name, len(frames), frames)


def save_smoke_checkpoint(path: Path, seed: int = 0, cfg: Config | None = None, **model_changes) -> Path:
    """A randomly initialised model of `cfg` (default: the smoke config), with `model_changes`, saved as training
    saves it (`save_trained`)."""
    cfg = smoke_config() if cfg is None else cfg
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_changes))
    torch.manual_seed(seed)
    return save_trained(path, build_model(cfg.model), cfg)  # creates the folder


def count_video_frames(path: Path) -> int:
    """Frames decodable from a video file."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def moving_boxes(num_frames: int, starts_xy, velocities_xy, size_wh=(20.0, 40.0)) -> list[np.ndarray]:
    """Per frame a (P, 4) array of boxes moving at constant velocity."""
    starts, vel = np.asarray(starts_xy, float), np.asarray(velocities_xy, float)
    return [np.concatenate([starts + t * vel, np.tile(size_wh, (len(starts), 1))], axis=1) for t in range(num_frames)]
