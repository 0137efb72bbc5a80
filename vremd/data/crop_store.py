"""Incremental on-disk store of crops: one shard per video plus a manifest with one row per sample.

Layout under the crops dir:
  <split>/<video>.npy    the video's crops, memory-mappable: raw uint8 (S, T=3, H', W', 3) RGB when
                         crops.jpeg_quality is 0, else 1-D uint8 JPEG bytes (rows' jpeg_offsets); train
                         crops carry their rows' margin_px of the frame on each side (H' = H + 2 my)
  <split>/<video>.json   the video's record: input key, code hash, crop settings, counts, skip messages, its rows
  manifest.parquet       all rows of the current videos (+ `shard`: path relative to the crops dir); its parquet
                         metadata holds the crop settings (`vremd.data.crop_settings`), which the index keeps
  stats.json             counts per split (samples, skips by reason, clamped neighbours), and why videos were cut
A video is re-extracted only when its key changes: a hash of its json, the size and mtime of its
image folder's files, its detections, the crop settings and the code that cuts crops (`crop_code_sha256`:
the sources of this module's import closure, so an edit of crops.py re-extracts every video). Videos no
longer present are removed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import orjson
import pandas as pd
from tqdm import tqdm

from vremd.atomic import atomic_write_bytes, atomic_write_stream
from vremd.config import BadInputPolicy, ConfigError, CropsConfig, DetectConfig
from vremd.data import posetrack
from vremd.data.crop_settings import crop_settings, write_parquet
from vremd.data.crops import extract_video
from vremd.data.detections import Detection, DetectionFormatError, read_detections
from vremd.hashing import closure_sha256

FORMAT_VERSION = 5  # 2: frames may be decoded at 1/2 or 1/4 resolution (crops.py); 3: out-of-frame joints kept,
# val crops every person poseval counts (any box size, unlabeled frames with persons) and no jointless person;
# 4: neighbours by frame number (a json's images sorted by it; a neighbour the json does not list is clamped),
# and train crops stored with a margin of the frame around them (rows' margin_px, crops.train_context_scale)
# 5: the key covers the crop code, records hold its hash and the settings, the manifest's metadata the settings
MANIFEST = "manifest.parquet"
STATS = "stats.json"


def crop_code_sha256() -> str:
    """sha256 of the code that cuts crops: the sources of this module's import closure (`vremd.hashing`)."""
    return closure_sha256(Path(__file__))


@dataclass(frozen=True)
class VideoTask:
    """Everything one worker needs to (re-)extract one video."""

    split: str
    json_path: Path
    dataset_dir: Path
    out_dir: Path
    cfg: CropsConfig
    policy: BadInputPolicy
    detections: dict[int, list[Detection]] | None
    code: str  # crop_code_sha256()
    key: str


def video_key(task: VideoTask) -> str:
    """Hash of everything a video's crops depend on."""
    h = hashlib.sha256()
    h.update(task.json_path.read_bytes())
    image_dir = task.dataset_dir / "images" / task.split / task.json_path.stem
    if image_dir.is_dir():
        for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
            st = entry.stat()
            h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(orjson.dumps([FORMAT_VERSION, task.policy, crop_settings(task.cfg), task.code]))
    if task.detections is not None:
        dets = sorted((i, d.box_xywh, d.score) for i, ds in task.detections.items() for d in ds)
        h.update(orjson.dumps(dets))
    return h.hexdigest()


def run_task(task: VideoTask) -> dict:
    """Extract one video, write its shard then its record (both atomically); return the record."""
    name = task.json_path.stem
    split_dir = task.out_dir / task.split
    split_dir.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT_VERSION, "key": task.key, "code": task.code,
              "settings": {**crop_settings(task.cfg), "on_bad_input": task.policy},
              "split": task.split, "video": name, "shard": f"{task.split}/{name}.npy"}
    try:
        video = posetrack.read_video(task.json_path, task.split)
    except posetrack.PoseTrackFormatError as exc:
        if task.policy == "error":
            raise
        crops, rows = np.zeros(0, np.uint8), []
        record.update(skipped={"bad_json": 1}, messages=[str(exc)], clamped_neighbours=0,
                      frames_decoded=0, decode_scales={}, single_frame_video=False)
    else:
        res = extract_video(video, task.split, task.dataset_dir, task.cfg, task.policy, task.detections)
        crops, rows = res.crops, res.rows
        record.update(skipped=dict(res.skipped), messages=res.messages,
                      clamped_neighbours=res.clamped_neighbours, frames_decoded=res.frames_decoded,
                      decode_scales={str(k): v for k, v in sorted(res.decode_scales.items())},
                      single_frame_video=len(video.frames) == 1)
    for row in rows:
        row["shard"] = record["shard"]
    record.update(samples=len(rows), rows=rows)
    atomic_write_stream(split_dir / f"{name}.npy", lambda f: np.save(f, crops))
    atomic_write_bytes(split_dir / f"{name}.json", orjson.dumps(record))
    return record


def _read_record(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _why_extract(record: dict | None, task: VideoTask, out_dir: Path) -> str | None:
    """Why `task`'s video must be (re-)extracted, its record being `record`; None while that record is valid."""
    if record is None:
        return "new video"
    if record.get("format") != FORMAT_VERSION:
        return f"crop record format {record.get('format')} (now {FORMAT_VERSION})"
    if not (out_dir / record["shard"]).exists():
        return "shard missing"
    if record["key"] == task.key:
        return None
    if record["code"] != task.code:
        return "crop code changed"
    if record["settings"] != {**crop_settings(task.cfg), "on_bad_input": task.policy}:
        return "crop settings changed"
    return "inputs changed (json, frames or detections)"


def _detections_by_video(val_boxes: str, dataset_dir: Path, min_score: float) -> dict[str, dict[int, list[Detection]]]:
    """Detections of `data.val_boxes` scoring at least `min_score`, split per val video (by its GT json's image ids)."""
    by_image = read_detections(Path(val_boxes), min_score)
    out = {}
    for json_path in posetrack.list_videos(dataset_dir, "val"):
        video = posetrack.read_video(json_path, "val")
        out[json_path.stem] = {f.image_id: by_image[f.image_id] for f in video.frames if f.image_id in by_image}
    if by_image and not any(out.values()):  # boxes for another dataset or split: every val person would go unpredicted
        raise DetectionFormatError(
            f"{val_boxes}: image_id: none of its {len(by_image)} image ids (e.g. {min(by_image)}) is a val frame of "
            f"{dataset_dir} (data.val_boxes)")
    return out


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one core per worker: OpenCV's own threads would oversubscribe


def _plan_tasks(dataset_dir: Path, out_dir: Path, cfg: CropsConfig, policy: BadInputPolicy,
                val_boxes: str, min_score: float) -> tuple[list[VideoTask], dict, dict]:
    """Every current video's task, the records still valid for it (same key), and why each other is extracted."""
    dets = _detections_by_video(val_boxes, dataset_dir, min_score) if val_boxes != "gt" else None
    code = crop_code_sha256()
    tasks, records, reasons = [], {}, {}
    for split in posetrack.SPLITS:
        for json_path in posetrack.list_videos(dataset_dir, split):
            video_dets = dets.get(json_path.stem, {}) if dets is not None and split == "val" else None
            task = VideoTask(split, json_path, dataset_dir, out_dir, cfg, policy, video_dets, code, "")
            task = VideoTask(**{**task.__dict__, "key": video_key(task)})
            record = _read_record(out_dir / split / f"{json_path.stem}.json")
            why = _why_extract(record, task, out_dir)
            if why is None:
                records[(split, json_path.stem)] = record
            else:
                reasons[(split, json_path.stem)] = why
            tasks.append(task)
    return tasks, records, reasons


def _remove_stale(out_dir: Path, current: set[tuple[str, str]]) -> list[str]:
    """Delete shards, records and temp files of videos that are no longer in the raw data."""
    removed = []
    for split in posetrack.SPLITS:
        for path in sorted((out_dir / split).glob("*")) if (out_dir / split).is_dir() else []:
            video = path.name.split(".")[0]
            temp = path.name.endswith(".tmp") or ".tmp-" in path.name  # a killed writer's (now or before)
            if temp or (split, video) not in current:
                path.unlink()
                if path.suffix == ".json":
                    removed.append(f"{split}/{video}")
    return removed


def build_crops(dataset_dir: Path, out_dir: Path, cfg: CropsConfig, policy: BadInputPolicy,
                val_boxes: str = "gt", workers: int = 1, progress: bool = True,
                min_box_score: float = DetectConfig.score_threshold) -> dict:
    """Bring `out_dir` up to date with the raw dataset; write the manifest and stats; return the stats.

    Val crops of a detection json (`val_boxes`) take its boxes scoring at least `min_box_score`
    (`detect.score_threshold`)."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if not 0 <= cfg.jpeg_quality <= 100:
        raise ConfigError(f"crops.jpeg_quality: expected 0 (raw pixels) or 1-100, found {cfg.jpeg_quality}")
    if not any(posetrack.list_videos(dataset_dir, split) for split in posetrack.SPLITS):
        raise FileNotFoundError(f"{dataset_dir}: no annotations/{{train,val}}/*.json (run pipeline/download.py first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks, records, reasons = _plan_tasks(dataset_dir, out_dir, cfg, policy, val_boxes, min_box_score)
    todo = [t for t in tasks if (t.split, t.json_path.stem) in reasons]
    removed = _remove_stale(out_dir, {(t.split, t.json_path.stem) for t in tasks})
    bar = tqdm(total=len(todo), desc="crops (videos)", unit="video", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        threads = cv2.getNumThreads()
        _init_worker()
        try:
            for task in todo:
                record = run_task(task)
                records[(record["split"], record["video"])] = record
                bar.update()
        finally:
            cv2.setNumThreads(threads)
    else:
        # forkserver: a worker forked from this process inherits OpenCV's thread pool mid-state and can hang
        # for ever in `cv2.setNumThreads` (seen after earlier cv2 work in the same process, e.g. a test session)
        context = multiprocessing.get_context("forkserver")
        with context.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
            for record in pool.imap_unordered(run_task, todo):
                records[(record["split"], record["video"])] = record
                bar.update()
    bar.close()
    ordered = [records[(t.split, t.json_path.stem)] for t in tasks]
    stats = _stats(ordered, processed=[f"{t.split}/{t.json_path.stem}" for t in todo], removed=removed)
    stats["reasons"] = dict(Counter(reasons.values()).most_common())  # why the processed videos were cut
    rows = [row for record in ordered for row in record["rows"]]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    atomic_write_stream(out_dir / MANIFEST, lambda f: write_parquet(manifest, f, crop_settings(cfg)))
    atomic_write_bytes(out_dir / STATS, orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    return stats


MANIFEST_COLUMNS = [
    "split", "video", "json_path", "frame_index", "image_id", "file_name", "track_id", "person_id",
    "source", "box_xywh", "score", "joints_crop_xyv", "num_visible", "crop_to_image",
    "neighbour_clamped", "shard", "row", "jpeg_offsets", "margin_px",
]


def _stats(records: list[dict], processed: list[str], removed: list[str]) -> dict:
    """Counts per split and per video (no rows), plus which videos this run (re)extracted or removed."""
    splits = {}
    for split in posetrack.SPLITS:
        recs = [r for r in records if r["split"] == split]
        skipped = sum((Counter(r["skipped"]) for r in recs), Counter())
        splits[split] = {
            "videos": len(recs), "samples": sum(r["samples"] for r in recs),
            "skipped": dict(sorted(skipped.items())),
            "clamped_neighbours": sum(r["clamped_neighbours"] for r in recs),
            "single_frame_videos": sum(bool(r["single_frame_video"]) for r in recs),
            "messages": [m for r in recs for m in r["messages"]][:50],
        }
    return {"splits": splits, "processed": processed, "removed": removed}


def read_manifest(crops_dir: Path) -> pd.DataFrame:
    """The manifest of a crops dir (one row per sample)."""
    path = Path(crops_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: no crops manifest; run pipeline/crops.py first")
    return pd.read_parquet(path)
