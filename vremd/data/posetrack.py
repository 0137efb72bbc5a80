"""PoseTrack-2018 json (one file per video): typed loading with strict validation, atomic writing,
and a check that a dataset directory has every annotation and frame file it refers to.

Frame order is the file names' frame numbers (`.../000012.jpg` is frame 12), as poseval names frames
and as DCPose finds a frame's neighbours; `read_video` sorts the images by it (refusing a number listed
twice or a name without one) and records the json's own order, which `write_video` keeps, so a
prediction file pairs with its GT by position as poseval pairs them.

The layout (also written by the synthetic generator):
    <dataset>/annotations/{train,val}/<video>.json
    <dataset>/images/{train,val}/<video>/<frame:06d>.jpg
Errors read "<file>: <field>: <what is wrong>" so a bad file can be fixed without a debugger.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from vremd.atomic import atomic_write_bytes
from vremd.data.joints import JOINT_NAMES, NUM_JOINTS
from vremd.errors import InputError

SPLITS: tuple[str, ...] = ("train", "val")

# PoseTrack18's `categories[0].skeleton` (1-based), as in the official annotation files
POSETRACK18_SKELETON_1BASED: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

# a video folder's name as poseval reads it: "<digits>_<kind>[_...]", kind one of poseval's sequence kinds as a
# whole "_"-separated word (000342_mpii, 000001_mpii_test, 000522_mpiinew_test)
_KIND = r"(?:mpii|bonn|mpiinew)(?=_|/|$)"
VIDEO_FOLDER = re.compile(rf"(\d+)_({_KIND})")  # .match(folder name); groups: digits, kind
# what the official poseval accepts as an image path: .../<video folder>/<int>.jpg; groups: digits, frame
POSEVAL_FILE_NAME = re.compile(rf"(?:^|/)(\d+)_{_KIND}(?:_[^/]*)?/(\d+)\.jpg$")

MAX_TRACK_ID = 10000  # poseval asserts track_id < 10000


class PoseTrackFormatError(InputError):
    """A PoseTrack file or layout is malformed; the message reads "<file>: <field>: <problem>"."""


@dataclass(frozen=True)
class Person:
    """One annotated (or predicted) person in one frame."""

    track_id: int
    person_id: int  # the annotation "id"
    keypoints: np.ndarray  # (17, 3) float64 x, y, v in image pixels; (0, 0, 0) = absent
    bbox_xywh: tuple[float, float, float, float] | None
    bbox_head_xywh: tuple[float, float, float, float] | None
    scores: tuple[float, ...] | None = None  # (17,) per-keypoint scores of predictions


@dataclass(frozen=True)
class Frame:
    """One image of a video with its persons, in annotation order."""

    image_id: int
    frame_index: int  # position in the video's frames, in frame order
    file_name: str  # relative to the dataset dir: "images/val/<video>/000012.jpg"
    is_labeled: bool
    persons: tuple[Person, ...]
    ignore_regions: tuple[np.ndarray, ...]  # each (P, 2) polygon x, y


@dataclass(frozen=True)
class Video:
    """One PoseTrack json file: a video's frames in frame order."""

    name: str
    split: str
    json_path: Path
    frames: tuple[Frame, ...]
    image_hw: tuple[int, int] | None = None  # (height, width) of every frame, when known
    nframes: int | None = None  # length of the whole video when the json lists a subset (else len(frames))
    frame_numbers: tuple[int, ...] | None = None  # each frame's number (ascending); None: 0, 1, 2, ...
    listed_order: tuple[int, ...] | None = None  # frame_index of each json image in list order; None: sorted


def image_id_for(video_number: int, frame_index: int) -> int:
    """PoseTrack18 image id 1SSSSSSFFFF (1 = "mpii", S video number, F frame), as poseval computes it."""
    if not 0 <= video_number < 1_000_000 or not 0 <= frame_index < 10_000:
        raise ValueError(f"video number {video_number} / frame {frame_index} out of PoseTrack id range")
    return 10_000_000_000 + video_number * 10_000 + frame_index


def list_videos(dataset_dir: Path, split: str) -> list[Path]:
    """Sorted `annotations/<split>/*.json` of a dataset directory."""
    return sorted((Path(dataset_dir) / "annotations" / split).glob("*.json"))


def frame_number(file_name: str) -> int | None:
    """The frame number of an image file name: the last integer of its base name (`000012.jpg` -> 12), or None."""
    digits = re.findall(r"\d+", Path(file_name).stem)
    return int(digits[-1]) if digits else None


# ---------------------------------------------------------------- reading


def _fail(where: Path, field: str, problem: str) -> PoseTrackFormatError:
    return PoseTrackFormatError(f"{where}: {field}: {problem}")


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: Path, field: str) -> Any:
    if key not in obj:
        raise _fail(where, f"{field}.{key}", "missing")
    value = obj[key]
    bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if not isinstance(value, kind) or bad_bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(where, f"{field}.{key}", f"expected {names}, found {type(value).__name__}")
    return value


def _numbers(values: Any, count: int | None, where: Path, field: str) -> np.ndarray:
    if not isinstance(values, list):
        raise _fail(where, field, f"expected a list of numbers, found {type(values).__name__}")
    if count is not None and len(values) != count:
        raise _fail(where, field, f"has {len(values)} values, expected {count}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(where, f"{field}[{i}]", f"expected a number, found {type(v).__name__}")
        if not math.isfinite(v):
            raise _fail(where, f"{field}[{i}]", f"not a finite number ({v})")
    return np.asarray(values, dtype=np.float64)


def _box(ann: dict, key: str, where: Path, field: str) -> tuple[float, float, float, float] | None:
    if key not in ann:
        return None
    x, y, w, h = (float(v) for v in _numbers(ann[key], 4, where, f"{field}.{key}"))
    if w <= 0 or h <= 0:
        raise _fail(where, f"{field}.{key}", f"width and height must be > 0, found {w} x {h}")
    return (x, y, w, h)


def _person(ann: dict, where: Path, field: str) -> Person:
    track_id = _get(ann, "track_id", int, where, field)
    if not 0 <= track_id < MAX_TRACK_ID:
        raise _fail(where, f"{field}.track_id", f"must be in [0, {MAX_TRACK_ID}), found {track_id}")
    keypoints = _numbers(_get(ann, "keypoints", list, where, field), NUM_JOINTS * 3, where, f"{field}.keypoints")
    scores = None
    if ann.get("scores"):  # PoseTrack GT carries "scores": []
        scores = tuple(float(s) for s in _numbers(ann["scores"], NUM_JOINTS, where, f"{field}.scores"))
    return Person(
        track_id=track_id,
        person_id=_get(ann, "id", int, where, field),
        keypoints=keypoints.reshape(NUM_JOINTS, 3),  # (17, 3) x, y, v
        bbox_xywh=_box(ann, "bbox", where, field),
        bbox_head_xywh=_box(ann, "bbox_head", where, field),
        scores=scores,
    )


def _ignore_regions(image: dict, where: Path, field: str) -> tuple[np.ndarray, ...]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if xs is None and ys is None:
        return ()
    xs = _get(image, "ignore_regions_x", list, where, field)
    ys = _get(image, "ignore_regions_y", list, where, field)
    if len(xs) != len(ys):
        raise _fail(where, f"{field}.ignore_regions_x", f"{len(xs)} polygons but ignore_regions_y has {len(ys)}")
    polygons = []
    for k, (px, py) in enumerate(zip(xs, ys)):
        x = _numbers(px, None, where, f"{field}.ignore_regions_x[{k}]")
        y = _numbers(py, len(x), where, f"{field}.ignore_regions_y[{k}]")
        polygons.append(np.stack([x, y], axis=1).reshape(-1, 2))  # (P, 2) x, y
    return tuple(polygons)


def _check_categories(data: dict, where: Path) -> None:
    if "categories" not in data:
        return
    cats = _get(data, "categories", list, where, "root")
    if len(cats) != 1 or not isinstance(cats[0], dict):
        raise _fail(where, "categories", f"expected exactly one category (person), found {len(cats)}")
    names = cats[0].get("keypoints")
    if names is not None and tuple(names) != JOINT_NAMES:
        raise _fail(where, "categories[0].keypoints", f"expected the 17 PoseTrack18 names {list(JOINT_NAMES)}, found {names}")


def read_video(json_path: Path, split: str | None = None) -> Video:
    """Load and validate one PoseTrack-2018 json; `split` defaults to the parent folder's name."""
    json_path = Path(json_path)
    try:
        data = orjson.loads(json_path.read_bytes())
    except OSError as exc:
        raise _fail(json_path, "file", f"cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        try:  # Python's json writes NaN / Infinity, which orjson refuses: parse, then name the field
            data = json.loads(json_path.read_bytes())
        except ValueError:
            raise _fail(json_path, "json", f"malformed or truncated ({exc})") from None
    if not isinstance(data, dict):
        raise _fail(json_path, "root", f"expected an object, found {type(data).__name__}")
    _check_categories(data, json_path)
    images = _get(data, "images", list, json_path, "root")
    annotations = _get(data, "annotations", list, json_path, "root")

    persons_of: dict[int, list[Person]] = {}
    image_keys: list[tuple[int, str, bool, tuple[np.ndarray, ...]]] = []
    sizes, lengths = set(), set()
    for i, image in enumerate(images):
        field = f"images[{i}]"
        if not isinstance(image, dict):
            raise _fail(json_path, field, f"expected an object, found {type(image).__name__}")
        image_id = _get(image, "id", int, json_path, field)
        if image_id in persons_of:
            raise _fail(json_path, f"{field}.id", f"duplicate image id {image_id}")
        persons_of[image_id] = []
        file_name = _get(image, "file_name", str, json_path, field)
        if Path(file_name).is_absolute() or ".." in Path(file_name).parts:  # frames stay inside the dataset folder
            raise _fail(json_path, f"{field}.file_name", f"escapes the dataset folder ({file_name})")
        is_labeled = _get(image, "is_labeled", bool, json_path, field)
        image_keys.append((image_id, file_name, is_labeled, _ignore_regions(image, json_path, field)))
        sizes.add((image.get("height"), image.get("width")))
        lengths.add(image.get("nframes"))
    for a, ann in enumerate(annotations):
        field = f"annotations[{a}]"
        if not isinstance(ann, dict):
            raise _fail(json_path, field, f"expected an object, found {type(ann).__name__}")
        image_id = _get(ann, "image_id", int, json_path, field)
        if image_id not in persons_of:
            raise _fail(json_path, f"{field}.image_id", f"refers to unknown image id {image_id}")
        persons_of[image_id].append(_person(ann, json_path, field))

    numbers, order = _frame_order([name for _, name, _, _ in image_keys], json_path)
    frames = tuple(
        Frame(image_id=iid, frame_index=k, file_name=name, is_labeled=labeled,
              persons=tuple(persons_of[iid]), ignore_regions=regions)
        for k, (iid, name, labeled, regions) in enumerate(image_keys[i] for i in order)
    )
    listed = tuple(sorted(range(len(order)), key=order.__getitem__))  # frame_index of images[0], images[1], ...
    (hw,) = sizes if len(sizes) == 1 else ((None, None),)
    image_hw = (int(hw[0]), int(hw[1])) if all(isinstance(v, int) for v in hw) else None
    (nframes,) = lengths if len(lengths) == 1 else (None,)
    nframes = nframes if isinstance(nframes, int) and nframes != len(frames) else None
    return Video(name=json_path.stem, split=split or json_path.parent.name, json_path=json_path,
                 frames=frames, image_hw=image_hw, nframes=nframes, frame_numbers=numbers,
                 listed_order=None if listed == tuple(range(len(listed))) else listed)


def _frame_order(file_names: list[str], where: Path) -> tuple[tuple[int, ...], list[int]]:
    """The frame numbers in ascending order and the image positions that sort them; refuses a name
    without a number and a number listed twice (neighbouring frames would be ambiguous)."""
    numbers = [frame_number(name) for name in file_names]
    first_of: dict[int, int] = {}
    for i, (name, number) in enumerate(zip(file_names, numbers)):
        if number is None:
            raise _fail(where, f"images[{i}].file_name", f"{name!r} holds no frame number (expected "
                        "<frame>.jpg): the frame order cannot be derived")
        if number in first_of:
            j = first_of[number]
            raise _fail(where, f"images[{i}].file_name", f"{name!r} is frame {number}, as is images[{j}] "
                        f"({file_names[j]!r}): the frame order is ambiguous")
        first_of[number] = i
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    return tuple(numbers[i] for i in order), order


# ---------------------------------------------------------------- writing


def _num(value: float) -> int | float:
    """Integral values as int (compact, like the official files), others as float."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _person_json(person: Person, image_id: int) -> dict:
    kps = np.asarray(person.keypoints, dtype=np.float64).reshape(NUM_JOINTS, 3)  # (17, 3)
    ann: dict[str, Any] = {
        "id": int(person.person_id), "image_id": int(image_id), "track_id": int(person.track_id),
        "category_id": 1, "keypoints": [_num(v) for v in kps.reshape(-1)],
        "num_keypoints": int((kps[:, 2] > 0).sum()), "iscrowd": False,
    }
    if person.bbox_xywh is not None:
        ann["bbox"] = [_num(v) for v in person.bbox_xywh]
    if person.bbox_head_xywh is not None:
        ann["bbox_head"] = [_num(v) for v in person.bbox_head_xywh]
    if person.scores is not None:
        ann["scores"] = [float(s) for s in person.scores]
    return ann


def video_to_json(video: Video) -> dict:
    """The full PoseTrack-2018 structure (images, annotations, categories) of a `Video`."""
    vid_id = video.name.split("_")[0]
    images, annotations = [], []
    listed = video.listed_order if video.listed_order is not None else range(len(video.frames))
    for frame in (video.frames[k] for k in listed):  # the order the json was read in: poseval pairs by position
        image: dict[str, Any] = {
            "id": int(frame.image_id), "file_name": frame.file_name, "frame_id": int(frame.image_id),
            "vid_id": vid_id, "is_labeled": bool(frame.is_labeled), "nframes": video.nframes or len(video.frames),
            "has_no_densepose": True,
            "ignore_regions_x": [[_num(v) for v in poly[:, 0]] for poly in frame.ignore_regions],
            "ignore_regions_y": [[_num(v) for v in poly[:, 1]] for poly in frame.ignore_regions],
        }
        if video.image_hw is not None:
            image["height"], image["width"] = int(video.image_hw[0]), int(video.image_hw[1])
        images.append(image)
        annotations.extend(_person_json(p, frame.image_id) for p in frame.persons)
    category = {
        "supercategory": "person", "id": 1, "name": "person", "keypoints": list(JOINT_NAMES),
        "skeleton": [list(edge) for edge in POSETRACK18_SKELETON_1BASED],
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def write_video(video: Video | dict, json_path: Path) -> None:
    """Write a `Video` (or an already-built json dict) as PoseTrack-2018 json, atomically."""
    data = video_to_json(video) if isinstance(video, Video) else video
    atomic_write_bytes(Path(json_path), orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY))


# ---------------------------------------------------------------- layout


def validate_layout(dataset_dir: Path, max_listed: int = 50) -> None:
    """Raise `PoseTrackFormatError` listing every missing split folder, unreadable json,
    missing image folder and missing frame file of a PoseTrack-layout dataset."""
    dataset_dir = Path(dataset_dir)
    problems: list[str] = []
    if not dataset_dir.is_dir():
        raise _fail(dataset_dir, "layout", "dataset directory does not exist")
    for split in SPLITS:
        ann_dir = dataset_dir / "annotations" / split
        if not ann_dir.is_dir():
            problems.append(f"annotations/{split}/: missing folder")
            continue
        jsons = list_videos(dataset_dir, split)
        if not jsons:
            problems.append(f"annotations/{split}/: no *.json files")
        for json_path in jsons:
            try:
                video = read_video(json_path, split)
            except PoseTrackFormatError as exc:
                problems.append(str(exc))
                continue
            folders = {Path(f.file_name).parent for f in video.frames}
            missing_folders = {d for d in folders if not (dataset_dir / d).is_dir()}
            problems.extend(f"{d}/: image folder referenced by {json_path.name} is missing"
                            for d in sorted(missing_folders))
            problems.extend(
                f"{f.file_name}: frame file referenced by {json_path.name} is missing"
                for f in video.frames
                if Path(f.file_name).parent not in missing_folders and not (dataset_dir / f.file_name).is_file()
            )
    if problems:
        listed = problems[:max_listed] + ([f"... and {len(problems) - max_listed} more"] if len(problems) > max_listed else [])
        raise _fail(dataset_dir, "layout", f"{len(problems)} problem(s):\n  " + "\n  ".join(listed))
