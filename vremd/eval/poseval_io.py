"""Read PoseTrack json (2018 layout or PoseTrack17 `annolist`) into per-frame arrays the way poseval does.

See docs/poseval_spec.md §1 (what is read) and §0 (the PoseTrack21 variant). Arrays use the
15 poseval joints in poseval id order (`POSEVAL_JOINTS`); coordinates are image pixels (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from vremd.data.posetrack import MAX_TRACK_ID, VIDEO_FOLDER
from vremd.errors import InputError

# poseval joint ids 0..14; poseval prints id 12 as "neck" although it is the head_bottom keypoint
POSEVAL_JOINTS: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "nose", "head_top",
)
# the category keypoint name poseval maps to each id (by name, never by slot)
CATEGORY_NAMES: tuple[str, ...] = POSEVAL_JOINTS[:12] + ("head_bottom", "nose", "head_top")
NUM_EVAL_JOINTS = 15
MISSING_SCORE = -9999.0  # poseval's fallback when a predicted keypoint carries no score


class PoseTrackEvalError(InputError):
    """An input file cannot be evaluated; the message names the file and the field."""


@dataclass(frozen=True)
class EvalFrame:
    """One image of one video: its persons as arrays over the 15 poseval joints.

    `xy` (R, 15, 2) image pixels; `present` (R, 15) bool; `score` (R, 15) (MISSING_SCORE where the file
    gives none); `head_x1y1x2y2` (R, 4) GT head box, NaN where absent; `track_id` (R,) int;
    `n_raw` the number of persons before any were dropped (poseval's frame selection counts these);
    `is_labeled` the image flag (None if absent); `ignore` the ignore polygons as (V, 2) arrays.
    """

    xy: np.ndarray
    present: np.ndarray
    score: np.ndarray
    head_x1y1x2y2: np.ndarray
    track_id: np.ndarray
    n_raw: int
    is_labeled: bool | None
    ignore: tuple[np.ndarray, ...]
    where: str  # "<file>: images[i]" for error messages


def _fail(where: str, what: str) -> PoseTrackEvalError:
    return PoseTrackEvalError(f"{where}: {what}")


def read_frames(data: Any, source: str, protocol: str = "posetrack18") -> list[EvalFrame]:
    """Return the frames poseval evaluates from one parsed json file (`source` names it in errors)."""
    if not isinstance(data, Mapping):
        raise _fail(source, f"top level: expected a json object, found {type(data).__name__}")
    if "annolist" in data:
        return _read_annolist(data["annolist"], source)
    return _read_2018(data, source, first_video_only=protocol == "posetrack18")


# ---------------------------------------------------------------------------------------------
# PoseTrack 2018 layout


def _category_slots(data: Mapping, source: str) -> tuple[np.ndarray, int]:
    """Return, for each poseval joint, its slot in `keypoints`, and the number of slots K."""
    cats = data.get("categories")
    if not isinstance(cats, list) or len(cats) != 1 or not isinstance(cats[0], Mapping):
        raise _fail(source, "categories: expected exactly one category")
    if cats[0].get("name") != "person":
        raise _fail(source, f"categories[0].name: expected 'person', found {cats[0].get('name')!r}")
    names = cats[0].get("keypoints")
    if not isinstance(names, list) or len(names) not in (15, 17):
        raise _fail(source, "categories[0].keypoints: expected a list of 15 or 17 names")
    missing = [n for n in CATEGORY_NAMES if n not in names]
    if missing:
        raise _fail(source, f"categories[0].keypoints: missing PoseTrack joints {missing}")
    return np.array([names.index(n) for n in CATEGORY_NAMES]), len(names)


def _video_of(file_name: Any, where: str) -> str:
    """Return the video id poseval derives from an image file name (digits before the first '_')."""
    if not isinstance(file_name, str):
        raise _fail(where, "file_name: missing or not a string")
    parts = file_name.replace("\\", "/").rsplit("/", 2)
    folder, frame = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    match = VIDEO_FOLDER.match(folder)
    if match is None:
        raise _fail(where, f"file_name: folder {folder!r} is not '<digits>_<mpii|bonn|mpiinew>...'")
    stem = frame.split(".")[0]
    if not stem.isdigit() or int(stem) >= 10000:
        raise _fail(where, f"file_name: frame {frame!r} is not '<integer < 10000>.jpg'")
    return match.group(1)


def _keypoint_array(anns: list, k: int, source: str) -> np.ndarray:
    """Return all annotations' keypoints as (A, K, 3) float64, or raise naming the bad one."""
    if not anns:
        return np.zeros((0, k, 3))
    try:
        arr = np.array([a["keypoints"] for a in anns], dtype=np.float64)
        if arr.shape == (len(anns), 3 * k):
            return arr.reshape(len(anns), k, 3)  # (A, K, 3)
    except (KeyError, TypeError, ValueError):
        pass
    for i, a in enumerate(anns):
        kps = a.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k:
            n = len(kps) if isinstance(kps, list) else type(kps).__name__
            raise _fail(source, f"annotations[{i}].keypoints: expected {3 * k} numbers, found {n}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kps):
            raise _fail(source, f"annotations[{i}].keypoints: non-numeric value")
    raise _fail(source, "annotations: keypoints could not be read")  # pragma: no cover


def _fast_rows(values: list, width: int) -> np.ndarray | None:
    """Return `values` (lists of `width` numbers) as a float64 (A, width) array, or None if any is not."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (len(values), width) else None


def _score_array(anns: list, k: int, source: str) -> np.ndarray:
    """Return per-slot scores (A, K); MISSING_SCORE where `scores` is absent or empty."""
    fast = _fast_rows([a.get("scores") for a in anns], k) if anns else np.zeros((0, k))
    if fast is not None:
        return fast
    scores = np.full((len(anns), k), MISSING_SCORE)
    for i, a in enumerate(anns):
        s = a.get("scores")
        if s:  # poseval: a non-empty list carries scores, anything else means none
            if not isinstance(s, list) or len(s) < k:
                raise _fail(source, f"annotations[{i}].scores: expected {k} numbers")
            try:
                scores[i] = np.asarray(s[:k], dtype=np.float64)
            except (TypeError, ValueError):
                raise _fail(source, f"annotations[{i}].scores: non-numeric value") from None
    return scores


def _head_boxes(anns: list, source: str) -> np.ndarray:
    """Return GT head boxes (A, 4) as x1, y1, x2, y2 from `bbox_head` [x, y, w, h]; NaN if absent."""
    boxes = _fast_rows([a.get("bbox_head") for a in anns], 4) if anns else np.zeros((0, 4))
    if boxes is None:
        boxes = np.full((len(anns), 4), np.nan)
        for i, a in enumerate(anns):
            b = a.get("bbox_head")
            if b is None:
                continue
            if not isinstance(b, list) or len(b) != 4:
                raise _fail(source, f"annotations[{i}].bbox_head: expected [x, y, w, h]")
            try:
                boxes[i] = [float(v) for v in b]
            except (TypeError, ValueError):
                raise _fail(source, f"annotations[{i}].bbox_head: non-numeric value") from None
    # x2 = x + w as poseval computes it, before any subtraction
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _track_ids(anns: list, source: str) -> np.ndarray:
    raw = [a.get("track_id") for a in anns]
    if all(type(t) is int for t in raw) and max(raw, default=0) < MAX_TRACK_ID:
        return np.array(raw, dtype=np.int64)
    ids = np.zeros(len(anns), dtype=np.int64)
    for i, t in enumerate(raw):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise _fail(source, f"annotations[{i}].track_id: missing or not a number")
        if t >= MAX_TRACK_ID:
            raise _fail(source, f"annotations[{i}].track_id: {t} is not < {MAX_TRACK_ID}")
        ids[i] = int(t)
    return ids


def _ignore_2018(image: Mapping, where: str) -> tuple[np.ndarray, ...]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None or ys is None or not xs:
        return ()
    try:
        return tuple(np.array(list(zip(px, py)), dtype=np.float64).reshape(-1, 2) for px, py in zip(xs, ys))
    except (TypeError, ValueError):
        raise _fail(where, "ignore_regions_x/_y: expected lists of numbers per polygon") from None


def _read_2018(data: Mapping, source: str, first_video_only: bool) -> list[EvalFrame]:
    images, anns = data.get("images"), data.get("annotations", [])
    if not isinstance(images, list):
        raise _fail(source, "images: missing or not a list")
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise _fail(source, "annotations: expected a list of objects")
    slots, k = _category_slots(data, source)
    kps = _keypoint_array(anns, k, source)[:, slots]  # (A, 15, 3) in poseval joint order
    present = _present_2018(kps[..., :2], kps[..., 2])  # (A, 15)
    score = _score_array(anns, k, source)[:, slots]  # (A, 15)
    heads, tracks = _head_boxes(anns, source), _track_ids(anns, source)
    # group annotations by image (annotation order kept) so every image takes a slice, not a gather
    group = {}
    for image in images:
        group.setdefault(image.get("id") if isinstance(image, dict) else None, len(group))
    ann_group = np.array([group.get(a.get("image_id"), len(group)) for a in anns], dtype=np.int64)
    order = np.argsort(ann_group, kind="stable")
    kps, present, score, heads, tracks = kps[order], present[order], score[order], heads[order], tracks[order]
    bounds = np.searchsorted(ann_group[order], np.arange(len(group) + 1))
    frames, first = [], None
    for n, image in enumerate(images):
        where = f"{source}: images[{n}]"
        if not isinstance(image, dict):
            raise _fail(where, "expected an object")
        if first_video_only:
            video = _video_of(image.get("file_name"), where)
            first = video if first is None else first
            if video != first:  # poseval evaluates only the first video of a file
                continue
        g = group[image.get("id")]
        rows = slice(bounds[g], bounds[g + 1])
        is_labeled = image.get("is_labeled")
        frames.append(EvalFrame(
            xy=kps[rows, :, :2], present=present[rows], score=score[rows], head_x1y1x2y2=heads[rows],
            track_id=tracks[rows], n_raw=int(bounds[g + 1] - bounds[g]), is_labeled=None if is_labeled is None else bool(is_labeled),
            ignore=_ignore_2018(image, where), where=where,
        ))
    return frames


def _present_2018(xy: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A keypoint is absent only if (x, y, v) == (0, 0, 0); visibility is otherwise ignored."""
    return ~((xy[..., 0] == 0) & (xy[..., 1] == 0) & (v == 0))


# ---------------------------------------------------------------------------------------------
# PoseTrack17 `annolist` layout


def _one(value: Any, where: str, field: str) -> Any:
    if not isinstance(value, list) or len(value) != 1:
        raise _fail(where, f"{field}: expected a one-element list")
    return value[0]


def _read_rect(rect: Mapping, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Return (xy (15, 2), present (15,), score (15,), head (4,)) or None if poseval drops the rect."""
    ap = rect.get("annopoints")
    if not isinstance(ap, list) or not ap or not isinstance(ap[0], Mapping) or "point" not in ap[0]:
        return None  # poseval removes rects without annopoints[0].point
    xy, present = np.zeros((NUM_EVAL_JOINTS, 2)), np.zeros(NUM_EVAL_JOINTS, dtype=bool)
    score = np.full(NUM_EVAL_JOINTS, MISSING_SCORE)
    for p in ap[0]["point"] or []:
        pid = p.get("id")
        if pid is None:
            continue
        j = int(_one(pid, where, "point.id"))
        if not 0 <= j < NUM_EVAL_JOINTS:
            raise _fail(where, f"point.id: {j} is not a joint id 0..14")
        if present[j]:
            continue  # poseval takes the first point with a given id
        try:
            xy[j] = (float(_one(p.get("x"), where, "point.x")), float(_one(p.get("y"), where, "point.y")))
            if "score" in p:
                score[j] = float(_one(p["score"], where, "point.score"))
        except (TypeError, ValueError):
            raise _fail(where, "point: non-numeric x, y or score") from None
        present[j] = True
    head = np.full(4, np.nan)
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        head = np.array([float(_one(rect[k], where, k)) for k in ("x1", "y1", "x2", "y2")])
    return xy, present, score, head


def _read_annolist(annolist: Any, source: str) -> list[EvalFrame]:
    if not isinstance(annolist, list):
        raise _fail(source, "annolist: expected a list")
    frames = []
    for n, item in enumerate(annolist):
        where = f"{source}: annolist[{n}]"
        rects = item.get("annorect", []) if isinstance(item, Mapping) else None
        if not isinstance(rects, list):
            raise _fail(where, "annorect: expected a list")
        parsed, tracks = [], []
        for r, rect in enumerate(rects):
            got = _read_rect(rect, f"{where}.annorect[{r}]")
            if got is not None:
                parsed.append(got)
                t = rect.get("track_id")
                tracks.append(int(t[0]) if isinstance(t, list) and t else -1 - r)
        regions = item.get("ignore_regions") or []
        try:
            ignore = tuple(np.array([(_one(p["x"], where, "x"), _one(p["y"], where, "y")) for p in reg["point"]],
                                    dtype=np.float64).reshape(-1, 2) for reg in regions)
        except (KeyError, TypeError, ValueError):
            raise _fail(where, "ignore_regions: expected [{point: [{x: [..], y: [..]}]}]") from None
        stack = (lambda i, shape: np.array([p[i] for p in parsed]).reshape(shape))
        is_labeled = item.get("is_labeled")
        frames.append(EvalFrame(
            xy=stack(0, (-1, NUM_EVAL_JOINTS, 2)), present=stack(1, (-1, NUM_EVAL_JOINTS)).astype(bool),
            score=stack(2, (-1, NUM_EVAL_JOINTS)), head_x1y1x2y2=stack(3, (-1, 4)),
            track_id=np.array(tracks, dtype=np.int64), n_raw=len(rects),
            is_labeled=None if is_labeled is None else bool(is_labeled[0] if isinstance(is_labeled, list) else is_labeled),
            ignore=ignore, where=where,
        ))
    return frames
