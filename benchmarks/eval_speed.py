"""Speed of the vectorised PoseTrack AP evaluator against the official poseval, end to end.

Generates a PoseTrack18-val-sized set (seeded: ~170 videos x ~30 labeled frames x ~5 persons, GT and
noisy predictions in 2018 json), then, in this one process, times `evaluate_dirs` (json parsing included)
and the official poseval's `load_data_dir` + `evaluateAP` on the same folders (its import excluded),
interleaved `--repeats` times (median and min of this process's CPU seconds), and checks that both give the same AP. The
official code comes from `--poseval PATH` (a checkout of leonid-pishchulin/poseval, the version DCPose
uses); without it that figure is reported as not measured. `--check-reference` also compares the
compute-only result with `reference_evaluate` (vremd/eval/posetrack_ap_reference.py), a plain
per-person loop of the spec (a correctness check, not a baseline).

    python -m benchmarks.eval_speed [--videos 170] [--poseval /path/to/poseval-checkout] [--hard]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from vremd.data.joints import JOINT_NAMES
from vremd.eval.poseval_io import read_frames
from vremd.eval.posetrack_ap import evaluate_dirs, evaluate_frames
from vremd.eval.posetrack_ap_reference import reference_evaluate

from benchmarks.result import Result, write_results
from benchmarks.timing import cpu_clock, interleaved

TARGET_SPEEDUP = 20.0

# ---------------------------------------------------------------------------------------------
# data generator (also used by tests to compare the fast path with the reference)


def _person(rng: np.random.Generator, w: float, h: float) -> tuple[np.ndarray, list[float]]:
    cx, cy, size = rng.uniform(100, w - 100), rng.uniform(100, h - 100), rng.uniform(40, 200)
    kps = np.zeros((17, 3))
    kps[:, 0] = cx + rng.normal(0, size / 3, 17)
    kps[:, 1] = cy + rng.normal(0, size / 2, 17)
    kps[:, 2] = 1
    kps[[3, 4]] = 0  # ears are never annotated in PoseTrack18
    kps[rng.random(17) < 0.1] = 0  # unannotated joints
    hx, hy = kps[2, 0] - size / 8, kps[2, 1] - size / 8
    return kps, [float(hx), float(hy), float(size / 4 * rng.uniform(0.8, 1.2)), float(size / 4)]


def _noisy(rng: np.random.Generator, kps: np.ndarray, head: list[float], hard: bool) -> np.ndarray:
    hs = 0.6 * math.hypot(head[2], head[3])
    out = kps.copy()
    out[:, :2] += rng.normal(0, hs * rng.uniform(0.1, 0.6), (17, 2))
    out[:, 2] = 1
    if hard:
        out[rng.random(17) < 0.1] = 0  # (0,0,0): no prediction for that joint
        out[rng.random(17) < 0.05, 2] = 0  # v=0 with coordinates still counts
    return out


def _ignore(rng: np.random.Generator, w: float, h: float) -> tuple[list[list[float]], list[list[float]]]:
    xs, ys = [], []
    for _ in range(rng.integers(1, 3)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(50, 300)
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if rng.random() < 0.8 else rng.uniform(0, 2 * np.pi, n)
        xs.append([float(v) for v in np.round(cx + r * np.cos(ang))])  # unsorted angles: self-intersecting
        ys.append([float(v) for v in np.round(cy + r * np.sin(ang))])
    return xs, ys


def make_video(rng: np.random.Generator, index: int, n_frames: int, n_persons: int, hard: bool = False
               ) -> tuple[dict, dict]:
    """Return (GT, prediction) PoseTrack-2018 dicts for one video; `hard` adds the awkward cases."""
    name, w, h = f"{index:06d}_mpii_test", 1280.0, 720.0
    cats = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(JOINT_NAMES)}]
    images, gt_anns, pr_anns = [], [], []
    for f in range(n_frames):
        image_id = 10000000000 + index * 10000 + f
        image = {"id": image_id, "file_name": f"images/val/{name}/{f:06d}.jpg", "is_labeled": True,
                 "frame_id": image_id, "nframes": n_frames}
        if hard and rng.random() < 0.3:
            image["ignore_regions_x"], image["ignore_regions_y"] = _ignore(rng, w, h)
        images.append(image)
        labeled = not (hard and rng.random() < 0.15)
        image["is_labeled"] = labeled or bool(rng.random() < 0.5)  # sometimes labeled with no GT
        n_gt = int(rng.poisson(n_persons)) if labeled else 0
        for t in range(n_gt):
            kps, head = _person(rng, w, h)
            if hard and rng.random() < 0.05:
                kps[:] = 0  # a GT person without any keypoint
            gt_anns.append({"id": image_id * 100 + t, "image_id": image_id, "track_id": t, "category_id": 1,
                            "keypoints": [float(v) for v in np.round(kps.ravel(), 2)], "bbox_head": head})
            if rng.random() < 0.9:
                pred = _noisy(rng, kps, head, hard)
                pr_anns.append(_pred_ann(rng, image_id, len(pr_anns), pred))
        for _ in range(int(rng.poisson(1.0 if hard else 0.5))):  # false positives, also on unlabeled frames
            pr_anns.append(_pred_ann(rng, image_id, len(pr_anns), _person(rng, w, h)[0]))
    gt = {"images": images, "annotations": gt_anns, "categories": cats}
    return gt, {"images": images, "annotations": pr_anns, "categories": cats}


def _pred_ann(rng: np.random.Generator, image_id: int, n: int, kps: np.ndarray) -> dict:
    scores = np.round(rng.random(17), 6)  # 6 decimals: a few ties across the dataset
    return {"image_id": image_id, "track_id": n % 9000, "category_id": 1, "id": n,
            "keypoints": [float(v) for v in np.round(kps.ravel(), 2)], "scores": [float(s) for s in scores]}


def write_dataset(out_dir: Path, seed: int, n_videos: int, n_frames: int, n_persons: int, hard: bool = False
                  ) -> tuple[Path, Path]:
    """Write gt/ and pred/ folders of generated videos under `out_dir`; return both paths."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = out_dir / "gt", out_dir / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        gt, pred = make_video(rng, v + 1, n_frames, n_persons, hard)
        name = gt["images"][0]["file_name"].split("/")[2] + ".json"
        (gt_dir / name).write_bytes(orjson.dumps(gt))
        (pred_dir / name).write_bytes(orjson.dumps(pred))
    return gt_dir, pred_dir


# ---------------------------------------------------------------------------------------------
# benchmark


def _parsed_pairs(gt_dir: Path, pred_dir: Path, protocol: str):
    pairs = []
    for gt_path in sorted(gt_dir.glob("*.json")):
        gt = read_frames(orjson.loads(gt_path.read_bytes()), str(gt_path), protocol)
        pr = read_frames(orjson.loads((pred_dir / gt_path.name).read_bytes()), gt_path.name, protocol)
        pairs.extend(zip(gt, pr))
    return pairs


def _official(poseval: Path):
    """The official poseval's end-to-end AP as a function of (gt_dir, pred_dir) -> per-joint + total AP list;
    its import happens here, outside any timing."""
    sys.path.insert(0, str(poseval))
    try:
        from poseval import eval_helpers
        from poseval.evaluateAP import evaluateAP
    except ImportError as exc:
        raise SystemExit(f"eval_speed: --poseval {poseval}: cannot import poseval from there ({exc})") from exc

    def run(gt_dir: Path, pred_dir: Path) -> list:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                tempfile.TemporaryDirectory() as out:
            gt, pr = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
            ap, _, _ = evaluateAP(gt, pr, out, False, False)
        return [None if x != x else float(x) for x in ap.ravel().tolist()]

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=170)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--persons", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds of both evaluators")
    parser.add_argument("--hard", action="store_true", help="add ignore regions and awkward cases")
    parser.add_argument("--cache", type=Path, help="folder to keep the generated data in (default: temp)")
    parser.add_argument("--poseval", type=Path, help="checkout of leonid-pishchulin/poseval: the baseline")
    parser.add_argument("--check-reference", action="store_true", help="also compare with the per-person loop")
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    official = _official(args.poseval) if args.poseval else None
    command = "python -m benchmarks.eval_speed --poseval PATH" + (" --hard" if args.hard else "")
    name = "eval_speed" + (".hard" if args.hard else "")
    what = (f"PoseTrack AP evaluator end to end (json parsing included), {args.videos} generated videos"
            + (" with ignore regions and awkward cases" if args.hard else ""))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        root = root / f"v{args.videos}_f{args.frames}_p{args.persons}_s{args.seed}{'_hard' if args.hard else ''}"
        if not (root / "pred").is_dir():
            write_dataset(root, args.seed, args.videos, args.frames, args.persons, args.hard)
        gt_dir, pred_dir = root / "gt", root / "pred"
        out: dict[str, object] = {}
        variants = {"vremd": lambda: out.__setitem__("vremd", evaluate_dirs(gt_dir, pred_dir))}
        if official is not None:
            variants["poseval"] = lambda: out.__setitem__("poseval", official(gt_dir, pred_dir))
        t = interleaved(variants, args.repeats, clock=cpu_clock)  # single-threaded Python: per-core figures
        fast = out["vremd"]
        pairs = _parsed_pairs(gt_dir, pred_dir, "posetrack18")
        n_persons = sum(len(g.xy) for g, _ in pairs)
        print(f"data: {args.videos} videos, {len(pairs)} frames, {n_persons} GT persons; Total AP {fast.table['Total']:.4f}")
        print(f"vremd evaluate_dirs end to end: {t['vremd'].text()}")
        if args.check_reference:
            ref = reference_evaluate(pairs)
            np.testing.assert_allclose(list(evaluate_frames(pairs).per_joint.values()), list(ref.per_joint.values()),
                                       rtol=0, atol=1e-9)
            print("compute-only result equals the per-person reference loop to 1e-9")
    if official is None:
        result = Result(name, what, "official poseval (import excluded)", None, "x", command,
                        target=TARGET_SPEEDUP, op=">=",
                        note=f"needs the official poseval: --poseval PATH (make bench POSEVAL=PATH); ours alone: "
                             f"{t['vremd'].text()}")
        print(f"official poseval: not measured ({result.note})")
    else:
        ours = list(fast.per_joint.values()) + [fast.table["Total"]]
        diff = max(abs(a - b) for a, b in zip(ours, out["poseval"]) if b is not None)
        if not diff < 1e-6:
            raise SystemExit(f"eval_speed: our AP differs from the official poseval's by {diff:.2e}")
        ratio = t["poseval"].median / t["vremd"].median
        result = Result(name, what, "official poseval (import excluded)", ratio, "x", command,
                        target=TARGET_SPEEDUP, op=">=",
                        details=f"{n_persons:,} GT persons; s: vremd {t['vremd'].text()}, poseval {t['poseval'].text()}, "
                                f"{args.repeats} interleaved rounds; max AP difference {diff:.1e}",
                        extra={"vremd_s": list(t["vremd"].runs), "poseval_s": list(t["poseval"].runs)})
        print(f"official poseval end to end: {t['poseval'].text()}; ratio of medians {ratio:.1f}x "
              f"(target >= {TARGET_SPEEDUP:.0f}x, {'PASS' if result.passed else 'FAIL'}); max |AP difference| {diff:.2e}")
    if args.json:
        write_results(args.json, [result])
    return 1 if result.passed is False else 0


if __name__ == "__main__":
    sys.exit(main())
