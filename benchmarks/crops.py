"""Crop extraction speed: frame-major (each JPEG decoded once) vs a per-sample baseline.

    python benchmarks/crops.py [--source synthetic|textured] [--videos 8] [--frames 40]
                               [--image 320x240] [--crop 96x128] [--jpeg-quality 95]

Builds a PoseTrack-layout dataset in a temp folder (the synthetic generator's videos, or textured
frames of any size with a fixed number of persons per labeled frame), then extracts the same
samples twice in one process, single core (cv2.setNumThreads(1)):
  baseline     DCPose-style: for every sample, decode frames t-1, t, t+1 separately, crop, save
  frame-major  vremd.data.crop_store.run_task: frames decoded once into a sliding window of 3
Both write the same shards (checked equal). Prints samples/s (a sample is one person's 3-frame
crop) and frame crops/s, by wall clock and per CPU-second of this process (the per-core figure
on a shared machine), and the ratio. Targets: >= 8x, >= 1,500 crops/s per core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vremd.config import CropsConfig, SyntheticConfig
from vremd.data import posetrack
from vremd.data.boxes import clip_box_xywh, crop_box_xywh, snap_box_to_pixels
from vremd.data.crop_store import VideoTask, run_task, video_key
from vremd.data.crops import crop_frames, neighbour_indices, plan_samples, read_frame
from vremd.data.synthetic import generate_dataset


def textured_frame(rng: np.random.Generator, wh: tuple[int, int]) -> np.ndarray:
    """A natural-looking (H, W, 3) frame: smooth colour noise plus fine texture (realistic JPEG size)."""
    w, h = wh
    coarse = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    frame += rng.integers(-12, 12, (h, w, 3), dtype=np.int16)
    return np.clip(frame, 0, 255).astype(np.uint8)


def build_dataset(root: Path, videos: int, frames: int, people: int, wh: tuple[int, int]) -> None:
    """Write `videos` train videos of `frames` frames; 3 of 4 frames labeled with `people` persons."""
    rng = np.random.default_rng(0)
    w, h = wh
    for v in range(videos):
        name = f"{v + 1:06d}_mpii_train"
        out_frames = []
        starts = rng.uniform([0, 0], [w * 0.7, h * 0.3], (people, 2))
        for t in range(frames):
            file_name = f"images/train/{name}/{t:06d}.jpg"
            (root / file_name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / file_name), textured_frame(rng, wh), [cv2.IMWRITE_JPEG_QUALITY, 90])
            persons = []
            for p in range(people):
                x, y = starts[p] + t * 0.5
                bw, bh = w * 0.15, h * 0.6
                kps = np.concatenate([rng.uniform([x, y], [x + bw, y + bh], (17, 2)), np.ones((17, 1))], axis=1)
                persons.append(posetrack.Person(p, t * 100 + p, kps, (float(x), float(y), bw, bh), None))
            labeled = t % 4 != 3
            out_frames.append(posetrack.Frame(posetrack.image_id_for(v + 1, t), t, file_name, labeled,
                                              tuple(persons) if labeled else (), ()))
        json_path = root / f"annotations/train/{name}.json"
        posetrack.write_video(posetrack.Video(name, "train", json_path, tuple(out_frames)), json_path)


def baseline_video(json_path: Path, root: Path, out_dir: Path, cfg: CropsConfig) -> np.ndarray:
    """Per-sample extraction: three separate decodes for every sample, then the same crop, encode and save."""
    video = posetrack.read_video(json_path, "train")
    crop_wh, jpeg = (cfg.width, cfg.height), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    plan = plan_samples(video, "train")
    crops = np.empty((len(plan), 3, cfg.height, cfg.width, 3), np.uint8)  # (S, T, H, W, 3) BGR
    encoded = []
    for n, s in enumerate(plan):
        idx, _ = neighbour_indices(s.frame_index, len(video.frames))
        frames = [read_frame(root / video.frames[i].file_name) for i in idx]
        box = crop_box_xywh(clip_box_xywh(s.box_xywh, frames[1].shape[1::-1]), cfg.enlarge, crop_wh)
        crop_frames(frames, snap_box_to_pixels(box), crop_wh, out=crops[n])
        if cfg.jpeg_quality:
            encoded.extend(cv2.imencode(".jpg", crops[n, k], jpeg)[1] for k in range(3))
    shard = np.concatenate(encoded) if cfg.jpeg_quality else np.ascontiguousarray(crops[..., ::-1])
    np.save(out_dir / f"{video.name}.npy", shard)
    return shard


def build_data(root: Path, args: argparse.Namespace) -> None:
    """The benchmark's train videos: the synthetic generator's, or textured frames of any size."""
    w, h = (int(v) for v in args.image.split("x"))
    if args.source == "synthetic":
        generate_dataset(root, SyntheticConfig(train_videos=args.videos, val_videos=0, min_frames=args.frames,
                                               max_frames=args.frames, image_height=h, image_width=w,
                                               max_people=args.people), progress=False)
    else:
        build_dataset(root, args.videos, args.frames, args.people, (w, h))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("synthetic", "textured"), default="synthetic")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--people", type=int, default=4, help="synthetic: at most; textured: exactly")
    parser.add_argument("--image", default="320x240", help="frame size WxH")
    parser.add_argument("--crop", default="96x128", help="crop size WxH (demo profile: 96x128, paper: 192x256)")
    parser.add_argument("--jpeg-quality", type=int, default=CropsConfig.jpeg_quality, help="0 stores raw pixels")
    args = parser.parse_args(argv)
    cw, ch = (int(v) for v in args.crop.split("x"))
    cfg = CropsConfig(width=cw, height=ch, jpeg_quality=args.jpeg_quality, workers=1)
    cv2.setNumThreads(1)  # per-core figures
    with tempfile.TemporaryDirectory(prefix="vremd-bench-crops-") as tmp:
        root = Path(tmp) / "raw"
        build_data(root, args)
        jsons = posetrack.list_videos(root, "train")
        (Path(tmp) / "base").mkdir()
        t0, c0 = time.perf_counter(), time.process_time()
        base = [baseline_video(j, root, Path(tmp) / "base", cfg) for j in jsons]
        t_base, c_base = time.perf_counter() - t0, time.process_time() - c0
        tasks = [VideoTask("train", j, root, Path(tmp) / "fast", cfg, "error", None, "") for j in jsons]
        t0, c0 = time.perf_counter(), time.process_time()
        records = [run_task(VideoTask(**{**t.__dict__, "key": video_key(t)})) for t in tasks]
        t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
        for b, r in zip(base, records):
            assert np.array_equal(b, np.load(Path(tmp) / "fast" / r["shard"])), "outputs differ"
        frames = sum(r["frames_decoded"] for r in records)
        shard_mb = sum(b.nbytes for b in base) / 2**20
    samples = sum(r["samples"] for r in records)
    print(f"crops benchmark: {len(jsons)} {args.source} videos x {args.frames} frames {args.image}, "
          f"{samples} samples ({samples / frames:.2f} per decoded frame), crop {cw}x{ch}, "
          f"{'JPEG q%d' % cfg.jpeg_quality if cfg.jpeg_quality else 'raw'} shards {shard_mb:.1f} MiB, 1 core")
    for name, secs, cpu in (("baseline (per-sample decode)", t_base, c_base), ("frame-major", t_fast, c_fast)):
        print(f"  {name:30s} {samples / secs:7.0f} samples/s wall ({3 * samples / secs:6.0f} frame crops/s), "
              f"{samples / cpu:7.0f} samples/s per CPU-second ({3 * samples / cpu:6.0f} frame crops)")
    print(f"  ratio frame-major / baseline: {t_base / t_fast:.1f}x wall, {c_base / c_fast:.1f}x CPU time"
          f"  (targets: >= 8x, >= 1500 crops/s per core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
