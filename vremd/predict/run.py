"""One prediction run end to end: video + boxes + checkpoint -> PoseTrack json + overlay video."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vremd.config import Config, DetectConfig
from vremd.detect.detector import Provenance, build_detector, detect_images
from vremd.model.checkpoint import load_trained

from .boxes_io import BoxSet, FrameBoxes, assign_tracks, load_boxes
from .output import default_images, poseval_video_name, predictions_video, write_predictions_json
from .overlay import OverlayWriter, draw_frame
from .video_poses import predict_video
from .video import iter_frames, probe


@dataclass(frozen=True)
class PredictRequest:
    """What to predict and where to write it."""

    video: Path  # mp4/avi file or folder of frames
    boxes: Path | None  # COCO detection json or PoseTrack json; None: run the person detector (`detect`)
    checkpoint: Path  # models/final.pt (or a heads checkpoint with `vitpose`)
    out_json: Path  # PoseTrack-2018 predictions
    overlay: Path | None = None  # .mp4/.avi file or a folder for JPEG frames; None: no overlay
    vitpose: Path | None = None
    boxes_format: str = "auto"  # auto | coco | posetrack
    track: bool = False  # link boxes into tracks by IoU (ignores track ids in the file)
    min_score: float | None = None  # scored boxes below it are dropped; None: the checkpoint's detect.score_threshold
    batch_size: int = 32
    device: str = "cpu"
    video_name: str | None = None  # poseval video folder name, e.g. 000001_mpii_test
    progress: bool = True
    detect: DetectConfig = field(default_factory=DetectConfig)  # the detector used when `boxes` is None
    flip_test: bool | None = None  # None: the checkpoint's train.flip_test, as its validation did
    postprocess: str | None = None  # none | oks_nms; None: the checkpoint's detect.postprocess, as its validation


@dataclass
class PredictSummary:
    """What a run produced."""

    frames: int
    persons: int
    tracks: int
    json_path: Path
    overlay_path: Path | None
    overlay_frames: int
    warnings: list[str] = field(default_factory=list)
    detector: Provenance | None = None  # set when the boxes came from the person detector


def detect_boxes(video: Path, num_frames: int, cfg: DetectConfig, device: str,
                 progress: bool) -> tuple[BoxSet, Provenance]:
    """Person boxes on every frame of `video` from the detector of `cfg`, untracked."""
    model, provenance = build_detector(cfg)
    found = detect_images(model, enumerate(iter_frames(video)), cfg.batch_size, device, num_frames, progress)
    frames = tuple(FrameBoxes(xywh, scores, np.full(len(scores), -1, dtype=np.int64)) for _, xywh, scores in found)
    return BoxSet(frames, detected=True), provenance


def _output_frames(boxes: BoxSet, name: str, results: list[dict]) -> tuple[list[dict], list[dict]]:
    """The output's images and each one's frame result: a PoseTrack box file's images in its own order (poseval
    pairs frames by position), each with its own video frame's persons (none past the video's end); else one
    image per video frame."""
    if boxes.images is None:
        return default_images(name, len(results)), results
    empty = {k: v[:0] for k, v in results[0].items()}
    return list(boxes.images), [results[t] if t < len(results) else empty for t in boxes.image_frames]


def run_prediction(req: PredictRequest, fallback_cfg: Config | Callable[[], Config] | None = None) -> PredictSummary:
    """Predict poses for every box of `req.boxes` on `req.video` and write the json (and overlay).

    The checkpoint's own config builds and decodes the model, and decides which scored boxes are kept
    (`detect.score_threshold`) and how their poses are post-processed (`detect.postprocess`), as its
    validation did, unless `req` says otherwise; `fallback_cfg` serves a checkpoint without a config.
    """
    info = probe(req.video)
    model, cfg = load_trained(req.checkpoint, req.vitpose, fallback_cfg)
    min_score = cfg.detect.score_threshold if req.min_score is None else req.min_score
    detector = None
    if req.boxes is None:  # a bare video: detect, then link into tracks
        detect = dataclasses.replace(req.detect, score_threshold=min_score)
        boxes, detector = detect_boxes(req.video, info.num_frames, detect, req.device, req.progress)
    else:
        boxes = load_boxes(req.boxes, info.frame_names, req.boxes_format, min_score)
    boxes = assign_tracks(boxes, track=req.track or req.boxes is None)
    model.to(req.device)
    name = req.video_name or boxes.video_name or poseval_video_name(Path(req.video).stem)
    writer = OverlayWriter(req.overlay, info.fps) if req.overlay is not None else None

    def on_frame(t: int, frame_bgr: np.ndarray, result: dict) -> None:
        if writer is not None:
            writer.write(draw_frame(frame_bgr, result))

    with writer if writer is not None else nullcontext():  # the overlay is kept only if the whole run succeeds
        results, stats = predict_video(model, cfg, req.video, boxes, req.batch_size, req.device, on_frame,
                                       req.progress, req.flip_test, req.postprocess)
        images, image_results = _output_frames(boxes, name, results)
        warnings = [*stats.skipped_boxes[:5]]
        if len(stats.skipped_boxes) > 5:
            warnings.append(f"... {len(stats.skipped_boxes) - 5} more boxes skipped")
        warnings += write_predictions_json(predictions_video(name, images, image_results), req.out_json)
    tracks = {int(i) for r in results for i in r["track_ids"]}
    return PredictSummary(
        frames=stats.frames, persons=stats.crops, tracks=len(tracks), json_path=Path(req.out_json),
        overlay_path=req.overlay, overlay_frames=writer.frames_written if writer else 0, warnings=warnings,
        detector=detector,
    )
