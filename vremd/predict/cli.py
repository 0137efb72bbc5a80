"""`python -m vremd.predict`: run a trained VREMD on your own video (argument handling only).

Exit codes: 0 done, 2 bad input (the one-line message names the file or field).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vremd.config import ConfigError, DetectConfig, load_config
from vremd.errors import InputError
from vremd.model.checkpoint import saved_config

from .reports import compare_checkpoints, sample_report_from_video
from .run import PredictRequest, run_prediction


def _frame_list(text: str) -> list[int]:
    """`--figure-frames "0,3"` -> [0, 3]; argparse turns the ValueError of a non-integer into a usage error."""
    try:
        return [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found {text!r}") from None


def _detect_config(args: argparse.Namespace, base: DetectConfig) -> DetectConfig:
    """`base` (the params' `detect`) with the --detector* options applied (its score threshold is --min-score's)."""
    changes = {"model": args.detector, "weights": str(args.detector_weights) if args.detector_weights else None}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `python -m vremd.predict`."""
    p = argparse.ArgumentParser(prog="python -m vremd.predict", description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path, help="video file (mp4/avi) or a folder of frame images")
    p.add_argument("--boxes", type=Path, default=None,
                   help="person boxes: COCO detection json (results list: image_id = frame index; or a dict "
                        "with images whose file_name names the frame) or a PoseTrack-2018 json; without it "
                        "the person detector runs on every frame and its boxes are linked into tracks")
    p.add_argument("--detector", default=None,
                   help="detector without --boxes (default: detect.model, fasterrcnn_resnet50_fpn_v2)")
    p.add_argument("--detector-weights", type=Path, default=None,
                   help="local detector state dict (default: detect.weights, else torchvision's download)")
    p.add_argument("--min-score", "--detector-score", dest="min_score", type=float, default=None,
                   help="keep the scored boxes (a detection json's, the detector's) scoring at least this (default: "
                        "the checkpoint's detect.score_threshold, as its validation kept them; --detector-score is "
                        "another name for it)")
    p.add_argument("--boxes-format", choices=("auto", "coco", "posetrack"), default="auto")
    p.add_argument("--track", action="store_true", help="link the boxes into tracks by IoU")
    p.add_argument("--checkpoint", type=Path, default=Path("models/final.pt"),
                   help="training checkpoint {'model', 'config'} (default: models/final.pt)")
    p.add_argument("--vitpose", type=Path, default=None,
                   help="ViTPose backbone .pth; the checkpoint then only needs the trained heads")
    p.add_argument("--out", type=Path, required=True, help="predictions json (PoseTrack-2018 format)")
    p.add_argument("--overlay", type=Path, default=None, help="overlay video (.mp4/.avi) or folder for frames")
    p.add_argument("--video-name", default=None, help="poseval video name, e.g. 000001_mpii_test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                   help="average each crop's heatmaps with its mirror image's (default: the checkpoint's "
                        "train.flip_test, as its validation scored it)")
    p.add_argument("--postprocess", choices=("none", "oks_nms"), default=None,
                   help="poses of scored boxes: keep all (none) or rescore and OKS-NMS them per frame (oks_nms) "
                        "(default: the checkpoint's detect.postprocess, as its validation scored it)")
    p.add_argument("--params", default=None,
                   help="config for a checkpoint without one (default: params.yaml); a checkpoint from training "
                        "carries its own config, and these three options are then refused")
    p.add_argument("--profile", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sample-figure", type=Path, default=None,
                   help="PNG: crops, human/keypoint masks, heatmaps, DCA sampling points of the first person")
    p.add_argument("--compare", type=Path, default=None, metavar="CHECKPOINT_B",
                   help="second checkpoint to compare with --checkpoint side by side (needs --figure)")
    p.add_argument("--figure", type=Path, default=None, help="PNG of the --compare figure")
    p.add_argument("--figure-frames", type=_frame_list, default="0", help="comma-separated frame indices for --compare")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the prediction, print a short summary; 2 on bad input."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size: must be at least 1", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: no CUDA device is available", file=sys.stderr)
            return 2
    if (args.compare is None) != (args.figure is None):
        print("error: --compare and --figure go together", file=sys.stderr)
        return 2
    if args.boxes is None and (args.sample_figure is not None or args.compare is not None):
        print("error: --sample-figure and --compare need --boxes", file=sys.stderr)
        return 2
    req = PredictRequest(
        video=args.video, boxes=args.boxes, checkpoint=args.checkpoint, out_json=args.out, overlay=args.overlay,
        vitpose=args.vitpose, boxes_format=args.boxes_format, track=args.track, min_score=args.min_score,
        batch_size=args.batch_size, device=args.device, video_name=args.video_name, progress=not args.quiet,
        detect=_detect_config(args, DetectConfig()), flip_test=args.flip_test, postprocess=args.postprocess,
    )
    explicit = args.params is not None or args.profile is not None or bool(args.overrides)
    try:
        if explicit and saved_config(args.checkpoint) is not None:
            raise ConfigError(f"--params/--profile/--set: {args.checkpoint} carries its own config, which predict "
                              "uses; these options only configure a checkpoint without one")
        summary = run_prediction(req, lambda: load_config(args.params or "params.yaml", args.profile, args.overrides))
        figures = []
        if args.sample_figure is not None:
            figures.append(sample_report_from_video(args.checkpoint, args.video, args.boxes, args.sample_figure,
                                                    device=args.device))
        if args.compare is not None:
            labels = (args.checkpoint.stem, args.compare.stem)
            figures.append(compare_checkpoints(args.checkpoint, args.compare, args.video, args.boxes, args.figure_frames,
                                               args.figure, labels, args.device))
    except (InputError, OSError) as exc:  # CheckpointError is an InputError
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    for w in summary.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if summary.detector is not None:
        d = summary.detector
        print(f"boxes: {d.detector} (weights {Path(d.weights).name}, sha256 {d.weights_sha256[:12]}..., "
              f"{d.score_rule})")
    overlay = f", overlay {summary.overlay_path} ({summary.overlay_frames} frames)" if summary.overlay_path else ""
    print(f"{summary.frames} frames, {summary.persons} person crops, {summary.tracks} tracks -> "
          f"{summary.json_path}{overlay}")
    for path in figures:
        print(f"figure: {path}")
    return 0
