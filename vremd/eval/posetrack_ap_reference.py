"""PoseTrack per-joint AP by plain loops over frames, persons and joints: the slow, obviously correct reference.

`posetrack_ap.evaluate_frames` is the fast, vectorised path; tests compare the two on generated data
(ignore regions and awkward cases included) and `python -m benchmarks.eval_speed --check-reference` does too.
The rules are docs/poseval_spec.md §2-§5; frame selection and the result record are the fast path's own.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from vremd.eval.poseval_io import NUM_EVAL_JOINTS
from vremd.eval.posetrack_ap import HEAD_SIZE_FACTOR, PCKH_THRESHOLD, APResult, ap_result, select_frames

__all__ = ["reference_evaluate"]


def reference_evaluate(pairs, protocol: str = "posetrack18") -> APResult:
    """Per-joint AP by explicit loops over frames, persons and joints (docs/poseval_spec.md §2-§5)."""
    J = NUM_EVAL_JOINTS
    emitted = [[] for _ in range(J)]  # per joint: (score, label) in pooled order
    n_gt = np.zeros(J, dtype=np.int64)
    for gt, pr in select_frames(pairs, protocol):
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
    return ap_result(ap, pre, rec, n_gt, 0, protocol)


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
    size = HEAD_SIZE_FACTOR * math.sqrt((head[2] - head[0]) ** 2 + (head[3] - head[1]) ** 2)
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
