"""PoseTrack per-joint AP exactly as the official poseval computes it, vectorised with numpy.

The rules are docs/poseval_spec.md: frames with GT only, ignore regions strictly inside
(boundary kept), PCKh@0.5 inclusive with head size 0.6 x diag(bbox_head), poseval's two-step argmax
assignment (lowest index on ties), VOC all-point AP pooled per joint over the dataset. The
`posetrack21` protocol is the PoseTrack21 re-implementation (spec §0). The slow per-person reference
lives beside it in posetrack_ap_reference.py; tests compare both.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
import shapely
from tqdm import tqdm

from vremd.eval.poseval_io import NUM_EVAL_JOINTS, POSEVAL_JOINTS, EvalFrame, PoseTrackEvalError, read_frames

PROTOCOLS = ("posetrack18", "posetrack21")
_MAX_BLOCK = 1 << 22  # elements of one (frames, P, R, J) distance block
PCKH_THRESHOLD = 0.5  # a predicted joint matches when within 0.5 head sizes of its GT joint (inclusive)
HEAD_SIZE_FACTOR = 0.6  # poseval: head size = 0.6 x the diagonal of the GT head box
GROUPS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top", "neck", "nose"),
    "Shoulder": ("right_shoulder", "left_shoulder"),
    "Elbow": ("right_elbow", "left_elbow"),
    "Wrist": ("right_wrist", "left_wrist"),
    "Hip": ("right_hip", "left_hip"),
    "Knee": ("right_knee", "left_knee"),
    "Ankle": ("right_ankle", "left_ankle"),
}
# The AP vocabulary, once. The mean over the 15 joints is "Total" in the evaluator's table (poseval's name; the
# `python -m vremd.eval` json) and "Mean" everywhere downstream (reports, metrics/ap.json, CSVs: the paper's name);
# `as_columns` is the one place that renames it. MLflow metrics are "ap/<column>", train_curve.csv says "ap_<column>".
TOTAL, MEAN = "Total", "Mean"
TABLE_KEYS: tuple[str, ...] = (*GROUPS, TOTAL)  # the evaluator's table
COLUMNS: tuple[str, ...] = (*GROUPS, MEAN)  # every report's columns
METRIC_NAMES: dict[str, str] = {  # report column -> MLflow (and Ray Tune) metric name
    "Head": "ap/head", "Shoulder": "ap/shoulder", "Elbow": "ap/elbow", "Wrist": "ap/wrist",
    "Hip": "ap/hip", "Knee": "ap/knee", "Ankle": "ap/ankle", MEAN: "ap/mean",
}
MEAN_METRIC = METRIC_NAMES[MEAN]


def curve_column(metric: str) -> str:
    """A metric's column name in metrics/train_curve.csv: "ap/mean" -> "ap_mean"."""
    return metric.replace("/", "_")


AP_CURVE_COLUMNS: tuple[str, ...] = tuple(curve_column(METRIC_NAMES[c]) for c in (MEAN, *GROUPS))  # ap_mean, ap_head ..


def as_columns(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of `table` keyed by report columns: the evaluator's "Total" becomes "Mean" (moved last; an existing
    "Mean" wins and "Total" stays)."""
    out = dict(table or {})
    if TOTAL in out and MEAN not in out:
        out[MEAN] = out.pop(TOTAL)
    return out


@dataclass(frozen=True)
class APResult:
    """Per-joint AP (percent) and the 8-column summary; NaN where poseval gives NaN."""

    table: dict[str, float]  # Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Total
    per_joint: dict[str, float]  # keyed by POSEVAL_JOINTS
    precision: dict[str, float]  # at the end of the ranked list, percent (poseval's `pre`)
    recall: dict[str, float]  # at the end of the ranked list, percent (poseval's `rec`)
    n_gt: dict[str, int]  # annotated GT joints after ignore removal
    n_frames: int  # evaluated frames
    protocol: str

    def to_json(self) -> dict[str, Any]:
        """Return {"table": ..., "per_joint_ap": ...} with None for NaN (json null)."""
        clean = lambda d: {k: (None if math.isnan(v) else float(v)) for k, v in d.items()}  # noqa: E731
        return {"table": clean(self.table), "per_joint_ap": clean(self.per_joint)}


# ---------------------------------------------------------------------------------------------
# entry points


def evaluate_dirs(gt_dir: Path, pred_dir: Path, protocol: str = "posetrack18", strict: bool = False,
                  progress: bool = False) -> APResult:
    """Evaluate every `*.json` of `gt_dir` against the same-named file in `pred_dir`.

    `strict` rejects repeated track_ids within a prediction frame (upstream poseval does; the DCPose
    copy the papers used does not). Files are taken in `glob` order like poseval: the order only
    matters for tied scores (§6).
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for d, what in ((gt_dir, "GT"), (pred_dir, "prediction")):
        if not d.is_dir():
            raise PoseTrackEvalError(f"{d}: {what} directory does not exist")
    gt_paths = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(gt_dir)), "*.json"))]
    if not gt_paths:
        raise PoseTrackEvalError(f"{gt_dir}: no *.json GT files in this directory")
    gts, preds, names = [], [], []
    for gt_path in tqdm(gt_paths, desc="reading json", unit="file", disable=not progress):
        pred_path = pred_dir / gt_path.name
        if not pred_path.is_file():
            raise PoseTrackEvalError(f"{pred_path}: prediction file does not exist (GT {gt_path.name})")
        gts.append(load_json(gt_path))
        preds.append(load_json(pred_path))
        names.append((str(gt_path), str(pred_path)))
    return evaluate_json(gts, preds, names=names, protocol=protocol, strict=strict)


def evaluate_json(gt_videos: Sequence[Mapping], pred_videos: Sequence[Mapping],
                  names: Sequence[tuple[str, str]] | None = None, protocol: str = "posetrack18",
                  strict: bool = False) -> APResult:
    """Evaluate already-parsed json dicts, one GT and one prediction per video, paired by position."""
    if protocol not in PROTOCOLS:
        raise PoseTrackEvalError(f"protocol: expected one of {PROTOCOLS}, found {protocol!r}")
    if len(gt_videos) != len(pred_videos):
        raise PoseTrackEvalError(f"predictions: {len(pred_videos)} videos given for {len(gt_videos)} GT videos")
    names = names or [(f"gt[{i}]", f"pred[{i}]") for i in range(len(gt_videos))]
    pairs: list[tuple[EvalFrame, EvalFrame]] = []
    for gt, pred, (gt_name, pred_name) in zip(gt_videos, pred_videos, names):
        gt_frames = read_frames(gt, gt_name, protocol)
        pred_frames = read_frames(pred, pred_name, protocol)
        if len(gt_frames) != len(pred_frames):
            raise PoseTrackEvalError(f"{pred_name}: images: {len(pred_frames)} prediction frames but "
                                     f"{len(gt_frames)} GT frames in {gt_name} (frames pair by position)")
        if strict:
            for frame in pred_frames:
                if len(np.unique(frame.track_id)) != len(frame.track_id):
                    raise PoseTrackEvalError(f"{frame.where}: track_id: repeated within the frame")
        pairs.extend(zip(gt_frames, pred_frames))
    return evaluate_frames(pairs, protocol)


def load_json(path: Path) -> Any:
    """Return the parsed json of `path` (orjson), or raise naming the file."""
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise PoseTrackEvalError(f"{path}: not valid json ({err})") from None


# ---------------------------------------------------------------------------------------------
# frame selection and ignore regions (§2)


def select_frames(pairs: Sequence[tuple[EvalFrame, EvalFrame]], protocol: str) -> list[tuple[EvalFrame, EvalFrame]]:
    """Keep the frames poseval evaluates: with GT persons (PT18) or `is_labeled` (PT21)."""
    if protocol == "posetrack18":
        return [(g, p) for g, p in pairs if g.n_raw > 0]
    for g, _ in pairs:
        if g.is_labeled is None:
            raise PoseTrackEvalError(f"{g.where}: is_labeled: required by the posetrack21 protocol")
    return [(g, p) for g, p in pairs if g.is_labeled]


def _apply_ignore(xy: np.ndarray, present: np.ndarray, polys: list, protocol: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove keypoints strictly inside any polygon from one frame's persons; return (xy, present, keep).

    `xy` (R, 15, 2), `present` (R, 15). PT18 drops persons left without keypoints (even those that had
    none); PT21 zeroes removed keypoints and drops persons all inside or all at x <= 0 and y <= 0.
    """
    inside = np.zeros(present.shape, dtype=bool)  # (R, 15)
    for poly in polys:
        inside |= shapely.contains_xy(poly, xy[..., 0], xy[..., 1])  # boundary is not inside
    present = present & ~inside
    if protocol == "posetrack18":
        return xy, present, present.any(axis=1)
    xy = np.where(inside[..., None], 0.0, xy)
    keep = ~inside.all(axis=1) & ~((xy[..., 0] <= 0) & (xy[..., 1] <= 0)).all(axis=1)
    return xy, present, keep


def _polygons(gt: EvalFrame) -> list:
    polys = []
    for r, vertices in enumerate(gt.ignore):
        try:
            poly = shapely.Polygon(vertices) if len(vertices) else shapely.Polygon()
        except (ValueError, shapely.errors.GEOSException) as err:
            raise PoseTrackEvalError(f"{gt.where}: ignore_regions[{r}]: not a polygon ({err})") from None
        shapely.prepare(poly)
        polys.append(poly)
    return polys


@dataclass
class _Side:
    """All persons of one side (GT or predictions) of the kept frames, concatenated frame after frame."""

    xy: np.ndarray  # (N, 15, 2)
    present: np.ndarray  # (N, 15) bool
    score: np.ndarray  # (N, 15)
    head: np.ndarray  # (N, 4) x1, y1, x2, y2
    per_frame: np.ndarray  # (F,) persons in each frame

    @classmethod
    def of(cls, frames: Sequence[EvalFrame], protocol: str) -> "_Side":
        cat = lambda name, shape: (np.concatenate([getattr(f, name) for f in frames]) if frames  # noqa: E731
                                   else np.zeros(shape))
        xy = cat("xy", (0, NUM_EVAL_JOINTS, 2))
        present = cat("present", (0, NUM_EVAL_JOINTS)).astype(bool)
        if protocol == "posetrack21":  # PT21: present iff x > 0 and y > 0, whatever v says
            present = (xy[..., 0] > 0) & (xy[..., 1] > 0)
        return cls(xy, present, cat("score", (0, NUM_EVAL_JOINTS)), cat("head_x1y1x2y2", (0, 4)),
                   np.array([len(f.xy) for f in frames], dtype=np.int64))

    def starts(self) -> np.ndarray:
        return np.cumsum(self.per_frame) - self.per_frame

    def filter(self, keep: np.ndarray) -> "_Side":
        frame = np.repeat(np.arange(len(self.per_frame)), self.per_frame)
        return _Side(self.xy[keep], self.present[keep], self.score[keep], self.head[keep],
                     np.bincount(frame[keep], minlength=len(self.per_frame)))


def _remove_ignored(kept, gts: _Side, preds: _Side, protocol: str) -> tuple[_Side, _Side]:
    """Apply each kept frame's GT ignore regions to both sides (§2.2); only those frames loop."""
    keeps = [np.ones(len(gts.xy), dtype=bool), np.ones(len(preds.xy), dtype=bool)]
    starts = [gts.starts(), preds.starts()]
    for f, (g, _) in enumerate(kept):
        if not g.ignore:
            continue
        polys = _polygons(g)
        for side, keep, start in zip((gts, preds), keeps, starts):
            rows = slice(start[f], start[f] + side.per_frame[f])
            side.xy[rows], side.present[rows], keep[rows] = _apply_ignore(side.xy[rows], side.present[rows],
                                                                          polys, protocol)
    return gts.filter(keeps[0]), preds.filter(keeps[1])


# ---------------------------------------------------------------------------------------------
# matching (§3) and AP (§4)


def evaluate_frames(pairs: Sequence[tuple[EvalFrame, EvalFrame]], protocol: str = "posetrack18") -> APResult:
    """Score paired (GT, prediction) frames in order; the core every entry point ends in."""
    kept = select_frames(pairs, protocol)
    gts = _Side.of([g for g, _ in kept], protocol)
    preds = _Side.of([p for _, p in kept], protocol)
    gts, preds = _remove_ignored(kept, gts, preds, protocol)
    _check_heads(kept, gts, preds)
    labels = match_labels(gts.xy, gts.present, gts.head, gts.per_frame, preds.xy, preds.present, preds.per_frame)
    n_gt = gts.present.sum(axis=0)  # (15,) annotated GT joints after ignore removal
    ap, pre, rec = joint_ap(preds.score, preds.present, labels, n_gt, recall_floor_one=protocol == "posetrack21")
    return ap_result(ap, pre, rec, n_gt, len(kept), protocol)


def _check_heads(kept, gts: _Side, preds: _Side) -> None:
    """poseval needs a GT head box in every frame that has both GT persons and predictions."""
    needed = np.repeat((preds.per_frame > 0) & (gts.per_frame > 0), gts.per_frame)
    bad = ~np.isfinite(gts.head).all(axis=1) & needed
    if bad.any():
        frame = int(np.repeat(np.arange(len(kept)), gts.per_frame)[np.argmax(bad)])
        raise PoseTrackEvalError(f"{kept[frame][0].where}: bbox_head: missing for a GT person (needed for PCKh)")


def head_size(head_wh) -> np.ndarray:
    """poseval's PCKh normaliser: HEAD_SIZE_FACTOR x the head box diagonal, (...) from its width, height (..., 2)."""
    wh = np.asarray(head_wh)
    return HEAD_SIZE_FACTOR * np.sqrt(wh[..., 0] * wh[..., 0] + wh[..., 1] * wh[..., 1])


def match_labels(g_xy: np.ndarray, g_has: np.ndarray, g_head: np.ndarray, n_gt_frame: np.ndarray,
                 p_xy: np.ndarray, p_has: np.ndarray, n_pr_frame: np.ndarray) -> np.ndarray:
    """Return the TP label (NP, 15) of every predicted joint under poseval's two-step assignment.

    Persons are concatenated frame after frame: GT `g_xy` (NG, 15, 2), `g_has` (NG, 15),
    `g_head` (NG, 4) x1 y1 x2 y2; predictions `p_xy` (NP, 15, 2), `p_has` (NP, 15); `n_*_frame` (F,)
    the persons per frame. Frames with the same (predictions, GT) counts are matched together as one
    (frames, P, R, 15) block, so no padding is needed.
    """
    labels = np.zeros(p_has.shape, dtype=bool)  # frames without GT or predictions: all FP / nothing
    g_size = head_size(g_head[:, 2:] - g_head[:, :2])  # (NG,) head size in pixels
    g_start, p_start = np.cumsum(n_gt_frame) - n_gt_frame, np.cumsum(n_pr_frame) - n_pr_frame
    both = np.flatnonzero((n_gt_frame > 0) & (n_pr_frame > 0))
    key = n_pr_frame[both] * (int(n_gt_frame.max(initial=0)) + 1) + n_gt_frame[both]
    order = np.argsort(key, kind="stable")
    groups = np.split(both[order], np.flatnonzero(np.diff(key[order])) + 1) if len(both) else []
    for frames in groups:
        n_p, n_r = int(n_pr_frame[frames[0]]), int(n_gt_frame[frames[0]])
        step = max(1, _MAX_BLOCK // (n_p * n_r * NUM_EVAL_JOINTS))
        for start in range(0, len(frames), step):
            block = frames[start:start + step]
            gi = (g_start[block][:, None] + np.arange(n_r)).ravel()  # (B*R,) GT rows of the block
            pi = (p_start[block][:, None] + np.arange(n_p)).ravel()  # (B*P,) prediction rows
            shape_g, shape_p = (len(block), n_r), (len(block), n_p)
            lab = _match_block(g_xy[gi].reshape(*shape_g, NUM_EVAL_JOINTS, 2), g_has[gi].reshape(*shape_g, -1),
                               g_size[gi].reshape(shape_g), p_xy[pi].reshape(*shape_p, NUM_EVAL_JOINTS, 2),
                               p_has[pi].reshape(*shape_p, -1))
            labels[pi] = lab.reshape(-1, NUM_EVAL_JOINTS)
    return labels


def _match_block(G: np.ndarray, GH: np.ndarray, HS: np.ndarray, P: np.ndarray, PH: np.ndarray) -> np.ndarray:
    """Two-step assignment for B frames of R GT persons and P predictions each; labels (B, P, 15).

    G (B, R, 15, 2), GH (B, R, 15), HS (B, R) head size; P (B, P, 15, 2), PH (B, P, 15).
    """
    dx = P[:, :, None, :, 0] - G[:, None, :, :, 0]  # (B, P, R, 15)
    dy = P[:, :, None, :, 1] - G[:, None, :, :, 1]
    with np.errstate(divide="ignore", invalid="ignore"):  # zero-size head boxes never match
        dist = np.sqrt(dx * dx + dy * dy) / HS[:, None, :, None]
    match = (dist <= PCKH_THRESHOLD) & PH[:, :, None] & GH[:, None]  # (B, P, R, 15), inclusive
    pck = match.sum(-1) / np.maximum(GH.sum(-1), 1)[:, None, :]  # (B, P, R); 0 for GT without joints
    best_gt = pck.argmax(axis=2)  # (B, P): each prediction keeps its best GT, lowest index on ties
    kept = np.where(np.arange(pck.shape[2]) == best_gt[..., None], pck, 0.0)
    best_pr = kept.argmax(axis=1)  # (B, R): each GT takes its best remaining prediction
    bi, ri = np.nonzero(kept.max(axis=1) > 0)
    owner = np.full(pck.shape[:2], -1)  # (B, P) GT matched to each prediction, -1 if none
    owner[bi, best_pr[bi, ri]] = ri
    own = np.take_along_axis(match, np.maximum(owner, 0)[:, :, None, None], axis=2)[:, :, 0]  # (B, P, 15)
    return own & (owner >= 0)[..., None]


def joint_ap(p_score: np.ndarray, p_has: np.ndarray, labels: np.ndarray, n_gt: np.ndarray,
             recall_floor_one: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return VOC all-point AP, end precision and end recall per joint, each (15,) in percent.

    Scores are pooled per joint in input order and ranked with `np.argsort(scores)[::-1]`, the same
    call poseval makes, so tied scores rank as they do in the official code (given the same order).
    """
    J = p_has.shape[1]
    ranked = []
    for j in range(J):
        scores, lab = p_score[p_has[:, j], j], labels[p_has[:, j], j]
        ranked.append(lab[np.argsort(scores)[::-1]])
    n = np.array([len(r) for r in ranked])  # (15,) emitted predictions per joint
    width = max(int(n.max(initial=0)), 1)
    lab = np.zeros((J, width))
    valid = np.arange(width) < n[:, None]  # (15, width)
    lab[valid] = np.concatenate(ranked) if n.sum() else []
    tp = np.cumsum(lab, axis=1)
    prec = np.where(valid, tp / np.arange(1, width + 1), 0.0)
    denom = np.maximum(n_gt, 1) if recall_floor_one else n_gt.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / denom[:, None]  # (15, width); padding repeats the last recall, adding no step
    step = np.diff(np.concatenate([np.zeros((J, 1)), rec], axis=1), axis=1)
    envelope = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]  # precision non-increasing from the right
    ap = np.sum(step * envelope, axis=1) * 100
    last = np.maximum(n - 1, 0)
    pre_end, rec_end = prec[np.arange(J), last] * 100, rec[np.arange(J), last] * 100
    empty = n == 0
    ap[empty], pre_end[empty], rec_end[empty] = 0.0, 0.0, 0.0  # no prediction: 0, even without GT
    ap[~empty & (denom == 0)] = np.nan  # predictions but no GT: recall 0/0
    return ap, pre_end, rec_end


def ap_result(ap, pre, rec, n_gt, n_frames, protocol) -> APResult:
    """The APResult of per-joint AP, precision and recall (percent, (15,) in POSEVAL_JOINTS order) and GT counts."""
    per_joint = dict(zip(POSEVAL_JOINTS, (float(v) for v in ap)))
    table = {g: float(np.mean([per_joint[n] for n in names])) for g, names in GROUPS.items()}  # NaN joint -> NaN group
    table[TOTAL] = float(np.mean(ap[~np.isnan(ap)])) if (~np.isnan(ap)).any() else math.nan
    return APResult(table=table, per_joint=per_joint, precision=dict(zip(POSEVAL_JOINTS, map(float, pre))),
                    recall=dict(zip(POSEVAL_JOINTS, map(float, rec))),
                    n_gt=dict(zip(POSEVAL_JOINTS, map(int, n_gt))), n_frames=n_frames, protocol=protocol)
