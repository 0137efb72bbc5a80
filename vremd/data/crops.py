"""3-frame person crops of one video, extracted frame-major (each JPEG decoded once).

A sample is one person box in a labeled key frame t: the box is enlarged by 25% and widened to the
crop's aspect, snapped to pixel boundaries, and the SAME box crops frames t-1, t, t+1 (neighbour
indices clamped at the video's ends). Frames are decoded once per video into a sliding window of 3, so a frame shared by several
persons and by its neighbours' samples costs one decode. `crop_frames` (a resize of the box's pixels)
is the fast crop; `crop_sample` (warpAffine of the crop affine) is its reference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vremd.config import BadInputPolicy, CropsConfig
from vremd.data.boxes import (
    BoxError, apply_affine, box_from_keypoints, clip_box_xywh, crop_box_xywh, crop_to_image_affine,
    invert_affine, pixels_to_box_xywh, snap_box_to_pixels,
)
from vremd.data.detections import Detection
from vremd.data.joints import JOINT_NAMES

FRAME_OFFSETS = (-1, 0, 1)  # T = 3 frames, ordered t-1, t, t+1
MAX_MESSAGES = 20  # skip messages kept per video for the summary


class CropInputError(ValueError):
    """Bad input under `data.on_bad_input: error`; the message names the file and the field."""


@dataclass(frozen=True)
class PlannedSample:
    """One person box to crop, before any pixels are read (image coordinates)."""

    frame_index: int
    image_id: int
    file_name: str
    track_id: int
    person_id: int
    box_xywh: tuple[float, float, float, float] | None  # raw person box; None: derive from keypoints
    joints_xyv: np.ndarray  # (J, 3) image pixels + visibility
    score: float
    source: str  # "gt" or "det"


@dataclass
class VideoCrops:
    """The crops of one video: pixels, one row per sample, and counts of what was skipped.

    `crops` is the shard: raw (S, T=3, H, W, 3) uint8 RGB, or (crops.jpeg_quality > 0) the
    concatenated JPEG bytes (1-D uint8) of every frame crop, each row's `jpeg_offsets` (T + 1,)
    delimiting its T JPEGs.
    """

    crops: np.ndarray
    rows: list[dict]
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    clamped_neighbours: int = 0
    frames_decoded: int = 0

    def sample(self, row: int) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB crops of one sample."""
        return shard_sample(self.crops, row, self.rows[row]["jpeg_offsets"])


def shard_sample(shard: np.ndarray, row: int, jpeg_offsets) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB crops of one sample of a shard (raw, or JPEG bytes with offsets)."""
    if shard.ndim > 1:
        return np.asarray(shard[row])
    bounds = list(jpeg_offsets)
    return np.stack([cv2.imdecode(np.asarray(shard[a:b]), cv2.IMREAD_COLOR_RGB) for a, b in zip(bounds, bounds[1:])])


def neighbour_indices(t: int, num_frames: int) -> tuple[tuple[int, ...], bool]:
    """Frame indices (t-1, t, t+1) clamped to the video, and whether any was clamped."""
    idx = tuple(min(max(t + d, 0), num_frames - 1) for d in FRAME_OFFSETS)
    return idx, any(i != t + d for i, d in zip(idx, FRAME_OFFSETS))


MAX_FRAME_PIXELS = 8192 * 8192  # a frame header claiming more is refused before decoding (no huge allocation)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame: baseline, progressive, ...


def jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, or None if no such header is found."""
    data, i = buf.tobytes(), 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def read_frame(path: Path) -> np.ndarray:
    """Decode a JPEG to an (H, W, 3) uint8 BGR array; raises `CropInputError` naming the file."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise CropInputError(f"{path}: missing frame file") from None
    if buf.size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise CropInputError(f"{path}: corrupt JPEG (no start-of-image marker)")
    tail = buf[-64:].tobytes()
    if b"\xff\xd9" not in tail:
        raise CropInputError(f"{path}: truncated JPEG (no end-of-image marker)")
    size = jpeg_size(buf)
    if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
        raise CropInputError(f"{path}: JPEG header claims {size[1]}x{size[0]} pixels, more than the "
                             f"{MAX_FRAME_PIXELS} a frame may have")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV asserts on some malformed headers instead of returning None
        raise CropInputError(f"{path}: corrupt JPEG ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise CropInputError(f"{path}: corrupt JPEG (cannot be decoded)")
    return image


def crop_sample(frames: list[np.ndarray], image_to_crop: np.ndarray, crop_wh: tuple[int, int],
                out: np.ndarray | None = None) -> np.ndarray:
    """Reference crop: warp each of the T frames with the same (2, 3) image->crop affine: (T, H, W, 3) uint8."""
    w, h = crop_wh
    out = np.empty((len(frames), h, w, 3), np.uint8) if out is None else out
    for k, frame in enumerate(frames):
        cv2.warpAffine(frame, image_to_crop, (w, h), dst=out[k], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def crop_frames(frames: list[np.ndarray], rect: tuple[int, int, int, int], crop_wh: tuple[int, int],
                out: np.ndarray | None = None) -> np.ndarray:
    """Fast crop of the same pixel rectangle (col, row, width, height) from T frames: (T, H, W, 3) uint8.

    Equal, up to interpolation rounding, to `crop_sample` with the affine of
    `pixels_to_box_xywh(rect)`: a box on pixel boundaries is a plain resize of the pixels it
    covers (about 3x faster than warpAffine). Pixels outside the image are black.
    """
    col, row, rw, rh = rect
    w, h = crop_wh
    out = np.empty((len(frames), h, w, 3), np.uint8) if out is None else out
    img_h, img_w = frames[0].shape[:2]
    x0, y0, x1, y1 = max(col, 0), max(row, 0), min(col + rw, img_w), min(row + rh, img_h)
    inside = (x0, y0, x1, y1) == (col, row, col + rw, row + rh)
    for k, frame in enumerate(frames):
        if inside:
            roi = frame[row:row + rh, col:col + rw]
        else:  # pad with black where the rectangle leaves the image
            roi = np.zeros((rh, rw, 3), np.uint8)
            if x1 > x0 and y1 > y0:
                roi[y0 - row:y1 - row, x0 - col:x1 - col] = frame[y0:y1, x0:x1]
        cv2.resize(roi, (w, h), dst=out[k], interpolation=cv2.INTER_LINEAR)
    return out


def plan_samples(video, split: str, detections: dict[int, list[Detection]] | None = None) -> list[PlannedSample]:
    """Person boxes of the labeled frames: GT persons, or (val with detections) the detected boxes."""
    plan = []
    for frame in video.frames:
        if not frame.is_labeled:
            continue
        if detections is not None:
            for det in detections.get(frame.image_id, ()):
                plan.append(PlannedSample(
                    frame.frame_index, frame.image_id, frame.file_name, -1, -1, det.box_xywh,
                    np.zeros((len(JOINT_NAMES), 3)), det.score, "det"))
            continue
        for person in frame.persons:
            plan.append(PlannedSample(
                frame.frame_index, frame.image_id, frame.file_name, person.track_id, person.person_id,
                person.bbox_xywh, np.asarray(person.keypoints, np.float64), 1.0, "gt"))
    return plan


def _check_sample(s: PlannedSample, where: str, image_wh: tuple[int, int], cfg: CropsConfig,
                  split: str) -> tuple[str, str] | tuple[float, float, float, float]:
    """The clipped person box of a sample, or (reason, message) saying why it cannot be used."""
    vis = s.joints_xyv[:, 2] > 0
    w, h = image_wh
    xy = s.joints_xyv[vis, :2]
    outside = (xy[:, 0] < -1) | (xy[:, 0] > w) | (xy[:, 1] < -1) | (xy[:, 1] > h)
    if outside.any():
        j = int(np.flatnonzero(vis)[np.argmax(outside)])
        x, y = s.joints_xyv[j, :2]
        return "keypoints_outside", (f"{where}: keypoints: {JOINT_NAMES[j]} at ({x:g}, {y:g}) is outside "
                                     f"the {w}x{h} image")
    box = s.box_xywh if s.box_xywh is not None else box_from_keypoints(s.joints_xyv)
    if box is None:
        return "no_box", f"{where}: bbox: missing and fewer than 2 visible keypoints"
    try:
        clipped = clip_box_xywh(box, image_wh)
    except BoxError as exc:
        reason = "box_zero_area" if "zero area" in str(exc) else "box_outside"
        return reason, f"{where}: bbox: {exc}"
    if min(clipped[2], clipped[3]) < cfg.min_box_px:
        return "small_box", f"{where}: bbox: {clipped[2]:.1f}x{clipped[3]:.1f} px, below crops.min_box_px"
    if split == "train" and s.source == "gt" and not vis.any():
        return "no_visible_joints", f"{where}: keypoints: no visible joint to train on"
    return clipped


BAD_INPUT = {"keypoints_outside", "box_zero_area", "box_outside", "missing_frame", "corrupt_frame"}


def _skip(result: VideoCrops, policy: BadInputPolicy, reason: str, message: str) -> None:
    """Raise for bad input under policy "error"; otherwise count the skip and keep the message."""
    if policy == "error" and reason in BAD_INPUT:
        raise CropInputError(message)
    result.skipped[reason] += 1
    if len(result.messages) < MAX_MESSAGES:
        result.messages.append(message)


def _load_window(cache: dict, idx: tuple[int, ...], video, dataset_dir: Path, result: VideoCrops) -> None:
    """Decode the frames of `idx` not yet in the sliding-window cache; drop frames behind it."""
    for i in [i for i in cache if i < idx[0]]:
        del cache[i]
    for i in idx:
        if i not in cache:
            try:
                cache[i] = read_frame(dataset_dir / video.frames[i].file_name)
                result.frames_decoded += 1
            except CropInputError as exc:
                cache[i] = exc


def _row(s: PlannedSample, split: str, video, crop_box, crop_to_image, joints_crop, clamped, row) -> dict:
    return {
        "split": split, "video": video.name, "json_path": str(video.json_path),
        "frame_index": s.frame_index, "image_id": s.image_id, "file_name": s.file_name,
        "track_id": s.track_id, "person_id": s.person_id, "source": s.source,
        "box_xywh": [float(v) for v in crop_box], "score": s.score,
        "joints_crop_xyv": joints_crop.ravel().tolist(),  # (J, 3) row-major: x, y in crop pixels, v
        "num_visible": int((joints_crop[:, 2] > 0).sum()),
        "crop_to_image": crop_to_image.ravel().tolist(),  # (2, 3) row-major
        "neighbour_clamped": clamped, "row": row, "jpeg_offsets": [],
    }


def extract_video(video, split: str, dataset_dir: Path, cfg: CropsConfig, policy: BadInputPolicy,
                  detections: dict[int, list[Detection]] | None = None) -> VideoCrops:
    """All 3-frame crops of one video (a `posetrack.Video`), frame-major with a window of 3 decoded frames."""
    if not 0 <= cfg.jpeg_quality <= 100:
        raise ValueError(f"crops.jpeg_quality: expected 0 (raw pixels) or 1-100, found {cfg.jpeg_quality}")
    plan = plan_samples(video, split, detections)
    crop_wh = (cfg.width, cfg.height)
    T = len(FRAME_OFFSETS)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.jpeg_quality else None
    raw = np.empty((1 if jpeg else len(plan), T, cfg.height, cfg.width, 3), np.uint8)  # (S, T, H, W, 3) BGR
    encoded: list[np.ndarray] = []
    offset = 0
    result = VideoCrops(raw, [])
    cache: dict[int, np.ndarray | CropInputError] = {}
    n = 0
    for s in plan:  # plan is in frame order: the window only slides forward
        idx, clamped = neighbour_indices(s.frame_index, len(video.frames))
        _load_window(cache, idx, video, Path(dataset_dir), result)
        where = f"{video.json_path}: {s.file_name} person {s.person_id} (track {s.track_id})"
        bad = next((cache[i] for i in idx if isinstance(cache[i], CropInputError)), None)
        if bad is not None:
            reason = "missing_frame" if "missing" in str(bad) else "corrupt_frame"
            _skip(result, policy, reason, f"{bad} (needed by {where})")
            continue
        key = cache[s.frame_index]
        checked = _check_sample(s, where, (key.shape[1], key.shape[0]), cfg, split)
        if isinstance(checked[0], str):
            _skip(result, policy, *checked)
            continue
        rect = snap_box_to_pixels(crop_box_xywh(checked, cfg.enlarge, crop_wh))
        crop_box = pixels_to_box_xywh(rect)
        crop_to_image = crop_to_image_affine(crop_box, crop_wh)
        image_to_crop = invert_affine(crop_to_image)
        crop_frames([cache[i] for i in idx], rect, crop_wh, out=raw[0 if jpeg else n])
        joints = s.joints_xyv.copy()
        joints[:, :2] = apply_affine(image_to_crop, joints[:, :2])
        joints[:, 2] = (joints[:, 2] > 0).astype(np.float64)
        joints[joints[:, 2] == 0, :2] = 0.0
        result.rows.append(_row(s, split, video, crop_box, crop_to_image, joints, clamped, n))
        if jpeg:
            encoded.extend(cv2.imencode(".jpg", raw[0, k], jpeg)[1] for k in range(T))
            offsets = np.cumsum([offset] + [len(b) for b in encoded[-T:]])
            result.rows[-1]["jpeg_offsets"], offset = offsets.tolist(), int(offsets[-1])
        result.clamped_neighbours += int(clamped)
        n += 1
    if jpeg:
        result.crops = np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)
    else:
        result.crops = np.ascontiguousarray(raw[:n, ..., ::-1])  # BGR -> RGB once per video
    return result
