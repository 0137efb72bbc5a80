"""Figures from checkpoints and videos: the glue between inference and the array-only `figures` module."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from vremd.data.crops import neighbour_indices
from vremd.data.joints import UNANNOTATED_JOINTS
from vremd.data.posetrack import read_video
from vremd.errors import InputError
from vremd.frames import NUM_FRAMES
from vremd.model.checkpoint import load_trained

from .boxes_io import BoxSet, FrameBoxes, assign_tracks, load_boxes
from .figures import GroundTruth, compare_figure, head_size_from_box, sample_figure
from .inference import predict_crops
from .video_poses import person_crop, predict_video
from .video import iter_frames, probe


class FigureInputError(InputError):
    """Frames or persons asked for in a figure do not exist; the message names the file."""


def sample_report(model, crops_rgb: np.ndarray, out_png: str | Path, device: str = "cpu") -> Path:
    """Run `model` on one (T=3, H, W, 3) uint8 crop with aux outputs and draw `figures.sample_figure`."""
    out = predict_crops(model, crops_rgb[None], device, return_aux=True)
    grid_hw = model.backbone.grid_hw
    joints_xy = out["joints_xy"][0].astype(np.float64)  # (J, 2)
    joints_xy[list(UNANNOTATED_JOINTS)] = np.nan  # the model does not predict the ears: nothing to draw
    return sample_figure(
        crops_rgb, out["heatmaps"][0], out_png, grid_hw,
        human_mask=out["human_mask"][0], keypoint_mask=out["keypoint_mask"][0],
        sampling_points=out["sampling_points"][0] if "sampling_points" in out else None,
        joints_xy=joints_xy,
    )


def _only_frames(boxes: BoxSet, keep: list[int]) -> BoxSet:
    empty = FrameBoxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    frames = tuple(f if t in keep else empty for t, f in enumerate(boxes.frames))
    return dataclasses.replace(boxes, frames=frames)


def _gt_by_track(gt_json: Path, boxes: BoxSet, frame: int, track_ids: np.ndarray, num_joints: int) -> GroundTruth:
    """GT of video frame `frame` (per `boxes.image_frames`) aligned with predicted track ids (unmatched tracks,
    or a frame the json does not list: nothing annotated)."""
    image_ids = {boxes.images[k]["id"] for k, t in enumerate(boxes.image_frames) if t == frame}
    persons = {p.track_id: p for f in read_video(gt_json).frames if f.image_id in image_ids for p in f.persons}
    P = len(track_ids)
    xy, vis, head = np.zeros((P, num_joints, 2)), np.zeros((P, num_joints)), np.ones(P)
    for k, tid in enumerate(track_ids):
        person = persons.get(int(tid))
        if person is not None and person.bbox_head_xywh is not None:
            xy[k], vis[k] = person.keypoints[:, :2], person.keypoints[:, 2] > 0
            head[k] = head_size_from_box(person.bbox_head_xywh)
    return GroundTruth(xy, vis, head)


def compare_checkpoints(
    checkpoint_a: Path, checkpoint_b: Path, video: Path, boxes_path: Path, frames: list[int], out_png: Path,
    labels: tuple[str, str] = ("A", "B"), device: str = "cpu",
) -> Path:
    """Figure 3 style comparison of two checkpoints on `frames` of a video, same boxes for both.

    When `boxes_path` is a PoseTrack json with keypoints, it is also the GT: predictions are paired with
    GT persons by track id and joints beyond PCKh@0.5 are circled red.
    """
    info = probe(video)
    bad = [t for t in frames if not 0 <= t < info.num_frames]
    if bad:
        raise FigureInputError(f"{video}: frames {bad} do not exist (the video has {info.num_frames})")
    boxes = _only_frames(assign_tracks(load_boxes(boxes_path, info.frame_names), track=False), frames)
    preds = []
    for ckpt in (checkpoint_a, checkpoint_b):
        model, cfg = load_trained(ckpt)
        results, _ = predict_video(model.to(device), cfg, video, boxes, device=device, progress=False)
        preds.append([results[t] for t in frames])
    images = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for t, img in enumerate(iter_frames(video)) if t in frames]
    gt = None
    if boxes.images is not None:  # a PoseTrack json: its keypoints are the GT
        J = preds[0][0]["joints_xy"].shape[1]
        gt = [_gt_by_track(Path(boxes_path), boxes, t, r["track_ids"], J) for t, r in zip(frames, preds[0])]
    return compare_figure(images, [r["joints_xy"] for r in preds[0]], [r["joints_xy"] for r in preds[1]],
                          out_png, labels, gt, [f"frame {t}" for t in frames])


def sample_report_from_video(
    checkpoint: Path, video: Path, boxes_path: Path, out_png: Path, frame: int | None = None, person: int = 0,
    device: str = "cpu",
) -> Path:
    """Heatmap and mask figure for one person of a video (default: the first frame that has a box)."""
    info = probe(video)
    boxes = load_boxes(boxes_path, info.frame_names)
    if frame is None:
        frame = next(t for t, f in enumerate(boxes.frames) if len(f.scores))
    if not 0 <= frame < info.num_frames or person >= len(boxes.frames[frame].scores):
        raise FigureInputError(f"{boxes_path}: frame {frame} has no box {person} (video of {info.num_frames} frames)")
    model, cfg = load_trained(checkpoint)
    idx, _clamped = neighbour_indices(frame, info.num_frames)  # t-1, t, t+1 clamped to the video
    frames = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for t, img in enumerate(iter_frames(video)) if t in idx]
    frames = [frames[sorted(set(idx)).index(i)] for i in idx]
    crops = np.empty((NUM_FRAMES, cfg.crops.height, cfg.crops.width, 3), np.uint8)
    person_crop(frames, boxes.frames[frame].boxes_xywh[person], cfg.crops, out=crops)
    return sample_report(model.to(device), crops, out_png, device)
