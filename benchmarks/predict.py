"""Person-crops/s of `vremd.predict` end to end (decode + crop + model + write) for the demo model.

Batched, one decode per frame (the library) against a naive per-person baseline in the same run:
batch size 1 and every person's 3 frames decoded again by seeking. Random-init demo-profile model
on a rendered demo-size synthetic video (mp4), GT boxes as detections.

    python benchmarks/predict.py [--device cuda] [--batch-size 32] [--frames 40] [--detector NAME|none]

On a bare video (no box file) `vremd.predict` first runs the person detector: the last lines give frames/s and
person-crops/s end to end with the detector excluded (GT boxes) and included: the detector's own time on every
frame (torchvision's architecture at its default input size, random weights, since nothing downloads here)
added to the boxes-given run, so the person count stays the video's real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from torchvision.models import detection

from vremd.config import config_to_dict, load_config
from vremd.data.boxes import BoxError
from vremd.data.synthetic import render_video
from vremd.model.vremd import build_model
from vremd.predict import PredictRequest, run_prediction
from vremd.predict.run import detect_boxes
from vremd.predict.boxes_io import assign_tracks, load_boxes
from vremd.predict.output import default_images, predictions_video, write_predictions_json
from vremd.predict.runner import load_model, person_crop, predict_crops
from vremd.predict.video import probe, read_frame


def make_inputs(root: Path, cfg, frames: int) -> tuple[Path, Path, Path]:
    """Render a demo-size synthetic video to mp4, its GT boxes as COCO detections, a random-init checkpoint."""
    syn = dataclasses.replace(cfg.data.synthetic, min_frames=frames, max_frames=frames, max_people=4)
    video, images, _, _ = render_video(syn, "val", 0)
    mp4 = root / f"{video.name}.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 25, (images[0].shape[1], images[0].shape[0]))
    for image in images:
        writer.write(image)
    writer.release()
    dets = [{"image_id": f.frame_index, "bbox": list(p.bbox_xywh), "score": 1.0}
            for f in video.frames for p in f.persons if p.bbox_xywh is not None]
    boxes = root / "dets.json"
    boxes.write_text(json.dumps(dets))
    torch.manual_seed(0)
    ckpt = root / "final.pt"
    torch.save({"model": build_model(cfg.model).state_dict(), "config": config_to_dict(cfg)}, ckpt)
    return mp4, boxes, ckpt


def naive(mp4: Path, boxes_path: Path, ckpt: Path, out_json: Path, device: str) -> int:
    """Per person: decode its 3 frames by seeking, crop, run the model on a batch of 1; then write json."""
    info = probe(mp4)
    boxes = assign_tracks(load_boxes(boxes_path, info.frame_names), track=False)
    model, cfg = load_model(ckpt)
    model.to(device)
    n, results = 0, []
    crop = np.empty((1, 3, cfg.crops.height, cfg.crops.width, 3), np.uint8)
    for t, fb in enumerate(boxes.frames):
        res = {"joints_xy": np.zeros((len(fb.scores), cfg.model.num_joints, 2)),
               "scores": np.zeros((len(fb.scores), cfg.model.num_joints)),
               "track_ids": fb.track_ids, "boxes_xywh": fb.boxes_xywh}
        for p, box in enumerate(fb.boxes_xywh):
            idx = [min(max(t + d, 0), info.num_frames - 1) for d in (-1, 0, 1)]
            frames = [cv2.cvtColor(read_frame(mp4, i), cv2.COLOR_BGR2RGB) for i in idx]
            try:
                affine = person_crop(frames, box, cfg.crops, out=crop[0])
            except BoxError:
                continue
            out = predict_crops(model, crop, device)
            res["joints_xy"][p] = out["joints_xy"][0] @ affine[:, :2].T + affine[:, 2]
            res["scores"][p] = out["scores"][0]
            n += 1
        results.append(res)
    name = "000001_mpii_test"
    write_predictions_json(predictions_video(name, default_images(name, len(results)), results), out_json)
    return n


def detector_weights(root: Path, name: str) -> Path:
    """Random weights of detector `name` (its speed does not depend on their values)."""
    torch.manual_seed(0)
    model = getattr(detection, name)(weights=None, weights_backbone=None)
    path = root / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--detector", default="fasterrcnn_resnet50_fpn_v2", help="detector to time on the bare video, or none")
    args = p.parse_args(argv)
    cfg = load_config(args.params, profile="demo")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mp4, boxes, ckpt = make_inputs(root, cfg, args.frames)
        req = PredictRequest(video=mp4, boxes=boxes, checkpoint=ckpt, out_json=root / "fast.json",
                             batch_size=args.batch_size, device=args.device, progress=False)
        run_prediction(dataclasses.replace(req, out_json=root / "warmup.json"))  # warm-up (allocator, kernels)
        t0 = time.perf_counter()
        summary = run_prediction(req)
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_naive = naive(mp4, boxes, ckpt, root / "naive.json", args.device)
        naive_s = time.perf_counter() - t0
        if args.detector != "none":
            detect = dataclasses.replace(cfg.detect, model=args.detector, weights=str(detector_weights(root, args.detector)))
            t0 = time.perf_counter()
            detect_boxes(mp4, summary.frames, detect, args.device, progress=False)
            detect_s = time.perf_counter() - t0
    fast_rate, naive_rate = summary.persons / fast_s, n_naive / naive_s
    print(f"device {args.device}, demo model (img {cfg.model.img_height}x{cfg.model.img_width}, "
          f"ViT depth {cfg.model.depth}, dim {cfg.model.embed_dim}), {summary.frames} frames, "
          f"{summary.persons} person crops, torch threads {torch.get_num_threads()}")
    print(f"vremd.predict (batch {args.batch_size}, each frame decoded once): {fast_rate:.1f} person-crops/s "
          f"({fast_s:.2f} s)")
    print(f"naive per-person baseline (batch 1, 3 frames decoded per person): {naive_rate:.1f} person-crops/s "
          f"({naive_s:.2f} s)")
    print(f"speed-up: {fast_rate / naive_rate:.2f}x")
    print(f"detector excluded (boxes given): {summary.frames / fast_s:.2f} frames/s, {fast_rate:.1f} person-crops/s")
    if args.detector != "none":
        total_s = detect_s + fast_s
        print(f"detector included ({args.detector}, input {detect.min_size}/{detect.max_size} px, "
              f"{detect_s / summary.frames:.2f} s per frame): {summary.frames / total_s:.2f} frames/s, "
              f"{summary.persons / total_s:.1f} person-crops/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
