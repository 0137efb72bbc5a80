"""Speed of the vectorised PoseTrack AP evaluator against a per-person Python loop (and the official poseval).

Generates a PoseTrack18-val-sized set (seeded: ~170 videos x ~30 labeled frames x ~5 persons, GT and
noisy predictions in 2018 json), then prints end-to-end seconds of `evaluate_dirs` (json parsing
included), compute-only seconds of `evaluate_frames` vs `reference_evaluate` below (asserting equal
numbers), and with `--poseval PATH` the official code's end-to-end time on the same folders.

    python benchmarks/eval_speed.py [--videos 170] [--poseval /path/to/poseval-checkout]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import shapely

from vremd.data.joints import JOINT_NAMES
from vremd.eval.poseval_io import NUM_EVAL_JOINTS, read_frames
from vremd.eval.posetrack_ap import PCKH_THRESHOLD, _result, _select, evaluate_dirs, evaluate_frames

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
# straightforward per-person reference of the spec (slow on purpose: plain loops, no vectorisation)


def reference_evaluate(pairs, protocol: str = "posetrack18"):
    """Per-joint AP by explicit loops over frames, persons and joints (docs/poseval_spec.md §2-§5)."""
    J = NUM_EVAL_JOINTS
    emitted = [[] for _ in range(J)]  # per joint: (score, label) in pooled order
    n_gt = np.zeros(J, dtype=np.int64)
    for gt, pr in _select(pairs, protocol):
        polys = [shapely.Polygon(v) if len(v) else shapely.Polygon() for v in gt.ignore]
        gts = _reference_persons(gt, polys, protocol)
        prs = _reference_persons(pr, polys, protocol)
        for _, has, _, _ in gts:
            n_gt += np.array(has, dtype=np.int64)
        owner = _reference_assign(gts, prs)
        for p, (pxy, phas, pscore, _) in enumerate(prs):
            for j in range(J):
                if phas[j]:
                    label = False
                    if owner[p] >= 0:
                        gxy, ghas, _, head = gts[owner[p]]
                        label = bool(ghas[j] and _reference_dist(pxy[j], gxy[j], head) <= PCKH_THRESHOLD)
                    emitted[j].append((pscore[j], label))
    ap, pre, rec = np.zeros(J), np.zeros(J), np.zeros(J)
    for j in range(J):
        ap[j], pre[j], rec[j] = _reference_voc(emitted[j], n_gt[j], protocol == "posetrack21")
    return _result(ap, pre, rec, n_gt, 0, protocol)


def _reference_persons(frame, polys, protocol):
    persons = []
    for r in range(len(frame.xy)):
        xy = [(float(frame.xy[r, j, 0]), float(frame.xy[r, j, 1])) for j in range(NUM_EVAL_JOINTS)]
        if protocol == "posetrack21":
            has = [x > 0 and y > 0 for x, y in xy]
        else:
            has = [bool(frame.present[r, j]) for j in range(NUM_EVAL_JOINTS)]
        if polys:
            inside = [any(poly.contains(shapely.Point(x, y)) for poly in polys) for x, y in xy]
            has = [h and not i for h, i in zip(has, inside)]
            if protocol == "posetrack21":
                xy = [(0.0, 0.0) if i else p for p, i in zip(xy, inside)]
                if all(inside) or all(x <= 0 and y <= 0 for x, y in xy):
                    continue
            elif not any(has):
                continue
        persons.append((xy, has, [float(s) for s in frame.score[r]], frame.head_x1y1x2y2[r]))
    return persons


def _reference_dist(a, b, head) -> float:
    size = 0.6 * math.sqrt((head[2] - head[0]) ** 2 + (head[3] - head[1]) ** 2)
    d = math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)
    if size == 0:
        return math.inf if d > 0 else math.nan
    return d / size


def _reference_assign(gts, prs) -> list[int]:
    """Two-step argmax assignment; returns the GT index each prediction is matched to, or -1."""
    pck = [[0.0] * len(gts) for _ in prs]
    for p, (pxy, phas, _, _) in enumerate(prs):
        for r, (gxy, ghas, _, head) in enumerate(gts):
            hits = sum(1 for j in range(NUM_EVAL_JOINTS)
                       if phas[j] and ghas[j] and _reference_dist(pxy[j], gxy[j], head) <= PCKH_THRESHOLD)
            pck[p][r] = hits / sum(ghas) if sum(ghas) else 0.0
    for row in pck:
        best = max(range(len(row)), key=lambda r: (row[r], -r)) if row else -1
        for r in range(len(row)):
            row[r] = row[r] if r == best else 0.0
    owner = [-1] * len(prs)
    for r in range(len(gts)):
        col = [pck[p][r] for p in range(len(prs))]
        if col and max(col) > 0:
            owner[max(range(len(col)), key=lambda p: (col[p], -p))] = r
    return owner


def _reference_voc(pairs, n_gt, floor_one) -> tuple[float, float, float]:
    if not pairs:
        return 0.0, 0.0, 0.0
    scores = np.array([s for s, _ in pairs])
    labels = [pairs[i][1] for i in np.argsort(scores)[::-1]]  # poseval's ranking call, same ties
    denom = max(n_gt, 1) if floor_one else n_gt
    tp, prec, rec = 0, [], []
    for k, label in enumerate(labels):
        tp += label
        prec.append(tp / (k + 1))
        rec.append(tp / denom if denom else math.nan)
    if math.isnan(rec[-1]):
        return math.nan, prec[-1] * 100, math.nan
    ap, best, prev = 0.0, 0.0, 0.0
    envelope = []
    for p in reversed(prec):
        best = max(best, p)
        envelope.append(best)
    for r, p in zip(rec, reversed(envelope)):
        ap += (r - prev) * p
        prev = r
    return ap * 100, prec[-1] * 100, rec[-1] * 100


# ---------------------------------------------------------------------------------------------
# benchmark


def _parsed_pairs(gt_dir: Path, pred_dir: Path, protocol: str):
    pairs = []
    for gt_path in sorted(gt_dir.glob("*.json")):
        gt = read_frames(orjson.loads(gt_path.read_bytes()), str(gt_path), protocol)
        pr = read_frames(orjson.loads((pred_dir / gt_path.name).read_bytes()), gt_path.name, protocol)
        pairs.extend(zip(gt, pr))
    return pairs


def _best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _official(poseval: Path, gt_dir: Path, pred_dir: Path) -> tuple[float, list]:
    """Run the official poseval AP in a subprocess (its own imports); return (seconds, ap list)."""
    code = (
        "import sys,json,time,io,contextlib,tempfile;sys.path.insert(0,sys.argv[1]);t=time.perf_counter()\n"
        "from poseval import eval_helpers\nfrom poseval.evaluateAP import evaluateAP\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        " g,p=eval_helpers.load_data_dir(['',sys.argv[2]+'/',sys.argv[3]+'/'])\n"
        " ap,_,_=evaluateAP(g,p,tempfile.mkdtemp(),False,False)\n"
        "print(json.dumps({'s':time.perf_counter()-t,'ap':[None if x!=x else x for x in ap.ravel().tolist()]}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(poseval), str(gt_dir), str(pred_dir)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["s"], got["ap"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=170)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--persons", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hard", action="store_true", help="add ignore regions and awkward cases")
    parser.add_argument("--cache", type=Path, help="folder to keep the generated data in (default: temp)")
    parser.add_argument("--poseval", type=Path, help="checkout of leonid-pishchulin/poseval to time as well")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        root = root / f"v{args.videos}_f{args.frames}_p{args.persons}_s{args.seed}{'_hard' if args.hard else ''}"
        if not (root / "pred").is_dir():
            write_dataset(root, args.seed, args.videos, args.frames, args.persons, args.hard)
        gt_dir, pred_dir = root / "gt", root / "pred"
        t_e2e, fast = _best_of(lambda: evaluate_dirs(gt_dir, pred_dir), args.repeat)
        pairs = _parsed_pairs(gt_dir, pred_dir, "posetrack18")
        t_fast, fast_sorted = _best_of(lambda: evaluate_frames(pairs), args.repeat)
        t_ref, ref = _best_of(lambda: reference_evaluate(pairs), 1)
        n_persons = sum(len(g.xy) for g, _ in pairs)
        print(f"data: {args.videos} videos, {len(pairs)} frames, {n_persons} GT persons; Total AP {fast.table['Total']:.4f}")
        np.testing.assert_allclose(list(fast_sorted.per_joint.values()), list(ref.per_joint.values()), rtol=0, atol=1e-9)
        print(f"end-to-end evaluate_dirs (json parsing included): {t_e2e:.3f} s")
        print(f"compute only: vectorised {t_fast:.3f} s, per-person loop {t_ref:.3f} s, ratio {t_ref / t_fast:.1f}x "
              f"(target >= 20x); numbers identical to 1e-9")
        if args.poseval:
            t_off, ap_off = _official(args.poseval, gt_dir, pred_dir)
            ours = list(fast.per_joint.values()) + [fast.table["Total"]]
            diff = max(abs(a - b) for a, b in zip(ours, ap_off) if b is not None)
            print(f"official poseval end-to-end: {t_off:.3f} s, ratio {t_off / t_e2e:.1f}x (target >= 20x); "
                  f"max |AP difference| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
