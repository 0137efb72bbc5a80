"""3-frame person crops of one video, extracted frame-major (each JPEG decoded once).

A sample is one person box in a labeled key frame t: the box is enlarged by 25% and widened to the
crop's aspect, snapped to pixel boundaries, and the SAME box crops frames t-1, t, t+1 (by frame number;
clamped to t at the video's ends and where the json does not list the neighbour). Frames are decoded
once per video into a sliding window of 3, so a frame shared by several persons and by its neighbours'
samples costs one decode. `crop_frames` (a resize of the box's pixels)
is the fast crop; `crop_sample` (warpAffine of the crop affine) is its reference.

Two passes per video: the first reads each needed file once, checks every sample against the
image size in the JPEG header and fixes its pixel rectangle; the second decodes each frame once,
at 1/2 or 1/4 resolution (libjpeg's DCT scaling, about 3x cheaper at 1280x720) when every
rectangle that frame serves is at least that many times the crop size, and crops with the
rectangle mapped exactly into the reduced frame. Boxes and affines are unchanged; pixels agree
with a full-resolution decode up to resampling differences (tests bound them).

Train crops keep a margin of the frame around them (`crops.train_context_scale`): the augmentation's
rotations and zoom-outs then warp real pixels, as DCPose's warp of the whole frame does, and the
crop itself is the canvas's centre window (`margin_px` in each row).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vremd.config import BadInputPolicy, ConfigError, CropsConfig
from vremd.data.boxes import (
    BoxError, box_from_keypoints, clip_box_xywh, crop_rect, crop_to_image_affine, pixels_to_box_xywh, warp_margin_px,
)
from vremd.data.detections import Detection
from vremd.data.joints import JOINT_NAMES, annotated_joints
from vremd.data.jpeg import DECODE_SCALES, JpegError, decode_jpeg, load_jpeg
from vremd.data.shards import shard_sample
from vremd.errors import InputError
from vremd.frames import FRAME_OFFSETS, NUM_FRAMES

MAX_MESSAGES = 20  # skip messages kept per video for the summary


class CropInputError(InputError):
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

    `crops` is the shard: raw (S, T=3, H', W', 3) uint8 RGB, or (crops.jpeg_quality > 0) the
    concatenated JPEG bytes (1-D uint8) of every frame crop, each row's `jpeg_offsets` (T + 1,)
    delimiting its T JPEGs. H' = H + 2 my, W' = W + 2 mx: train crops are stored with the rows'
    `margin_px` (mx, my) of the frame around them (`train_margin_px`), val crops without.
    """

    crops: np.ndarray
    rows: list[dict]
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    clamped_neighbours: int = 0
    frames_decoded: int = 0
    decode_scales: Counter = field(default_factory=Counter)  # frames decoded at 1/scale: {scale: count}

    def sample(self, row: int) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB crops of one sample."""
        return shard_sample(self.crops, row, self.rows[row]["jpeg_offsets"])


def neighbour_indices(t: int, num_frames: int, frame_numbers: Sequence[int] | None = None,
                      ) -> tuple[tuple[int, ...], bool]:
    """Frame indices (t-1, t, t+1) clamped to the video, and whether any was clamped.

    `frame_numbers` (ascending, one per frame; default 0, 1, 2, ...) are the frames' real numbers: a
    neighbour whose number is not among them (a json listing only some frames) is clamped to t, as at
    the video's ends, never replaced by a farther frame.
    """
    def index(d: int) -> int:
        i = t + d
        if not 0 <= i < num_frames or (frame_numbers is not None and frame_numbers[i] != frame_numbers[t] + d):
            return t
        return i

    idx = tuple(index(d) for d in FRAME_OFFSETS)
    return idx, any(i != t + d for i, d in zip(idx, FRAME_OFFSETS))


# A reduced frame is cropped by warpAffine (the rectangle maps to fractional reduced pixels), about
# 0.2 ms more per 192x256 crop than the plain resize of a full-resolution frame, while libjpeg's DCT
# scaling saves only 0.6-1 ms of a 1280x720 decode (Huffman decoding is not reduced): worth it only
# for frames few crops are taken from (1 person: its sample and both neighbours' samples).
REDUCED_MAX_CROPS = 3


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
                out: np.ndarray | None = None, scales: tuple[int, ...] | None = None,
                margin_px: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Fast crop of the same pixel rectangle (col, row, width, height) from T frames: (T, H, W, 3) uint8.

    Equal, up to interpolation rounding, to `crop_sample` with the affine of
    `pixels_to_box_xywh(rect)`: a box on pixel boundaries is a plain resize of the pixels it
    covers (about 3x faster than warpAffine). Pixels outside the image are black. `scales[k]`
    (default 1) says frame k was decoded at 1/scale of the image the rectangle refers to: its
    reduced pixel j covers image pixels scale*j .. scale*j + scale - 1, and the rectangle is
    mapped exactly into it (a warp of only the crop's pixels). `margin_px` (mx, my) widens the
    output by that many pixels of the same scale on each side: (T, H + 2 my, W + 2 mx, 3), the crop
    at [my:my + H, mx:mx + W].
    """
    col, row, rw, rh = rect
    w, h = crop_wh
    mx, my = margin_px
    out = np.empty((len(frames), h + 2 * my, w + 2 * mx, 3), np.uint8) if out is None else out
    out_wh = (w + 2 * mx, h + 2 * my)
    for k, frame in enumerate(frames):
        scale = 1 if scales is None else scales[k]
        img_h, img_w = frame.shape[:2]
        inside = col >= 0 and row >= 0 and col + rw <= img_w and row + rh <= img_h
        if scale == 1 and inside and margin_px == (0, 0):
            cv2.resize(frame[row:row + rh, col:col + rw], (w, h), dst=out[k], interpolation=cv2.INTER_LINEAR)
            continue
        # output pixel u -> crop pixel u - mx -> image x = col - 0.5 + (u - mx + 0.5) rw / w
        # -> reduced x / scale + (1 / scale - 1) / 2
        sx, sy = rw / w, rh / h
        crop_to_frame = np.array([[sx / scale, 0.0, (col + (0.5 - mx) * sx) / scale - 0.5],
                                  [0.0, sy / scale, (row + (0.5 - my) * sy) / scale - 0.5]])
        if scale == 1:
            cv2.warpAffine(frame, crop_to_frame, out_wh, dst=out[k], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            continue
        cv2.warpAffine(frame, crop_to_frame, out_wh, dst=out[k], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
        # a reduced edge pixel would fade to black over `scale` image pixels: fade it as a full-resolution
        # bilinear warp does, over [-1, 0] and [W - 1, W] in image coordinates (weight = coverage)
        x = col - 0.5 + (np.arange(out_wh[0]) - mx + 0.5) * sx  # image position of each output column / row
        y = row - 0.5 + (np.arange(out_wh[1]) - my + 0.5) * sy
        wx = np.clip(np.minimum(x + 1.0, scale * img_w - x), 0.0, 1.0)
        wy = np.clip(np.minimum(y + 1.0, scale * img_h - y), 0.0, 1.0)
        cols, rows = np.flatnonzero(wx < 1.0), np.flatnonzero(wy < 1.0)  # a few at most: touch only those
        if cols.size:
            out[k][:, cols] = (out[k][:, cols] * wx[cols][None, :, None] + 0.5).astype(np.uint8)
        if rows.size:
            out[k][rows] = (out[k][rows] * wy[rows][:, None, None] + 0.5).astype(np.uint8)
    return out


def plan_samples(video, split: str, detections: dict[int, list[Detection]] | None = None) -> list[PlannedSample]:
    """Person boxes to crop: GT persons, or (val with detections) the detected boxes.

    Train takes the `is_labeled` frames. Val also takes any frame that has GT persons: poseval never
    reads `is_labeled` and scores every frame with a GT person, so such a person needs a prediction.
    """
    plan = []
    for frame in video.frames:
        if not (frame.is_labeled or (split == "val" and frame.persons)):
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


# A joint annotated outside the frame is data: PoseTrack annotates heads and feet cut by the image edge
# where they are (real val person 1012834000010 has head_top at (424.04, -24.94) in a 1920x1080 frame).
# A joint more than this many image sizes beyond an edge (x < -W or x > 2W; likewise y) is an error:
# it would need a person over twice the frame's size reaching in from outside, which a camera framing a
# scene does not produce; such values are coordinates in other units, another resolution or swapped axes.
MAX_OUTSIDE_IMAGE_SIZES = 1.0


def _check_sample(s: PlannedSample, where: str, image_wh: tuple[int, int], cfg: CropsConfig,
                  split: str) -> tuple[str, str] | tuple[float, float, float, float]:
    """The clipped person box of a sample, or (reason, message) saying why it cannot be used."""
    vis = s.joints_xyv[:, 2] > 0
    w, h = image_wh
    annotated = annotated_joints(s.joints_xyv)
    xy = s.joints_xyv[annotated, :2]
    far = MAX_OUTSIDE_IMAGE_SIZES
    absurd = (xy[:, 0] < -far * w) | (xy[:, 0] > (1 + far) * w) | (xy[:, 1] < -far * h) | (xy[:, 1] > (1 + far) * h)
    if absurd.any():
        j = int(np.flatnonzero(annotated)[np.argmax(absurd)])
        x, y = s.joints_xyv[j, :2]
        return "keypoints_far_outside", (f"{where}: keypoints: {JOINT_NAMES[j]} at ({x:g}, {y:g}) is more than "
                                         f"{far:g} image size(s) outside the {w}x{h} image")
    if split == "val" and s.source == "gt" and not annotated.any():
        return "no_joints", f"{where}: keypoints: none annotated (poseval does not count this person)"
    box = s.box_xywh if s.box_xywh is not None else box_from_keypoints(s.joints_xyv)
    if box is None:
        return "no_box", f"{where}: bbox: missing and fewer than 2 visible keypoints"
    try:
        clipped = clip_box_xywh(box, image_wh)
    except BoxError as exc:
        reason = "box_zero_area" if "zero area" in str(exc) else "box_outside"
        return reason, f"{where}: bbox: {exc}"
    if split == "train" and min(clipped[2], clipped[3]) < cfg.min_box_px:  # val persons are scored, any size
        return "small_box", f"{where}: bbox: {clipped[2]:.1f}x{clipped[3]:.1f} px, below crops.min_box_px"
    if split == "train" and s.source == "gt" and not vis.any():
        return "no_visible_joints", f"{where}: keypoints: no visible joint to train on"
    return clipped


BAD_INPUT = {"keypoints_far_outside", "box_zero_area", "box_outside", "missing_frame", "corrupt_frame"}


def _skip(result: VideoCrops, policy: BadInputPolicy, reason: str, message: str) -> None:
    """Raise for bad input under policy "error"; otherwise count the skip and keep the message."""
    if policy == "error" and reason in BAD_INPUT:
        raise CropInputError(message)
    result.skipped[reason] += 1
    if len(result.messages) < MAX_MESSAGES:
        result.messages.append(message)


@dataclass
class _File:
    """A frame file read in the first pass: its bytes and header size, or the image if it had to be decoded."""

    buf: np.ndarray | None
    hw: tuple[int, int]
    image: np.ndarray | None = None


def _load_file(path: Path, result: VideoCrops) -> _File | JpegError:
    """Read a frame file once; decode it now only if its header gives no size."""
    try:
        buf, hw = load_jpeg(path)
        if hw is not None:
            return _File(buf, hw)
        image = decode_jpeg(buf, path)
        result.frames_decoded += 1
        result.decode_scales[1] += 1
        return _File(None, image.shape[:2], image)
    except JpegError as exc:
        return exc


def _decode_scales(jobs: list, crop_wh: tuple[int, int], mode: str) -> dict[int, int]:
    """Per frame, the decode reduction: the largest scale such that every rectangle the frame serves
    is at least that many times the crop size, in mode "always"; in mode "auto" only for frames that
    serve at most `REDUCED_MAX_CROPS` crops; 1 everywhere in mode "never"."""
    ratio: dict[int, float] = {}
    uses: Counter = Counter()
    for _, idx, _, rect in jobs:
        r = min(rect[2] / crop_wh[0], rect[3] / crop_wh[1])
        for i in idx:
            ratio[i] = min(ratio.get(i, r), r)
            uses[i] += 1
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"reduced_decode: expected auto, always or never, found {mode!r}")
    return {i: 1 if mode == "never" or (mode == "auto" and uses[i] > REDUCED_MAX_CROPS)
            else next(s for s in DECODE_SCALES if s <= r or s == 1) for i, r in ratio.items()}


def _load_window(cache: dict, idx: tuple[int, ...], files: dict, scales: dict, video, dataset_dir: Path,
                 result: VideoCrops) -> None:
    """Decode the frames of `idx` not yet in the sliding-window cache (at their scale); drop frames behind it."""
    for i in [i for i in cache if i < idx[0]]:
        del cache[i]
    for i in idx:
        if i in cache:
            continue
        file = files.pop(i)
        if file.image is not None:
            cache[i] = (file.image, 1)
            continue
        path = dataset_dir / video.frames[i].file_name
        scale = scales[i]
        try:
            image = decode_jpeg(file.buf, path, scale)
            if scale > 1 and image.shape[:2] != tuple(-(-n // scale) for n in file.hw):  # e.g. EXIF rotation
                image, scale = decode_jpeg(file.buf, path), 1
            result.frames_decoded += 1
            result.decode_scales[scale] += 1
            cache[i] = (image, scale)
        except JpegError as exc:
            cache[i] = exc


def train_margin_px(cfg: CropsConfig, split: str) -> tuple[int, int]:
    """The canvas margin (x, y) stored around each crop of `split`: train crops keep every rotation of the crop
    zoomed out by `crops.train_context_scale`; val crops (never augmented) and a scale of 0 keep none."""
    if split != "train" or cfg.train_context_scale <= 0:
        return 0, 0
    return warp_margin_px((cfg.width, cfg.height), cfg.train_context_scale, 90.0)


def _row(s: PlannedSample, split: str, video, crop_box, crop_to_image, joints_crop, clamped, row, margin) -> dict:
    return {
        "split": split, "video": video.name, "json_path": str(video.json_path),
        "frame_index": s.frame_index, "image_id": s.image_id, "file_name": s.file_name,
        "track_id": s.track_id, "person_id": s.person_id, "source": s.source,
        "box_xywh": [float(v) for v in crop_box], "score": s.score,
        "joints_crop_xyv": joints_crop.ravel().tolist(),  # (J, 3) row-major: x, y in crop pixels, v
        "num_visible": int((joints_crop[:, 2] > 0).sum()),
        "crop_to_image": crop_to_image.ravel().tolist(),  # (2, 3) row-major
        "neighbour_clamped": clamped, "row": row, "jpeg_offsets": [],
        "margin_px": list(margin),  # (x, y) stored pixels on each side of the crop (`train_margin_px`)
    }


def _invert_scale_shift(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) axis-aligned scale + shift affine (a crop affine), without a matrix inverse."""
    (sx, _, tx), (_, sy, ty) = affine
    return np.array([[1.0 / sx, 0.0, -tx / sx], [0.0, 1.0 / sy, -ty / sy]])


def extract_video(video, split: str, dataset_dir: Path, cfg: CropsConfig, policy: BadInputPolicy,
                  detections: dict[int, list[Detection]] | None = None, *, reduced_decode: str = "auto") -> VideoCrops:
    """All 3-frame crops of one video (a `posetrack.Video`), frame-major with a window of 3 decoded frames.

    `reduced_decode`: "auto" decodes at 1/2 or 1/4 where the boxes allow it and the frame serves at
    most `REDUCED_MAX_CROPS` crops, "always" wherever the boxes allow it, "never" at full resolution.
    """
    if not 0 <= cfg.jpeg_quality <= 100:
        raise ConfigError(f"crops.jpeg_quality: expected 0 (raw pixels) or 1-100, found {cfg.jpeg_quality}")
    dataset_dir = Path(dataset_dir)
    plan = plan_samples(video, split, detections)
    crop_wh = (cfg.width, cfg.height)
    result = VideoCrops(np.zeros(0, np.uint8), [])
    # pass 1: read each needed file once, check every sample against its key frame's size, fix its rectangle
    files: dict[int, _File | JpegError] = {}
    jobs = []  # (sample, neighbour indices, clamped, pixel rectangle), in frame order
    for s in plan:
        idx, clamped = neighbour_indices(s.frame_index, len(video.frames), video.frame_numbers)
        for i in idx:
            if i not in files:
                files[i] = _load_file(dataset_dir / video.frames[i].file_name, result)
        where = f"{video.json_path}: {s.file_name} person {s.person_id} (track {s.track_id})"
        bad = next((files[i] for i in idx if isinstance(files[i], JpegError)), None)
        if bad is not None:
            reason = "missing_frame" if "missing" in str(bad) else "corrupt_frame"
            _skip(result, policy, reason, f"{bad} (needed by {where})")
            continue
        key_h, key_w = files[s.frame_index].hw
        checked = _check_sample(s, where, (key_w, key_h), cfg, split)
        if isinstance(checked[0], str):
            _skip(result, policy, *checked)
            continue
        jobs.append((s, idx, clamped, crop_rect(checked, cfg.enlarge, crop_wh)))
    scales = _decode_scales(jobs, crop_wh, reduced_decode)
    # pass 2: decode each frame once into a sliding window of 3, crop, encode
    T = NUM_FRAMES
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.jpeg_quality else None
    margin = train_margin_px(cfg, split)
    canvas_hw = (cfg.height + 2 * margin[1], cfg.width + 2 * margin[0])
    raw = np.empty((1 if jpeg else len(jobs), T, *canvas_hw, 3), np.uint8)  # (S, T, H + 2 my, W + 2 mx, 3) BGR
    encoded: list[np.ndarray] = []
    offset = 0
    cache: dict[int, tuple[np.ndarray, int] | JpegError] = {}
    n = 0
    for s, idx, clamped, rect in jobs:  # jobs are in frame order: the window only slides forward
        _load_window(cache, idx, files, scales, video, dataset_dir, result)
        bad = next((cache[i] for i in idx if isinstance(cache[i], JpegError)), None)
        if bad is not None:  # a header that read fine but whose data does not decode
            where = f"{video.json_path}: {s.file_name} person {s.person_id} (track {s.track_id})"
            _skip(result, policy, "corrupt_frame", f"{bad} (needed by {where})")
            continue
        crop_box = pixels_to_box_xywh(rect)
        crop_to_image = crop_to_image_affine(crop_box, crop_wh)
        image_to_crop = _invert_scale_shift(crop_to_image)
        out = raw[0 if jpeg else n]
        crop_frames([cache[i][0] for i in idx], rect, crop_wh, out=out, scales=tuple(cache[i][1] for i in idx),
                    margin_px=margin)
        joints = s.joints_xyv.copy()  # (J, 3); image_to_crop is a scale + shift: no matrix product needed
        joints[:, :2] = joints[:, :2] * np.diag(image_to_crop[:, :2]) + image_to_crop[:, 2]
        joints[:, 2] = (joints[:, 2] > 0).astype(np.float64)
        joints[joints[:, 2] == 0, :2] = 0.0
        row = _row(s, split, video, crop_box, crop_to_image, joints, clamped, n, margin)
        if jpeg:
            offsets = [offset]
            for k in range(T):
                ok, buf = cv2.imencode(".jpg", out[k], jpeg)
                if not ok:  # OpenCV reports a failed encode by its return value only
                    raise OSError(f"{video.json_path}: {s.file_name} person {s.person_id}: JPEG encoding failed")
                encoded.append(buf)
                offsets.append(offsets[-1] + len(encoded[-1]))
            row["jpeg_offsets"], offset = offsets, offsets[-1]
        result.rows.append(row)
        result.clamped_neighbours += int(clamped)
        n += 1
    if jpeg:
        result.crops = np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)
    else:
        result.crops = np.ascontiguousarray(raw[:n, ..., ::-1])  # BGR -> RGB once per video
    return result
