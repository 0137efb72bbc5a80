"""Person-crops/s of `vremd.predict` end to end (decode + crop + model + write) for the demo model.

Three variants in one process, each warmed up once, then interleaved `--repeats` times (median and min):
  vremd     `vremd.predict.run_prediction`: each frame decoded once, crops batched (`--batch-size`)
  dcpose    DCPose's demo approach, the baseline: every frame read once, then the model run per person at
            batch 1
  seek      per person at batch 1 with its 3 frames decoded again by seeking (the old naive baseline)
so batching (dcpose / vremd) and decode-once (seek / dcpose) are reported as separate factors.
Random-init demo-profile model on a rendered demo-size synthetic video (mp4), GT boxes as detections.

    python -m benchmarks.predict [--device cuda] [--batch-size 32] [--frames 40] [--detector NAME|none]

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
from vremd.data.crops import neighbour_indices
from vremd.data.synthetic.generate import render_video
from vremd.model.checkpoint import load_trained
from vremd.model.vremd import build_model
from vremd.predict.run import PredictRequest, run_prediction
from vremd.predict.run import detect_boxes
from vremd.predict.boxes_io import assign_tracks, load_boxes
from vremd.predict.output import default_images, predictions_video, write_predictions_json
from vremd.predict.inference import predict_crops
from vremd.predict.video_poses import person_crop
from vremd.predict.video import iter_frames, probe, read_frame

from benchmarks.result import Result, write_results
from benchmarks.timing import interleaved

TARGET_SPEEDUP = 1.0  # batched must beat DCPose's per-person batch-1 approach


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
    model_cfg = dataclasses.replace(cfg.model, pretrained="")  # random weights: the cost is the same, and a
    torch.save({"model": build_model(model_cfg).state_dict(), "config": config_to_dict(cfg)}, ckpt)  # clone has none
    return mp4, boxes, ckpt


def per_person(mp4: Path, boxes_path: Path, ckpt: Path, out_json: Path, device: str, decode_once: bool) -> int:
    """Per person: its 3 frames (all frames decoded once up front, or each decoded again by seeking), crop,
    the model on a batch of 1; then write json. Returns the person crops run."""
    info = probe(mp4)
    boxes = assign_tracks(load_boxes(boxes_path, info.frame_names), track=False)
    model, cfg = load_trained(ckpt)
    model.to(device)
    decoded = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in iter_frames(mp4)] if decode_once else None
    n, results = 0, []
    crop = np.empty((1, 3, cfg.crops.height, cfg.crops.width, 3), np.uint8)  # (1, T, H, W, 3)
    for t, fb in enumerate(boxes.frames):
        res = {"joints_xy": np.zeros((len(fb.scores), cfg.model.num_joints, 2)),
               "scores": np.zeros((len(fb.scores), cfg.model.num_joints)),
               "track_ids": fb.track_ids, "boxes_xywh": fb.boxes_xywh}
        for p, box in enumerate(fb.boxes_xywh):
            idx, _clamped = neighbour_indices(t, info.num_frames)
            frames = ([decoded[i] for i in idx] if decoded is not None
                      else [cv2.cvtColor(read_frame(mp4, i), cv2.COLOR_BGR2RGB) for i in idx])
            try:
                affine = person_crop(frames, box, cfg.crops, out=crop[0]).crop_to_image
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


def measure(root: Path, cfg, device: str, batch_size: int, frames: int, repeats: int) -> dict:
    """Seconds (Timing) of the three variants on one rendered video, and the person count."""
    mp4, boxes, ckpt = make_inputs(root, cfg, frames)
    req = PredictRequest(video=mp4, boxes=boxes, checkpoint=ckpt, out_json=root / "vremd.json",
                         batch_size=batch_size, device=device, progress=False)
    counts: dict[str, int] = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    variants = {
        "vremd": lambda: counts.__setitem__("vremd", run_prediction(req).persons),
        "dcpose": lambda: counts.__setitem__("dcpose", per_person(mp4, boxes, ckpt, root / "dcpose.json", device, True)),
        "seek": lambda: counts.__setitem__("seek", per_person(mp4, boxes, ckpt, root / "seek.json", device, False)),
    }
    t = interleaved({k: (lambda f=f: (f(), sync())) for k, f in variants.items()}, repeats, warmup=1)
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"predict benchmark: the variants ran different person counts {counts}")
    return {"timings": t, "persons": counts["vremd"], "mp4": mp4}


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
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (after one warm-up)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--detector", default="fasterrcnn_resnet50_fpn_v2", help="detector to time on the bare video, or none")
    p.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = p.parse_args(argv)
    cfg = load_config(args.params, profile="demo")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        m = measure(root, cfg, args.device, args.batch_size, args.frames, args.repeats)
        t, persons = m["timings"], m["persons"]
        if args.detector != "none":
            detect = dataclasses.replace(cfg.detect, model=args.detector, weights=str(detector_weights(root, args.detector)))
            t0 = time.perf_counter()
            detect_boxes(m["mp4"], args.frames, detect, args.device, progress=False)
            detect_s = time.perf_counter() - t0
    rate = {k: persons / v.median for k, v in t.items()}
    where = (f"demo model (img {cfg.model.img_height}x{cfg.model.img_width}, ViT depth {cfg.model.depth}, "
             f"dim {cfg.model.embed_dim}), {args.frames} frames, {persons} person crops, {args.device}")
    print(f"device {args.device}, {where}, torch threads {torch.get_num_threads()}")
    for k, label in (("vremd", f"vremd.predict (batch {args.batch_size}, each frame decoded once)"),
                     ("dcpose", "DCPose-style (each frame decoded once, batch 1)"),
                     ("seek", "per person, 3 frames decoded by seeking, batch 1")):
        print(f"{label}: {rate[k]:.1f} person-crops/s ({t[k].text()})")
    batching, decode_once = t["dcpose"].median / t["vremd"].median, t["seek"].median / t["dcpose"].median
    print(f"speed-up over DCPose-style: {batching:.2f}x (batching); decode-once over seeking: {decode_once:.2f}x")
    command = "python -m benchmarks.predict --detector none" + (f" --device {args.device}" if args.device != "cpu" else "")
    results = [
        Result("predict.rate", f"vremd.predict end to end (decode, crop, model, write), {where}", "", rate["vremd"],
               "person-crops/s", command, details=f"{args.frames / t['vremd'].median:.1f} frames/s; s: {t['vremd'].text()}"),
        Result("predict.batching", f"predict, batching factor (batch {args.batch_size} vs 1, both decoding once), {where}",
               "DCPose's demo approach (each frame read once, model per person at batch 1), warmed up", batching, "x",
               command, target=TARGET_SPEEDUP, op=">=",
               details=f"s: vremd {t['vremd'].text()}, DCPose-style {t['dcpose'].text()}"),
        Result("predict.decode_once", f"predict, decode-once factor (both batch 1), {where}",
               "per person, its 3 frames decoded again by seeking", decode_once, "x", command,
               details=f"s: seeking {t['seek'].text()}, DCPose-style {t['dcpose'].text()}"),
    ]
    if args.detector != "none":
        total_s = detect_s + t["vremd"].median
        print(f"detector included ({args.detector}, input {detect.min_size}/{detect.max_size} px, "
              f"{detect_s / args.frames:.2f} s per frame): {args.frames / total_s:.2f} frames/s, "
              f"{persons / total_s:.1f} person-crops/s")
    if args.json:
        write_results(args.json, results)
    return 1 if any(r.passed is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
