"""Crop extraction speed of the crops stage (frame-major, each JPEG decoded once) against two baselines.

    python -m benchmarks.crops [--videos 4] [--frames 24] [--repeats 3] [--cases textured-paper,...] [--json PATH]

For each case, builds a PoseTrack-layout dataset in a temp folder and extracts the same samples with three
variants in one process, single core (cv2.setNumThreads(1)), interleaved `--repeats` times (median and min
of this process's CPU seconds, the per-core figure on a shared machine):
  per-sample   the online baseline, DCPose-style: per sample, decode frames t-1, t, t+1 separately at full
               resolution, cv2.warpAffine each with the crop affine, encode, save the same shard format
  decode-once  the offline baseline: each frame decoded once at full resolution and kept for the video,
               then the same per-sample warpAffine and encoding
  frame-major  vremd.data.crop_store.run_task: each frame read and decoded once (at 1/2 or 1/4
               resolution when every box it serves allows it) into a sliding window of 3
  margin       the same, with the train crops' augmentation margin (crops.train_context_scale of the
               case's profile): the disk per sample and the extraction cost of the margin
The first three store the crop alone (crops.train_context_scale 0); their outputs are compared (mean absolute pixel difference of the decoded crops against per-sample).
Target: >= 1,500 frame crops/s per core at paper size and PoseTrack density (3 persons per labeled frame).
The ratios are reported without a target: the crops stage is one pass over the data and does not bound
training. A cost breakdown of the fast path follows.

Cases (1280x720 is PoseTrack's resolution):
  textured-paper    textured 1280x720 frames, 3 persons per labeled frame of varied height (25-75% of the
                    frame), crop 192x256 (the paper's input)
  textured-demo     the same videos, crop 96x128 (the demo profile)
  posetrack-paper   synthetic generator, 1280x720, 1-11 persons per video (larger than most PoseTrack
                    people), crop 192x256
  posetrack-demo    the same videos, crop 96x128
  small-demo        synthetic 320x240, 1-4 persons, crop 96x128
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vremd.config import CropsConfig, SyntheticConfig
from vremd.data import posetrack
from vremd.data.boxes import (
    clip_box_xywh, crop_box_xywh, crop_to_image_affine, invert_affine, pixels_to_box_xywh, snap_box_to_pixels,
)
from vremd.data.crop_store import VideoTask, run_task, video_key
from vremd.data.crops import crop_frames, crop_sample, neighbour_indices, plan_samples
from vremd.data.shards import shard_sample
from vremd.data.jpeg import decode_jpeg, load_jpeg, read_frame
from vremd.data.synthetic.generate import generate_dataset

from benchmarks.result import Result, write_results
from benchmarks.timing import cpu_clock, interleaved

TARGET_CROPS_PER_CORE = 1500.0
TARGET_CASE = "textured-paper"  # paper size at PoseTrack density


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "synthetic" or "textured"
    image_wh: tuple[int, int]
    crop_wh: tuple[int, int]
    people: int  # synthetic: at most per video; textured: exactly per labeled frame
    context: float  # the profile's crops.train_context_scale (params.yaml)


CASES = (
    Case("textured-paper", "textured", (1280, 720), (192, 256), 3, 1.35),
    Case("textured-demo", "textured", (1280, 720), (96, 128), 3, 1.25),
    Case("posetrack-paper", "synthetic", (1280, 720), (192, 256), 11, 1.35),
    Case("posetrack-demo", "synthetic", (1280, 720), (96, 128), 11, 1.25),
    Case("small-demo", "synthetic", (320, 240), (96, 128), 4, 1.25),
)


def textured_frame(rng: np.random.Generator, wh: tuple[int, int]) -> np.ndarray:
    """A natural-looking (H, W, 3) frame: smooth colour noise plus fine texture (realistic JPEG size)."""
    w, h = wh
    coarse = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    frame += rng.integers(-12, 12, (h, w, 3), dtype=np.int16)
    return np.clip(frame, 0, 255).astype(np.uint8)


def build_textured(root: Path, videos: int, frames: int, people: int, wh: tuple[int, int]) -> None:
    """`videos` train videos of `frames` textured frames; 3 of 4 frames labeled with `people` persons
    whose heights vary from 25% to 75% of the frame (PoseTrack mixes near and far people)."""
    rng = np.random.default_rng(0)
    w, h = wh
    for v in range(videos):
        name = f"{v + 1:06d}_mpii_train"
        out_frames = []
        heights = rng.uniform(0.25, 0.75, people) * h
        starts = rng.uniform([0, 0], [w - 0.4 * heights.max(), h - heights.max()], (people, 2))
        for t in range(frames):
            file_name = f"images/train/{name}/{t:06d}.jpg"
            (root / file_name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / file_name), textured_frame(rng, wh), [cv2.IMWRITE_JPEG_QUALITY, 90])
            persons = []
            for p in range(people):
                x, y = starts[p] + t * 0.5
                bw, bh = 0.4 * heights[p], heights[p]
                kps = np.concatenate([rng.uniform([x, y], [x + bw, y + bh], (17, 2)), np.ones((17, 1))], axis=1)
                persons.append(posetrack.Person(p, t * 100 + p, kps, (float(x), float(y), bw, bh), None))
            labeled = t % 4 != 3
            out_frames.append(posetrack.Frame(posetrack.image_id_for(v + 1, t), t, file_name, labeled,
                                              tuple(persons) if labeled else (), ()))
        json_path = root / f"annotations/train/{name}.json"
        posetrack.write_video(posetrack.Video(name, "train", json_path, tuple(out_frames)), json_path)


def build_data(root: Path, case: Case, videos: int, frames: int) -> None:
    w, h = case.image_wh
    if case.source == "synthetic":
        generate_dataset(root, SyntheticConfig(train_videos=videos, val_videos=0, min_frames=frames, max_frames=frames,
                                               image_height=h, image_width=w, max_people=case.people), progress=False)
    else:
        build_textured(root, videos, frames, case.people, (w, h))


def baseline_video(json_path: Path, root: Path, out_dir: Path, cfg: CropsConfig, decode_once: bool = False
                   ) -> np.ndarray:
    """Per-sample extraction: decode t-1, t, t+1 for every sample (DCPose-style), or each frame once for the
    video (`decode_once`), warpAffine each full frame with the crop affine, encode and save the same shard
    format. Skips nothing (clean data)."""
    video = posetrack.read_video(json_path, "train")
    decoded: dict[int, np.ndarray] = {}

    def frame(i: int) -> np.ndarray:
        if not decode_once:
            return read_frame(root / video.frames[i].file_name)
        if i not in decoded:
            decoded[i] = read_frame(root / video.frames[i].file_name)
        return decoded[i]

    crop_wh, jpeg = (cfg.width, cfg.height), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    plan = plan_samples(video, "train")
    crops = np.empty((len(plan), 3, cfg.height, cfg.width, 3), np.uint8)  # (S, T, H, W, 3) BGR
    encoded = []
    for n, s in enumerate(plan):
        idx, _ = neighbour_indices(s.frame_index, len(video.frames))
        frames = [frame(i) for i in idx]
        box = crop_box_xywh(clip_box_xywh(s.box_xywh, frames[1].shape[1::-1]), cfg.enlarge, crop_wh)
        image_to_crop = invert_affine(crop_to_image_affine(pixels_to_box_xywh(snap_box_to_pixels(box)), crop_wh))
        crop_sample(frames, image_to_crop, crop_wh, out=crops[n])
        if cfg.jpeg_quality:
            encoded.extend(cv2.imencode(".jpg", crops[n, k], jpeg)[1] for k in range(3))
    shard = np.concatenate(encoded) if cfg.jpeg_quality else np.ascontiguousarray(crops[..., ::-1])
    np.save(out_dir / f"{video.name}.npy", shard)
    return shard


def shard_offsets(shard: np.ndarray, samples: int) -> list[list[int]]:
    """Per-sample JPEG offsets of a baseline shard (3 JPEGs per sample, found by their end markers)."""
    ends = [i + 2 for i in np.flatnonzero((shard[:-1] == 0xFF) & (shard[1:] == 0xD9))]
    starts = [0] + ends
    return [starts[3 * n:3 * n + 4] for n in range(samples)]


def breakdown(root: Path, jsons: list[Path], records: list[dict], cfg: CropsConfig) -> dict[str, float]:
    """CPU ms of the fast path's steps, re-timed in isolation on the same videos: read, decode per
    frame (at the scales used), crop and encode per frame crop."""
    t = Counter()
    crop_wh, jpeg = (cfg.width, cfg.height), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    scales = Counter()
    for record in records:
        scales.update({int(k): v for k, v in record["decode_scales"].items()})
    frames = [p for j in jsons for p in sorted((root / "images/train" / j.stem).glob("*.jpg"))]
    c = time.process_time()
    bufs = [load_jpeg(p)[0] for p in frames]
    t["read ms/frame"] = (time.process_time() - c) / len(frames)
    for scale in (1, 2, 4):
        c = time.process_time()
        for b in bufs:
            decode_jpeg(b, Path("x"), scale)
        t[f"decode 1/{scale} ms/frame"] = (time.process_time() - c) / len(frames)
    out = np.empty((1, crop_wh[1], crop_wh[0], 3), np.uint8)
    rects = [tuple(int(round(v + 0.5 * (i < 2))) for i, v in enumerate(r["box_xywh"]))  # box -> pixel rectangle
             for rec in records for r in rec["rows"]][:300]
    for scale in (1, 2, 4):
        image = decode_jpeg(bufs[len(bufs) // 2], Path("x"), scale)
        c = time.process_time()
        for rect in rects:
            crop_frames([image], rect, crop_wh, out=out, scales=(scale,))
        t[f"crop 1/{scale} ms/frame crop"] = (time.process_time() - c) / len(rects)
    full = decode_jpeg(bufs[len(bufs) // 2], Path("x"))
    crops = [crop_frames([full], rect, crop_wh)[0] for rect in rects]
    c = time.process_time()
    encoded = [cv2.imencode(".jpg", crop, jpeg)[1] for crop in crops]
    t["encode ms/frame crop"] = (time.process_time() - c) / len(rects)
    c = time.process_time()
    for rect in rects:
        crop_sample([full], invert_affine(crop_to_image_affine(pixels_to_box_xywh(rect), crop_wh)), crop_wh, out=out)
    t["baseline warpAffine ms/frame crop"] = (time.process_time() - c) / len(rects)
    c = time.process_time()
    np.save(root / "write-test.npy", np.concatenate(encoded))
    t["write ms/frame crop"] = (time.process_time() - c) / len(rects)
    return {k: 1000 * v for k, v in t.items()} | {"decodes at 1/1, 1/2, 1/4": [scales[s] for s in (1, 2, 4)]}


def run_case(case: Case, videos: int, frames: int, jpeg_quality: int, repeats: int) -> dict:
    cfg = CropsConfig(width=case.crop_wh[0], height=case.crop_wh[1], jpeg_quality=jpeg_quality, workers=1,
                      train_context_scale=0.0)
    with tempfile.TemporaryDirectory(prefix="vremd-bench-crops-") as tmp:
        root = Path(tmp) / "raw"
        build_data(root, case, videos, frames)
        jsons = posetrack.list_videos(root, "train")
        for name in ("per-sample", "decode-once"):
            (Path(tmp) / name).mkdir()

        def plan(out_dir: str, c: CropsConfig) -> list[VideoTask]:
            tasks = [VideoTask("train", j, root, Path(tmp) / out_dir, c, "error", None, "") for j in jsons]
            return [VideoTask(**{**t.__dict__, "key": video_key(t)}) for t in tasks]

        tasks = plan("fast", cfg)
        margin_tasks = plan("margin", dataclasses.replace(cfg, train_context_scale=case.context))
        out: dict[str, list] = {}
        variants = {
            "per-sample": lambda: out.__setitem__("base", [baseline_video(j, root, Path(tmp) / "per-sample", cfg)
                                                           for j in jsons]),
            "decode-once": lambda: [baseline_video(j, root, Path(tmp) / "decode-once", cfg, decode_once=True)
                                    for j in jsons],
            "frame-major": lambda: out.__setitem__("records", [run_task(t) for t in tasks]),
            "margin": lambda: out.__setitem__("margin", [run_task(t) for t in margin_tasks]),
        }
        timings = interleaved(variants, repeats, clock=cpu_clock)
        base, records = out["base"], out["records"]
        diffs = []
        for b, r in zip(base, records):
            fast = np.load(Path(tmp) / "fast" / r["shard"])
            offsets = shard_offsets(b, r["samples"]) if jpeg_quality else [None] * r["samples"]
            for row in r["rows"][::7]:
                ref = shard_sample(b, row["row"], offsets[row["row"]]).astype(np.int16)
                diffs.append(np.abs(ref - shard_sample(fast, row["row"], row["jpeg_offsets"])).mean())
        labeled = sum(f.is_labeled for j in jsons for f in posetrack.read_video(j, "train").frames)
        costs = breakdown(root, jsons, records, cfg)
        disk = {name: sum((Path(tmp) / name / r["shard"]).stat().st_size for r in out[key])
                for name, key in (("fast", "records"), ("margin", "margin"))}
        margin_px = out["margin"][0]["rows"][0]["margin_px"]
    samples = sum(r["samples"] for r in records)
    return {"case": case, "samples": samples, "per_labeled": samples / labeled, "timings": timings,
            "diff_mean": float(np.mean(diffs)), "diff_max": float(np.max(diffs)), "costs": costs,
            "bytes": {k: v / samples for k, v in disk.items()}, "margin_px": margin_px}


def case_results(r: dict, command: str) -> list[Result]:
    """The case's figures: crops/s per core (target at paper size and PoseTrack density) and both ratios."""
    c, t = r["case"], r["timings"]
    where = f"{c.name}: {c.image_wh[0]}x{c.image_wh[1]} frames, crop {c.crop_wh[0]}x{c.crop_wh[1]}, " \
            f"{r['per_labeled']:.1f} persons/labeled frame"
    rate = 3 * r["samples"] / t["frame-major"].median
    target = {"target": TARGET_CROPS_PER_CORE, "op": ">="} if c.name == TARGET_CASE else {}
    out = [Result(f"crops.{c.name}.rate", f"crops stage, frame crops/s per core ({where})", "", rate,
                  "crops/s/core", command, details=f"{r['samples']} samples x 3 frames, CPU "
                  f"{t['frame-major'].text()}; best run {3 * r['samples'] / t['frame-major'].min:,.0f} crops/s",
                  **target)]
    for key, name, what in (("online", "per-sample", "online"), ("offline", "decode-once", "offline")):
        out.append(Result(
            f"crops.{c.name}.{key}", f"crops stage vs the {what} peer ({where})",
            {"per-sample": "per-sample loader, DCPose-style (3 full decodes + 3 warps per sample)",
             "decode-once": "decode-once (each frame decoded once at full size, per-sample warps)"}[name],
            t[name].median / t["frame-major"].median, "x", command,
            details=f"CPU s: {name} {t[name].text()}, frame-major {t['frame-major'].text()}; mean abs pixel "
                    f"diff vs per-sample {r['diff_mean']:.2f} (max {r['diff_max']:.2f})"))
    (mx, my), plain, margin = r["margin_px"], r["bytes"]["fast"] / 1e3, r["bytes"]["margin"] / 1e3
    canvas = f"{c.crop_wh[0] + 2 * mx}x{c.crop_wh[1] + 2 * my}"
    out.append(Result(
        f"crops.{c.name}.train_margin", f"train crops with the augmentation margin, disk per sample ({where})", "",
        margin, "KB/sample", command, details=f"crops.train_context_scale {c.context}: {canvas} canvas per frame; "
        f"without the margin {plain:.1f} KB/sample ({margin / plain:.2f}x); extraction CPU s {t['margin'].text()} vs "
        f"{t['frame-major'].text()} ({t['margin'].median / t['frame-major'].median:.2f}x)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds of the three variants")
    parser.add_argument("--cases", default="textured-paper,textured-demo", help=f"of {[c.name for c in CASES]}")
    parser.add_argument("--jpeg-quality", type=int, default=CropsConfig.jpeg_quality, help="0 stores raw pixels")
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in args.cases.split(",") if n not in by_name]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; choose from {list(by_name)}")
    cv2.setNumThreads(1)  # per-core figures
    command = "python -m benchmarks.crops" + (f" --cases {args.cases}" if args.cases != parser.get_default("cases") else "")
    runs = [run_case(by_name[n], args.videos, args.frames, args.jpeg_quality, args.repeats)
            for n in args.cases.split(",")]
    store = f"JPEG q{args.jpeg_quality}" if args.jpeg_quality else "raw"
    print(f"crops benchmark: {args.videos} videos x {args.frames} frames per case, {store} shards, 1 core, "
          f"{args.repeats} interleaved rounds; per-core figures are per CPU-second of this process")
    results = [res for r in runs for res in case_results(r, command)]
    for res in results:
        verdict = "" if res.passed is None else (" PASS" if res.passed else " FAIL")
        print(f"  {res.benchmark}: {res.value:,.1f} {res.unit}{verdict} ({res.details})")
    print("\nfast-path cost breakdown (CPU ms, re-timed in isolation):")
    for r in runs:
        print(f"  {r['case'].name}: " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r["costs"].items()))
    if args.json:
        write_results(args.json, results)
    return 1 if any(res.passed is False for res in results) else 0


if __name__ == "__main__":
    sys.exit(main())
