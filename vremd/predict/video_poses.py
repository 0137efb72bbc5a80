"""Batched VREMD inference on a video: 3-frame crops exactly as in training, then `inference.predict_crops`.

For each person box in frame t the box is clipped to the image, enlarged by `crops.enlarge` and widened to
the crop aspect (vremd.data.boxes), and the SAME box crops frames t-1, t, t+1 (neighbours clamped at the
video's ends, vremd.data.crops). Frames are decoded once, in a sliding window of 3; crops of many persons and
frames are batched. From there the path is validation's: `predict_crops`, then per frame `vremd.eval.postprocess`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from vremd.config import Config, CropsConfig, DetectConfig
from vremd.data.boxes import BoxError, clip_box_xywh, crop_rect, crop_to_image_affine, pixels_to_box_xywh
from vremd.data.crops import crop_frames, neighbour_indices
from vremd.eval.postprocess import PersonPoses, crop_box_areas, postprocess
from vremd.frames import KEY, NUM_FRAMES
from vremd.model.vremd import VREMD

from .boxes_io import BoxSet
from .inference import predict_crops
from .video import VideoReadError, iter_frames

MAX_PENDING_FRAMES = 64  # frames held while their persons wait for a full batch


class PersonCrop(NamedTuple):
    """Where one person's crop lies in its image."""

    crop_to_image: np.ndarray  # (2, 3) crop pixels -> image pixels
    box_xywh: tuple[float, float, float, float]  # the crop box in image pixels (the index's `box_xywh`)


def person_crop(frames_rgb: list[np.ndarray], box_xywh, cfg: CropsConfig, out: np.ndarray) -> PersonCrop:
    """Crop T frames with one person box exactly as training does into `out` (T, H, W, 3); returns where.

    As vremd.data.crops.extract_video: clip the box to the image, enlarge it and widen it to the crop
    aspect, snap it to whole pixels, resize that rectangle of every frame into `out`.
    Raises BoxError for a box with no area inside the image.
    """
    crop_wh = (cfg.width, cfg.height)
    height, width = frames_rgb[KEY].shape[:2]  # the box is in the key frame's pixels
    clipped = clip_box_xywh(box_xywh, (width, height))
    rect = crop_rect(clipped, cfg.enlarge, crop_wh)
    crop_frames(frames_rgb, rect, crop_wh, out=out)
    crop_box = pixels_to_box_xywh(rect)
    return PersonCrop(crop_to_image_affine(crop_box, crop_wh), crop_box)


@dataclass(frozen=True)
class CropJob:
    """One person box of one frame, cropped and waiting for the model."""

    frame_index: int
    slot: int  # position of the box in its frame's box list
    crop_to_image: np.ndarray  # (2, 3)


def frame_windows(path: str | Path) -> Iterator[tuple[int, np.ndarray, list[np.ndarray]]]:
    """Yield (t, frame_t BGR, [RGB t-1, t, t+1]) over a video, each frame decoded once, ends clamped."""
    frames = iter_frames(path)
    window: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # index -> (BGR, RGB)
    t, done = 0, False

    def pull(i: int) -> None:
        nonlocal done
        if not done and i not in window:
            bgr = next(frames, None)
            if bgr is None:
                done = True
            else:
                window[i] = (bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    pull(0)
    if not window:
        raise VideoReadError(f"{path}: no frames could be decoded")
    while t in window:
        pull(t + 1)
        n = t + 2 if (t + 1) in window else t + 1  # frames known so far (clamp uses the real end)
        idx, _clamped = neighbour_indices(t, n)
        yield t, window[t][0], [window[i][1] for i in idx]
        window.pop(t - 1, None)
        t += 1


@dataclass
class RunStats:
    """Counts of what a run did."""

    frames: int = 0
    crops: int = 0
    skipped_boxes: list[str] = field(default_factory=list)


def predict_video(
    model: VREMD, cfg: Config, video_path: str | Path, boxes: BoxSet, batch_size: int = 32,
    device: str = "cpu", on_frame: Callable[[int, np.ndarray, dict], None] | None = None, progress: bool = True,
    flip_test: bool | None = None, postprocess: str | None = None,
) -> tuple[list[dict[str, np.ndarray]], RunStats]:
    """Predict every box of `boxes` on the video; returns per-frame results and run counts.

    `flip_test` defaults to `cfg.train.flip_test` and `postprocess` to `cfg.detect.postprocess`, so a model is
    predicted as its validation scored it: each frame's poses go through `vremd.eval.postprocess` (joint
    scores = heatmap maximum x box score; a detector's boxes, `boxes.detected`, kept or OKS-NMS'd).

    A frame result has "joints_xy" (P, J, 2) image pixels, "scores" (P, J), "track_ids" (P,), "boxes_xywh"
    (P, 4), "box_scores" (P,): the boxes that were cropped and kept. `on_frame(t, frame_bgr, result)` is called
    in frame order once a frame's persons are predicted (the overlay writer hooks in here).
    """
    crop_wh = (cfg.crops.width, cfg.crops.height)  # the training crops' size (= the model's input size)
    J = cfg.model.num_joints
    flip_test = cfg.train.flip_test if flip_test is None else flip_test
    detect = cfg.detect if postprocess is None else dataclasses.replace(cfg.detect, postprocess=postprocess)
    stats = RunStats()
    results: list[dict[str, np.ndarray]] = []
    pending_frames: list[tuple[int, np.ndarray]] = []  # frames waiting for their persons' predictions
    jobs: list[CropJob] = []
    batch = np.empty((batch_size, NUM_FRAMES, crop_wh[1], crop_wh[0], 3), np.uint8)  # (B, T, H, W, 3)

    def flush() -> None:
        if jobs:
            affines = np.stack([job.crop_to_image for job in jobs])  # (B, 2, 3)
            out = predict_crops(model, batch[:len(jobs)], device, flip_test=flip_test, crop_to_image=affines)
            for k, job in enumerate(jobs):
                res = results[job.frame_index]
                res["joints_xy"][job.slot] = out["joints_xy"][k]
                res["maxvals"][job.slot] = out["scores"][k]
            stats.crops += len(jobs)
            jobs.clear()
        for t, frame in pending_frames:
            results[t] = _finished(results[t], detect, cfg.model.annotated_joints, boxes.detected)
            if on_frame is not None:
                on_frame(t, frame, results[t])
        pending_frames.clear()

    bar = tqdm(total=len(boxes.frames), desc="predict", unit="frame", disable=not progress)
    for t, frame_bgr, window_rgb in frame_windows(video_path):
        if t >= len(boxes.frames):
            break  # the box file covers fewer frames than the video: stop at its end
        fb = boxes.frames[t]
        P = len(fb.scores)
        results.append({
            "joints_xy": np.zeros((P, J, 2)), "maxvals": np.zeros((P, J)), "track_ids": fb.track_ids.copy(),
            "boxes_xywh": fb.boxes_xywh.copy(), "box_scores": fb.scores.copy(), "areas": np.zeros(P),
            "valid": np.ones(P, bool),
        })
        for p in range(P):
            try:
                crop = person_crop(window_rgb, fb.boxes_xywh[p], cfg.crops, out=batch[len(jobs)])
            except BoxError as exc:
                results[t]["valid"][p] = False
                stats.skipped_boxes.append(f"frame {t} box {p}: {exc}")
                continue
            results[t]["areas"][p] = crop_box_areas([crop.box_xywh])[0]
            jobs.append(CropJob(t, p, crop.crop_to_image))
            if len(jobs) == batch_size:
                flush()
        pending_frames.append((t, frame_bgr))
        if not jobs or len(pending_frames) >= MAX_PENDING_FRAMES:
            flush()  # bounds the frames held in memory when boxes are sparse
        stats.frames += 1
        bar.update(1)
    flush()
    bar.close()
    if stats.frames < len(boxes.frames) and any(len(f.scores) for f in boxes.frames[stats.frames:]):
        raise VideoReadError(f"{video_path}: only {stats.frames} frames could be decoded, but boxes exist for "
                             f"later frames (up to {len(boxes.frames) - 1})")
    return results, stats


def _finished(res: dict[str, np.ndarray], detect: DetectConfig, joint_slots: tuple[int, ...],
              detected: bool) -> dict[str, np.ndarray]:
    """A predicted frame's result as returned: its cropped boxes' poses post-processed (validation's path)."""
    valid = res["valid"]
    P = int(valid.sum())
    keep, scores = postprocess(PersonPoses(
        frame_keys=[0] * P, joints_xy=res["joints_xy"][valid], maxvals=res["maxvals"][valid],
        box_scores=res["box_scores"][valid], areas=res["areas"][valid], detected=np.full(P, detected),
    ), detect, joint_slots)
    out = {k: res[k][valid][keep] for k in ("joints_xy", "track_ids", "boxes_xywh", "box_scores")}
    return {**out, "scores": scores[keep]}
