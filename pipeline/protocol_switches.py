"""What each test-protocol choice of issue 28 is worth on the demo: one switch at a time, paired by seed.

The reference is the protocol the paper profile now follows (the DCPose lineage, docs/fidelity.md rows P1,
P3, P7): augmentation drawn as DCPose draws it and warped from the frame's pixels, no flip test, every kept
box's pose written (`detect.postprocess: none`). Each row turns one choice back to what the project did
before issue 28 and reports the change in Mean AP (and per joint group) paired by seed:

- `flip test on`: the same models, scored with `train.flip_test=true` (GT boxes);
- `OKS-NMS on`: the same models, scored on simulated detector boxes with `detect.postprocess=oks_nms` against
  `none` on the same boxes. The demo scores with GT boxes, where OKS-NMS never acts (one box per person), so
  this row needs boxes with duplicates and false positives: every GT box of the val split, jittered, scored
  U(0.5, 1); half of them a second, looser box scoring lower; in 30% of the frames a false positive of a
  person's size beside one, inside the frame. The reference pins `detect.postprocess=none` (the demo profile
  keeps `oks_nms`, which gives the same AP as `none` on GT boxes);
- `old augmentation`: models trained with `augment.sampling=uniform augment.borders=crop` at the demo's
  former magnitudes (rotation uniform in +-30 deg on every sample, zoom uniform in [0.75, 1.25], black
  outside the stored 1.25x crop), scored as the reference;
- `all three (before issue 28)`: the old-augmentation models with the flip test and OKS-NMS, on the
  simulated boxes, against the reference on the same boxes.

It runs the pipeline's own CLIs (train, evaluate, crops, preprocess) on the demo's data, so `dvc repro` (or
`make demo`) must have built data/raw, data/crops, data/index and the weights first. Six trainings (two per
seed) at the demo schedule, about 13 minutes each on an idle 2-core CPU, and 18 evaluations of about 30 s.
Finished trainings and scores in `--work` are reused when made by the same command, so an interrupted run
goes on where it stopped; after a code change, use a new `--work`.
MLflow runs go to `<work>/mlflow.db`.

    python pipeline/protocol_switches.py --seeds 0 1 2 --work protocol_runs [--json protocol_runs/results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from vremd.ablation.paired import paired_difference
from vremd.data.posetrack import Video, read_video
from vremd.eval.posetrack_ap import COLUMNS, MEAN

OLD_AUGMENT = ("augment.sampling=uniform", "augment.borders=crop", "augment.rotation_deg=30.0",
               "augment.scale_min=0.75", "augment.scale_max=1.25", "augment.half_body_prob=0.0")
FLIP, OKS_NMS = "train.flip_test=true", "detect.postprocess=oks_nms"
NO_NMS = "detect.postprocess=none"  # the reference: the paper profile's (the demo profile keeps oks_nms)


def simulated_detections(gt_dir: Path, seed: int = 0) -> list[dict]:
    """COCO detection results for the labeled frames of the val GT json files in `gt_dir` (see the docstring)."""
    rng = np.random.default_rng(seed)
    out = []
    for path in sorted(Path(gt_dir).glob("*.json")):
        video = read_video(path, "val")
        for frame in video.frames:
            if not frame.is_labeled:
                continue
            width = _frame_width(video, Path(gt_dir).parents[1] / frame.file_name)
            boxes = [p.bbox_xywh for p in frame.persons if p.bbox_xywh is not None]
            for x, y, w, h in boxes:
                score = rng.uniform(0.5, 1.0)
                out.append(_detection(frame.image_id, _jitter(rng, (x, y, w, h), 0.05), score))
                if rng.random() < 0.5:  # a second, looser box on the same person
                    out.append(_detection(frame.image_id, _jitter(rng, (x, y, w, h), 0.15), score * rng.uniform(0.3, 0.9)))
            if boxes and rng.random() < 0.3:  # a false positive of a typical person's size
                x, y, w, h = boxes[int(rng.integers(len(boxes)))]
                x = min(max(x + rng.uniform(-2, 2) * w, 0.0), max(width - w, 0.0))  # beside a person, in the frame
                out.append(_detection(frame.image_id, (x, y, w, h), rng.uniform(0.2, 0.5)))
    return out


def _frame_width(video: Video, image: Path) -> int:
    """The width of the video's frames: from its json when it says, else read from the frame `image`."""
    if video.image_hw is not None:
        return video.image_hw[1]
    shape = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape if image.is_file() else None
    if shape is None:
        raise SystemExit(f"{image}: cannot read the frame to learn its width")
    return shape[1]


def _jitter(rng: np.random.Generator, box: tuple[float, ...], spread: float) -> tuple[float, ...]:
    x, y, w, h = box
    cx, cy = x + w / 2 + rng.normal(0, spread) * w, y + h / 2 + rng.normal(0, spread) * h
    w, h = w * math.exp(rng.normal(0, spread)), h * math.exp(rng.normal(0, spread))
    return cx - w / 2, cy - h / 2, w, h


def _detection(image_id: int, box: tuple[float, ...], score: float) -> dict:
    return {"image_id": int(image_id), "category_id": 1, "bbox": [round(float(v), 2) for v in box],
            "score": round(float(score), 4)}


def _run(args: list[str], log: Path) -> None:
    print("$", " ".join(args), flush=True)
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"{args[0]} failed (exit {rc}); see {log}")


def _run_once(args: list[str], result: Path, log: Path) -> None:
    """Run `args` unless `result` exists from the same command (its argv kept beside it in `<result>.argv`): a
    result of another command is made again, never reused. Code changes are not seen: use a new `--work`."""
    argv = result.with_name(result.name + ".argv")
    if result.is_file() and argv.is_file() and json.loads(argv.read_text()) == args:
        return
    argv.unlink(missing_ok=True)
    _run(args, log)
    argv.write_text(json.dumps(args))


def _sets(sets: tuple[str, ...]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def detection_index(work: Path, raw: Path, crops: Path, log: Path) -> Path:
    """The val split cut with the simulated detector boxes (train crops reused from `crops` by hard links)."""
    index = work / "index-det"
    if (index / "val.parquet").is_file():
        return index
    boxes = work / "simulated_detections.json"
    boxes.write_text(json.dumps(simulated_detections(raw / "synthetic" / "annotations" / "val")))
    crops_det = work / "crops-det"
    shutil.rmtree(crops_det, ignore_errors=True)
    shutil.copytree(crops, crops_det, copy_function=os.link)  # the crops stage replaces files, never edits them
    _run(["pipeline/crops.py", "--raw", str(raw), "--out", str(crops_det), "--no-progress",
          "--set", f"data.val_boxes={boxes}"], log)
    _run(["pipeline/preprocess.py", "--crops", str(crops_det), "--out", str(index), "--stats",
          str(work / "dataset-det.json")], log)
    return index


def train(work: Path, name: str, seed: int, sets: tuple[str, ...], index: Path, raw: Path, log: Path) -> Path:
    """models/final.pt of one demo training (`name`, `seed`, extra `--set`s), reused as `_run_once` says."""
    out = work / f"{name}-seed{seed}"
    _run_once(["pipeline/train.py", "--index", str(index), "--raw", str(raw), "--out", str(out), "--curve",
               str(out / "train_curve.csv"), "--storage", str(work / "ray_results"), "--no-progress",
               "--run-name", f"{name}-seed{seed}", "--set", f"train.seed={seed}", *_sets(sets)], out / "final.pt", log)
    return out / "final.pt"


def evaluate(model: Path, index: Path, raw: Path, sets: tuple[str, ...], out: Path, log: Path) -> dict[str, float]:
    """The AP table (Head ... Mean) of `model` on `index` with extra `--set`s, reused as `_run_once` says."""
    metrics = out / "ap.json"
    _run_once(["pipeline/evaluate.py", "--model", str(model), "--index", str(index), "--raw", str(raw), "--out",
               str(out), "--metrics", str(metrics), "--no-progress", *_sets(sets)], metrics, log)
    table = json.loads(metrics.read_text())
    return {col: table[col] for col in COLUMNS}


def measure(seeds: list[int], work: Path, index: Path, raw: Path, crops: Path) -> dict:
    """Every score of every seed: {seed: {label: {column: AP}}}."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    det = detection_index(work, raw, crops, log)
    scores: dict[int, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        ev = work / "eval" / f"seed{seed}"
        new = train(work, "dcpose-protocol", seed, (), index, raw, log)
        scores[seed] = {  # the reference model's scores first: a scoring fault shows before the next training
            "reference, GT boxes": evaluate(new, index, raw, (NO_NMS,), ev / "new-gt", log),
            "flip test, GT boxes": evaluate(new, index, raw, (NO_NMS, FLIP), ev / "new-gt-flip", log),
            "reference, simulated boxes": evaluate(new, det, raw, (NO_NMS,), ev / "new-det", log),
            "OKS-NMS, simulated boxes": evaluate(new, det, raw, (OKS_NMS,), ev / "new-det-oks", log),
        }
        old = train(work, "old-augmentation", seed, OLD_AUGMENT, index, raw, log)
        scores[seed]["old augmentation, GT boxes"] = evaluate(old, index, raw, (NO_NMS,), ev / "old-gt", log)
        scores[seed]["all three, simulated boxes"] = evaluate(old, det, raw, (FLIP, OKS_NMS), ev / "old-det-flip-oks", log)
    return scores


ROWS = (  # (row, its scores, the reference scores it is paired with)
    ("flip test on", "flip test, GT boxes", "reference, GT boxes"),
    ("OKS-NMS on (simulated detector boxes)", "OKS-NMS, simulated boxes", "reference, simulated boxes"),
    ("old augmentation", "old augmentation, GT boxes", "reference, GT boxes"),
    ("all three (before issue 28), simulated boxes", "all three, simulated boxes", "reference, simulated boxes"),
)


def table(scores: dict[int, dict[str, dict[str, float]]]) -> str:
    """Markdown: each row's paired change of Mean AP (95% t interval, verdict, per seed) and per joint group."""
    lines = ["| switch (one at a time) | Δ Mean AP | 95% interval | verdict | per seed | "
             + " | ".join(f"Δ {c}" for c in COLUMNS[:-1]) + " |", "|---" * (5 + len(COLUMNS) - 1) + "|"]
    for row, label, ref in ROWS:
        diffs = {col: paired_difference(row, ref, col, {s: v[label][col] for s, v in scores.items()},
                                        {s: v[ref][col] for s, v in scores.items()}) for col in COLUMNS}
        d = diffs[MEAN]
        interval = f"[{d.low:+.2f}, {d.high:+.2f}]" if d.n >= 2 else "–"
        lines.append(f"| {row} | {d.mean:+.2f} | {interval} | {d.verdict} | "
                     + " / ".join(f"{x:+.2f}" for x in d.diffs) + " | "
                     + " | ".join(f"{diffs[c].mean:+.1f}" for c in COLUMNS[:-1]) + " |")
    refs = {ref: [v[ref][MEAN] for v in scores.values()] for ref in ("reference, GT boxes", "reference, simulated boxes")}
    lines += ["", "Reference Mean AP per seed: " + "; ".join(
        f"{ref}: " + " / ".join(f"{x:.2f}" for x in values) for ref, values in refs.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("protocol_runs"), help="trainings, scores, log")
    parser.add_argument("--index", type=Path, default=Path("data/index"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--crops", type=Path, default=Path("data/crops"))
    parser.add_argument("--json", type=Path, default=None, help="write every score here")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(args.work / 'mlflow.db').resolve()}")
    scores = measure(args.seeds, args.work.resolve(), args.index.resolve(), args.raw.resolve(), args.crops.resolve())
    if args.json:
        args.json.write_text(json.dumps({str(s): v for s, v in scores.items()}, indent=2) + "\n")
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
