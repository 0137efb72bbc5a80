"""Batched VREMD inference on a video: 3-frame crops exactly as in training, heatmaps decoded to image pixels.

For each person box in frame t the box is clipped to the image, enlarged by `crops.enlarge` and widened to
the crop aspect (vremd.data.boxes), and the SAME box crops frames t-1, t, t+1 (neighbours clamped at the
video's ends, vremd.data.crops). Frames are decoded once, in a sliding window of 3; crops of many persons and
frames are batched; heatmaps are decoded (vremd.data.heatmaps) and mapped back through the crop affine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vremd.config import Config, ConfigError, CropsConfig, config_from_dict
from vremd.data.boxes import (
    BoxError, apply_affine, clip_box_xywh, crop_rect, crop_to_image_affine, pixels_to_box_xywh,
)
from vremd.data.crops import crop_frames, neighbour_indices
from vremd.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from vremd.data.heatmaps import decode, heatmap_to_input_xy
from vremd.frames import NUM_FRAMES
from vremd.model.backbone import load_vitpose_checkpoint
from vremd.model.config_check import check_model_config
from vremd.model.vremd import VREMD, arch_version_problem, build_model

from .boxes_io import BoxSet
from .video import VideoReadError, iter_frames


MAX_PENDING_FRAMES = 64  # frames held while their persons wait for a full batch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit its model; the message names file and keys."""


# ------------------------------------------------------------------------------------------ checkpoints


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `module.` (DDP) and `_orig_mod.` (torch.compile) wrappers' key prefixes."""
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def state_dict_problems(model: torch.nn.Module, sd: dict[str, torch.Tensor], optional_prefix: str = "") -> list[str]:
    """Missing, unexpected and misshapen keys of `sd` against `model` (keys under `optional_prefix` may be missing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not (optional_prefix and k.startswith(optional_prefix))]
    unexpected = [k for k in sd if k not in own]
    misshapen = [f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                 for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    out = []
    for name, keys in (("misshapen", misshapen), ("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            out.append(f"{len(keys)} {name} keys: {shown}")
    return out


def _read_checkpoint(path: Path, mmap: bool = False) -> tuple[dict[str, torch.Tensor], Config | None]:
    """(state dict, the config it carries or None) of a training checkpoint or a bare state dict."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several unrelated types for a non-checkpoint file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        sd, cfg_dict = raw["model"], raw.get("config")
    elif isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        sd, cfg_dict = raw, None
    else:
        raise CheckpointError(f"{path}: expected {{'model': state_dict, 'config': ...}} as written by training")
    try:
        return sd, (config_from_dict(cfg_dict) if cfg_dict is not None else None)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: config: {exc}") from None


def saved_config(checkpoint: str | Path) -> Config | None:
    """The config a checkpoint carries, None for one without (its tensors are memory-mapped, not read)."""
    return _read_checkpoint(Path(checkpoint), mmap=True)[1]


def load_model(
    checkpoint: str | Path, vitpose: str | Path | None = None,
    fallback_cfg: Config | Callable[[], Config] | None = None,
) -> tuple[VREMD, Config]:
    """Rebuild the trained model from a checkpoint and load it strictly; returns (model in eval mode, config).

    `checkpoint` is training's `{"model": state_dict, "config": config_to_dict(cfg)}` (models/final.pt): its
    own config builds and decodes the model. A bare state dict or one without "config" uses `fallback_cfg`
    (a callable is called only then, so an unrelated params.yaml is never read for a checkpoint with a
    config). A config the model cannot honour (vremd.model.config_check) is refused naming the file. With
    `vitpose`, the checkpoint may hold only the trained heads (backbone keys absent) and the backbone is
    loaded from that ViTPose .pth.
    """
    path = Path(checkpoint)
    sd, cfg = _read_checkpoint(path)
    source = f"{path}: config"
    if cfg is None and fallback_cfg is not None:
        cfg, source = (fallback_cfg() if callable(fallback_cfg) else fallback_cfg), f"{path}: the fallback config"
    elif cfg is None:
        raise CheckpointError(f"{path}: config: missing, and no --params/--profile config to build the model from")
    try:
        check_model_config(cfg, source=source)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    # the weights come from the checkpoint (or `vitpose`), never from the config's pretrained path
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=""))
    model = build_model(cfg.model)
    sd = _strip_prefixes(dict(sd))
    stale = arch_version_problem(sd)
    if stale:
        raise CheckpointError(f"{path}: {stale}")
    problems = state_dict_problems(model, sd, optional_prefix="backbone." if vitpose else "")
    if problems:
        raise CheckpointError(f"{path}: does not fit the model of its config (model.*): " + "; ".join(problems))
    model.load_state_dict(sd, strict=vitpose is None)
    if vitpose is not None:
        load_vitpose_checkpoint(model.backbone, vitpose)
    return model.eval(), cfg


# ------------------------------------------------------------------------------------------ inference


def predict_crops(
    model: VREMD, crops_rgb: np.ndarray, device: str | torch.device = "cpu", return_aux: bool = False,
) -> dict[str, np.ndarray]:
    """Run the model on (B, T=3, H, W, 3) uint8 RGB crops.

    Returns "joints_xy" (B, J, 2) in crop-input pixels, "scores" (B, J) heatmap maxima, "heatmaps"
    (B, J, h, w) float32, and with `return_aux` the model's masks (B, T, N) and sampling points.
    """
    device = torch.device(device)
    x = torch.from_numpy(crops_rgb).to(device)  # (B, T, H, W, 3) uint8
    mean = torch.as_tensor(IMAGENET_MEAN, device=device)
    std = torch.as_tensor(IMAGENET_STD, device=device)
    x = ((x.float() / 255.0 - mean) / std).permute(0, 1, 4, 2, 3).contiguous()  # (B, T, 3, H, W)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(x, return_aux=return_aux)
    heatmaps = out["heatmaps"].float()  # (B, J, h, w)
    stride = crops_rgb.shape[2] // heatmaps.shape[2]
    xy_hm, maxvals = decode(heatmaps)  # (B, J, 2) heatmap pixels, (B, J)
    result = {
        "joints_xy": heatmap_to_input_xy(xy_hm, stride).cpu().numpy().astype(np.float64),
        "scores": maxvals.cpu().numpy().astype(np.float64),
        "heatmaps": heatmaps.cpu().numpy(),
    }
    for key in ("human_mask", "keypoint_mask", "sampling_points"):
        if key in out:
            result[key] = out[key].float().cpu().numpy()
    return result


def person_crop(frames_rgb: list[np.ndarray], box_xywh, cfg: CropsConfig, out: np.ndarray) -> np.ndarray:
    """Crop T frames with one person box exactly as training does; returns the (2, 3) crop->image affine.

    As vremd.data.crops.extract_video: clip the box to the image, enlarge it and widen it to the crop
    aspect, snap it to whole pixels, resize that rectangle of every frame into `out` (T, H, W, 3).
    Raises BoxError for a box with no area inside the image.
    """
    crop_wh = (cfg.width, cfg.height)
    height, width = frames_rgb[0].shape[:2]
    clipped = clip_box_xywh(box_xywh, (width, height))
    rect = crop_rect(clipped, cfg.enlarge, crop_wh)
    crop_frames(frames_rgb, rect, crop_wh, out=out)
    return crop_to_image_affine(pixels_to_box_xywh(rect), crop_wh)


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
) -> tuple[list[dict[str, np.ndarray]], RunStats]:
    """Predict every box of `boxes` on the video; returns per-frame results and run counts.

    A frame result has "joints_xy" (P, J, 2) image pixels, "scores" (P, J), "track_ids" (P,), "boxes_xywh"
    (P, 4). `on_frame(t, frame_bgr, result)` is called in frame order once a frame's persons are predicted
    (the overlay writer hooks in here).
    """
    crop_wh = (cfg.crops.width, cfg.crops.height)  # the training crops' size (= the model's input size)
    J = cfg.model.num_joints
    stats = RunStats()
    results: list[dict[str, np.ndarray]] = []
    pending_frames: list[tuple[int, np.ndarray]] = []  # frames waiting for their persons' predictions
    jobs: list[CropJob] = []
    batch = np.empty((batch_size, NUM_FRAMES, crop_wh[1], crop_wh[0], 3), np.uint8)  # (B, T, H, W, 3)

    def flush() -> None:
        if jobs:
            out = predict_crops(model, batch[:len(jobs)], device)
            for k, job in enumerate(jobs):
                res = results[job.frame_index]
                res["joints_xy"][job.slot] = apply_affine(job.crop_to_image, out["joints_xy"][k])
                res["scores"][job.slot] = out["scores"][k]
            stats.crops += len(jobs)
            jobs.clear()
        for t, frame in pending_frames:
            if on_frame is not None:
                on_frame(t, frame, _valid_only(results[t]))
        pending_frames.clear()

    bar = tqdm(total=len(boxes.frames), desc="predict", unit="frame", disable=not progress)
    for t, frame_bgr, window_rgb in frame_windows(video_path):
        if t >= len(boxes.frames):
            break  # the box file covers fewer frames than the video: stop at its end
        fb = boxes.frames[t]
        P = len(fb.scores)
        results.append({
            "joints_xy": np.zeros((P, J, 2)), "scores": np.zeros((P, J)), "track_ids": fb.track_ids.copy(),
            "boxes_xywh": fb.boxes_xywh.copy(), "valid": np.ones(P, bool),
        })
        for p in range(P):
            try:
                crop_to_image = person_crop(window_rgb, fb.boxes_xywh[p], cfg.crops, out=batch[len(jobs)])
            except BoxError as exc:
                results[t]["valid"][p] = False
                stats.skipped_boxes.append(f"frame {t} box {p}: {exc}")
                continue
            jobs.append(CropJob(t, p, crop_to_image))
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
    return [_valid_only(r) for r in results], stats


def _valid_only(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A frame result without its skipped boxes (and without the "valid" flags)."""
    keep = res["valid"]
    return {k: v[keep] for k, v in res.items() if k != "valid"}
