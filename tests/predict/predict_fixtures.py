"""Shared test data for tests/predict: a tiny synthetic video on disk, the real PoseTrack clip with hand-drawn
person boxes (tests/fixtures/poseval_real/video), and a smoke checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from poseval_fixtures import POSEVAL_REAL
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


def jpeg_claiming_size(data: bytes, size_wh: tuple[int, int]) -> bytes:
    """A baseline JPEG's bytes with its start-of-frame header patched to claim `size_wh` pixels (data unchanged)."""
    out = bytearray(data)
    sof = out.find(b"\xff\xc0")
    assert sof > 0, "not a baseline JPEG"
    out[sof + 5:sof + 9] = size_wh[1].to_bytes(2, "big") + size_wh[0].to_bytes(2, "big")  # height, then width
    return bytes(out)


def moving_boxes(num_frames: int, starts_xy, velocities_xy, size_wh=(20.0, 40.0)) -> list[np.ndarray]:
    """Per frame a (P, 4) array of boxes moving at constant velocity."""
    starts, vel = np.asarray(starts_xy, float), np.asarray(velocities_xy, float)
    return [np.concatenate([starts + t * vel, np.tile(size_wh, (len(starts), 1))], axis=1) for t in range(num_frames)]


CLIP = POSEVAL_REAL / "video" / "000001_mpiinew_test.mp4"
CLIP_WH, CLIP_FRAMES, CLIP_FPS = (1280, 720), 5, 30.0
# Two players per frame, boxed by hand on the clip (x, y, w, h pixels): the white #3 and the blue forward with
# the player he falls over; linear from frame 0 to frame 4 (the camera pans with them).
BOXES_FIRST = np.array([[360.0, 270.0, 200.0, 310.0], [600.0, 260.0, 240.0, 270.0]])
BOXES_LAST = np.array([[360.0, 280.0, 175.0, 310.0], [580.0, 280.0, 230.0, 260.0]])


def clip_boxes(num_frames: int = CLIP_FRAMES, scale: float = 1.0) -> list[dict]:
    """The hand-drawn boxes as a COCO results list (image_id = frame index), for frames `scale` times the clip's."""
    return [{"image_id": t, "category_id": 1, "score": 0.9, "bbox": (scale * box).tolist()}
            for t in range(num_frames)
            for box in BOXES_FIRST + (BOXES_LAST - BOXES_FIRST) * t / (CLIP_FRAMES - 1)]


def clip_frames() -> list[np.ndarray]:
    """The clip's frames, (720, 1280, 3) uint8 BGR."""
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames
