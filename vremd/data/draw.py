"""Drawing skeletons and boxes on BGR images (overlays, contact sheets, prediction videos); writing images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from vremd.atomic import atomic_write_bytes
from vremd.data.joints import NUM_JOINTS, SKELETON
from vremd.data.posetrack import read_video
from vremd.errors import InputError


def write_image(path: str | Path, image_bgr: np.ndarray, params: Sequence[int] = ()) -> Path:
    """Encode a (H, W, 3) uint8 BGR image in the format of `path`'s extension and write it atomically; returns
    `path`. OSError naming `path` when OpenCV cannot encode it (cv2.imwrite would only return False)."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix, image_bgr, list(params))
    except cv2.error:  # an extension OpenCV has no encoder for
        ok = False
    if not ok:
        raise OSError(f"{path}: OpenCV cannot encode the image as {path.suffix or 'a file without extension'}")
    return atomic_write_bytes(path, data.tobytes())


def draw_pose(image_bgr: np.ndarray, joints_xy: np.ndarray, visible: np.ndarray,
              color: tuple[int, int, int], thickness: int = 2) -> np.ndarray:
    """A copy of `image_bgr` with the skeleton drawn: bones between visible joints, dots on joints.

    Args:
        joints_xy: (17, 2) image pixels (x, y).
        visible: (17,) > 0 where the joint should be drawn (a GT v flag or a score above threshold).
        color: BGR bone colour; joints get a white rim so they stand out on any background.
    """
    joints_xy = np.asarray(joints_xy, dtype=np.float64).reshape(NUM_JOINTS, 2)
    visible = np.asarray(visible).reshape(NUM_JOINTS) > 0
    out = image_bgr.copy()
    pts = np.round(joints_xy).astype(int)
    for a, b in SKELETON:
        if visible[a] and visible[b]:
            cv2.line(out, tuple(pts[a]), tuple(pts[b]), color, thickness, cv2.LINE_AA)
    for j in np.flatnonzero(visible):
        cv2.circle(out, tuple(pts[j]), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, tuple(pts[j]), thickness, color, -1, cv2.LINE_AA)
    return out


def draw_box(image_bgr: np.ndarray, box_xywh: tuple[float, float, float, float], color: tuple[int, int, int],
             label: str | None = None, thickness: int = 1) -> np.ndarray:
    """A copy of `image_bgr` with an (x, y, w, h) box and an optional text label above it."""
    out = image_bgr.copy()
    x, y, w, h = (int(round(v)) for v in box_xywh)
    cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness, cv2.LINE_AA)
    if label:
        cv2.putText(out, label, (x + 1, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return out


def contact_sheet(dataset_dir: Path, json_paths: Iterable[Path], frames_per_video: int = 2, columns: int = 4) -> np.ndarray:
    """A grid image of annotated frames: per video, the labeled frame with the most occluded joints
    and the middle labeled frame, with GT skeletons (track colours), person boxes and head boxes."""
    palette = [(0, 255, 0), (0, 200, 255), (255, 120, 0), (255, 0, 255), (0, 255, 255), (120, 120, 255)]
    tiles = []
    for json_path in json_paths:
        video = read_video(Path(json_path))
        labeled = [f for f in video.frames if f.persons]
        if not labeled:
            continue
        hidden = [int(sum(((p.keypoints[:, 2] == 0) & (p.keypoints[:, 0] != 0)).sum() for p in f.persons)) for f in labeled]
        picks = [labeled[int(np.argmax(hidden))], labeled[len(labeled) // 2]][:frames_per_video]
        for frame in picks:
            tile = cv2.imread(str(Path(dataset_dir) / frame.file_name), cv2.IMREAD_COLOR)
            if tile is None:
                raise FileNotFoundError(f"{Path(dataset_dir) / frame.file_name}: cannot read frame")
            for region in frame.ignore_regions:
                cv2.polylines(tile, [np.round(region).astype(np.int32)], True, (0, 0, 255), 1, cv2.LINE_AA)
            for person in frame.persons:
                color = palette[person.track_id % len(palette)]
                kps = person.keypoints
                tile = draw_pose(tile, kps[:, :2], kps[:, 2], color, thickness=1)
                hidden_j = (kps[:, 2] == 0) & (kps[:, 0] != 0)
                for x, y in kps[hidden_j, :2]:  # occluded joints: hollow red rings
                    cv2.circle(tile, (int(round(x)), int(round(y))), 3, (0, 0, 255), 1, cv2.LINE_AA)
                tile = draw_box(tile, person.bbox_xywh, color, f"id {person.track_id}")
                tile = draw_box(tile, person.bbox_head_xywh, (255, 255, 255))
            cv2.putText(tile, f"{video.name} f{frame.frame_index}", (4, tile.shape[0] - 6),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
    if not tiles:
        raise InputError("contact sheet: no labeled frames in the given videos")
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[r:r + columns]) for r in range(0, len(tiles), columns)])
