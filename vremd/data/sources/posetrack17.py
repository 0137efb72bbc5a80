"""Convert PoseTrack2017 (`annolist` json, 15 joints) to the PoseTrack-2018 layout the pipeline reads.

PoseTrack2017 ships one json per video under `annotations/{train,val}/`, converted from Matlab:
most values are wrapped in one-element lists. Each `annolist` entry is one frame:
`image: [{name: "images/bonn_5sec/000342_mpii/00000001.jpg"}]`, `imgnum`, `is_labeled`,
optional `ignore_regions: [{point: [{x: [..], y: [..]}, ...]}]`, and `annorect`, one per person,
with the head rectangle `x1, y1, x2, y2`, `track_id` and
`annopoints: [{point: [{id: [k], x: [..], y: [..], is_visible: [..]}, ...]}]` where k is a
poseval joint id (0 right_ankle ... 14 head_top).

The output is the 2018 layout: `images/<split>/<digits>_<kind>_<train|test>/<frame:06d>.jpg` and
`annotations/<split>/<video>.json` with 17 COCO-order keypoints (ears left at (0, 0, 0)),
`bbox_head` from the head rectangle and `bbox` from the keypoints' extent, enlarged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from vremd.data.sources.archives import link_or_copy
from vremd.data.joints import JOINT_NAMES, NUM_JOINTS
from vremd.data.posetrack import (
    POSETRACK18_SKELETON_1BASED, SPLITS, VIDEO_FOLDER, PoseTrackFormatError, image_id_for, write_video,
)

# poseval joint ids of PoseTrack2017, in id order
POSEVAL_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)
# POSEVAL_TO_SLOT[k]: the 17-slot COCO-order index of poseval joint id k (mapped by name)
POSEVAL_TO_SLOT: tuple[int, ...] = tuple(JOINT_NAMES.index(name) for name in POSEVAL_NAMES)
BOX_ENLARGE = 1.3  # keypoints' extent -> person box: 30% larger about its centre
SPLIT_SUFFIX = {"train": "train", "val": "test"}  # 2018 video-name suffix per split


def _one(value: Any, where: str) -> Any:
    """Unwrap the one-element lists of the .mat-derived json (plain scalars pass through)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise PoseTrackFormatError(f"{where}: expected one value, found {len(value)}")
        return value[0]
    return value


def _list(value: Any) -> list:
    """A json list; the Matlab conversion sometimes stores a one-element list as the element itself."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _req(obj: Any, key: str, where: str) -> Any:
    """`obj[key]`, or a PoseTrackFormatError naming the place when it is missing."""
    if not isinstance(obj, dict) or key not in obj:
        raise PoseTrackFormatError(f"{where}: {key}: missing")
    return obj[key]


def _number(value: Any, where: str) -> float:
    try:
        return float(_one(value, where))
    except (TypeError, ValueError):
        raise PoseTrackFormatError(f"{where}: expected a number, found {value!r}") from None


_FRAME_FILE = re.compile(r"^(\d+)(?:_[^/]*)?\.jpg$")


def _frame_number(path: Path) -> int:
    """00000012.jpg or 00000012_xyz.jpg -> 12."""
    return int(_FRAME_FILE.match(path.name).group(1))


def _keypoints(rect: dict, where: str) -> list[float]:
    """The person's 17x3 keypoints (flat x, y, v list) from its poseval-id points."""
    keypoints = [0.0] * (3 * NUM_JOINTS)
    annopoints = _list(rect.get("annopoints"))
    points = _list(annopoints[0].get("point")) if annopoints else []
    for p, point in enumerate(points):
        at = f"{where}: point {p}"
        joint = int(_number(_req(point, "id", at), f"{at}: id"))
        if not 0 <= joint < len(POSEVAL_NAMES):
            raise PoseTrackFormatError(f"{at}: id {joint} is not a PoseTrack2017 joint id (0..14)")
        visible = int(_number(point.get("is_visible", 1), f"{at}: is_visible"))
        slot = POSEVAL_TO_SLOT[joint]
        keypoints[3 * slot: 3 * slot + 3] = [_number(_req(point, "x", at), f"{at}: x"),
                                               _number(_req(point, "y", at), f"{at}: y"), float(visible)]
    return keypoints


def _person_box(keypoints: list[float], head_xyxy: tuple[float, ...] | None,
                size_wh: tuple[int, int]) -> list[float] | None:
    """x, y, w, h around the present keypoints (and head box), enlarged by BOX_ENLARGE, clipped to the image."""
    present = [j for j in range(NUM_JOINTS) if any(keypoints[3 * j: 3 * j + 3])]
    xs = [keypoints[3 * j] for j in present] + ([head_xyxy[0], head_xyxy[2]] if head_xyxy else [])
    ys = [keypoints[3 * j + 1] for j in present] + ([head_xyxy[1], head_xyxy[3]] if head_xyxy else [])
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half_w, half_h = (max(xs) - min(xs)) * BOX_ENLARGE / 2, (max(ys) - min(ys)) * BOX_ENLARGE / 2
    x1, y1 = max(0.0, cx - half_w), max(0.0, cy - half_h)
    x2, y2 = min(float(size_wh[0]), cx + half_w), min(float(size_wh[1]), cy + half_h)
    return [x1, y1, x2 - x1, y2 - y1] if x2 - x1 >= 1 and y2 - y1 >= 1 else None


def _annotation(rect: dict, image_id: int, index: int, size_wh: tuple[int, int], where: str) -> dict | None:
    """One 2018 `annotations` entry from a 2017 `annorect`, or None for a person without keypoints."""
    keypoints = _keypoints(rect, where)
    num = sum(1 for j in range(NUM_JOINTS) if any(keypoints[3 * j: 3 * j + 3]))
    if num == 0:
        return None
    head = None
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        x1, y1, x2, y2 = (_number(rect[k], f"{where}: {k}") for k in ("x1", "y1", "x2", "y2"))
        head = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    ann = {"id": image_id * 100 + index, "image_id": image_id, "category_id": 1,
           "track_id": int(_number(rect.get("track_id", index), f"{where}: track_id")),
           "keypoints": keypoints, "num_keypoints": num, "scores": [], "iscrowd": False}
    box = _person_box(keypoints, head, size_wh)
    if box is not None:
        ann["bbox"] = box
    if head is not None and head[2] > head[0] and head[3] > head[1]:
        ann["bbox_head"] = [head[0], head[1], head[2] - head[0], head[3] - head[1]]
    return ann


def _ignore_regions(entry: dict, where: str) -> tuple[list[list[float]], list[list[float]]]:
    regions_x, regions_y = [], []
    for r, region in enumerate(_list(entry.get("ignore_regions"))):
        at = f"{where}: ignore_regions[{r}]"
        points = _list(_req(region, "point", at))
        regions_x.append([_number(_req(p, "x", at), f"{at}: x") for p in points])
        regions_y.append([_number(_req(p, "y", at), f"{at}: y") for p in points])
    return regions_x, regions_y


def _locate(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        if (root / name).is_file():
            return root / name
    return None


def convert_video(json_path: Path, split: str, roots: list[Path]) -> tuple[str, dict, list[Path]]:
    """One 2017 video json -> (2018 video name, 2018 json dict, source image per frame, in order).

    Every jpg in the video's image folder becomes a frame (sorted by number; 2017 annotates only
    some of them), so the neighbouring frames the model needs are kept. Image names are looked
    up under each of `roots` (the folders holding `images/...` as named in the json).
    """
    try:
        data = json.loads(Path(json_path).read_text())
    except ValueError as exc:
        raise PoseTrackFormatError(f"{json_path}: json: malformed or truncated ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annolist"), list) or not data["annolist"]:
        raise PoseTrackFormatError(f"{json_path}: annolist: expected a non-empty list of frames")
    entries: dict[str, tuple[int, dict]] = {}
    for i, entry in enumerate(data["annolist"]):
        at = f"{json_path}: annolist[{i}]"
        name = str(_req(_one(_req(entry, "image", at), f"{at}: image"), "name", f"{at}: image"))
        entries[name] = (i, entry)
    first = next(iter(entries))
    match = VIDEO_FOLDER.match(Path(first).parent.name)
    if match is None:
        raise PoseTrackFormatError(f"{json_path}: annolist[0]: image folder {Path(first).parent.name!r} "
                                   "is not a PoseTrack video folder like 000342_mpii")
    digits, kind = match.groups()
    video = f"{digits}_{kind}_{SPLIT_SUFFIX[split]}"
    found = _locate(first, roots)
    if found is None:
        raise PoseTrackFormatError(f"{json_path}: annolist[0]: image {first} not found under "
                                   f"{', '.join(map(str, roots))}")
    sources = sorted((p for p in found.parent.glob("*.jpg") if _FRAME_FILE.match(p.name)), key=_frame_number)
    if len(sources) >= 10000:
        raise PoseTrackFormatError(f"{json_path}: {len(sources)} frames, poseval allows at most 9999")
    on_disk = set(sources)
    missing = [n for n in entries if (found.parent / Path(n).name) not in on_disk]
    if missing:
        raise PoseTrackFormatError(f"{json_path}: {len(missing)} annotated images missing, e.g. {missing[0]}")
    with Image.open(found) as im:
        size_wh = im.size
    by_file = {found.parent / Path(n).name: e for n, e in entries.items()}
    images, annotations = [], []
    for index, src in enumerate(sources):
        image_id = image_id_for(int(digits), index)
        i, entry = by_file.get(src, (-1, {}))
        where = f"{json_path}: annolist[{i}]"
        rects = _list(entry.get("annorect"))
        labeled = bool(_number(entry.get("is_labeled", 1 if rects else 0), f"{where}: is_labeled"))
        image = {"file_name": f"images/{split}/{video}/{index:06d}.jpg", "id": image_id, "frame_id": image_id,
                 "vid_id": digits, "nframes": len(sources), "is_labeled": labeled, "has_no_densepose": True,
                 "width": size_wh[0], "height": size_wh[1]}
        regions_x, regions_y = _ignore_regions(entry, where)
        if regions_x:
            image["ignore_regions_x"], image["ignore_regions_y"] = regions_x, regions_y
        images.append(image)
        for p, rect in enumerate(rects):
            ann = _annotation(rect, image_id, p, size_wh, f"{where}: annorect[{p}]")
            if ann is not None:
                annotations.append(ann)
    categories = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(JOINT_NAMES),
                   "skeleton": [list(edge) for edge in POSETRACK18_SKELETON_1BASED]}]
    return video, {"images": images, "annotations": annotations, "categories": categories}, sources


def find_annotation_files(roots: list[Path]) -> dict[str, list[Path]]:
    """`{split: [json, ...]}` for every `annotations/{train,val}/*.json` under the roots (test has no GT)."""
    found: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for root in roots:
        for split in SPLITS:
            found[split] += sorted((root / "annotations" / split).glob("*.json"))
    return found


def convert_posetrack17(roots: list[Path], dest: Path, progress: bool = True) -> dict[str, int]:
    """Write the 2018 layout of every PoseTrack2017 video found under `roots` into `dest`.

    `roots` are the folders holding `annotations/` and `images/` (the extracted
    `posetrack_data/`); images may sit under a different root than the annotations. Returns
    the number of videos written per split.
    """
    files = find_annotation_files(roots)
    if not any(files.values()):
        raise PoseTrackFormatError(f"{', '.join(map(str, roots))}: no annotations/{{train,val}}/*.json "
                                   "PoseTrack2017 files found")
    counts = {}
    for split, paths in files.items():
        for path in tqdm(paths, desc=f"convert posetrack17 {split}", unit="video", disable=not progress):
            video, data, sources = convert_video(path, split, roots)
            frame_dir = dest / "images" / split / video
            frame_dir.mkdir(parents=True, exist_ok=True)
            for index, src in enumerate(sources):
                link_or_copy(src, frame_dir / f"{index:06d}.jpg")
            (dest / "annotations" / split).mkdir(parents=True, exist_ok=True)
            write_video(data, dest / "annotations" / split / f"{video}.json")
        counts[split] = len(paths)
    return counts
