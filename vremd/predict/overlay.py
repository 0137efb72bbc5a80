"""Overlay drawing: skeletons coloured by track, joints sized and shaded by confidence; video writing."""

from __future__ import annotations

import colorsys
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from vremd.atomic import atomic_path, temp_dir_beside
from vremd.data.draw import draw_box, draw_pose, write_image


def track_colour_bgr(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per track id (golden-ratio hue steps)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_person(
    image_bgr: np.ndarray, joints_xy: np.ndarray, scores: np.ndarray, track_id: int,
    box_xywh: np.ndarray | None = None, min_score: float = 0.2,
) -> np.ndarray:
    """A copy of the image with one person drawn: (J, 2) joints, (J,) scores; track colour, box, label.

    Confident joints (score >= `min_score`) get the skeleton (vremd.data.draw.draw_pose) and a dot whose
    size grows with the score; the others a small hollow ring, so weak joints stay visible but distinct.
    """
    colour = track_colour_bgr(track_id)
    scale = max(1, round(max(image_bgr.shape[:2]) / 400))
    confident = np.asarray(scores) >= min_score
    out = draw_pose(image_bgr, joints_xy, confident, colour, thickness=scale)
    for (x, y), s, ok in zip(joints_xy, scores, confident):
        centre = (int(round(x)), int(round(y)))
        if ok:  # confidence -> dot size
            cv2.circle(out, centre, scale + int(round(2 * scale * min(float(s), 1.0))), colour, -1, cv2.LINE_AA)
        else:
            cv2.circle(out, centre, scale + 1, colour, 1, cv2.LINE_AA)
    if box_xywh is not None:
        label = f"#{track_id} {float(np.mean(scores)):.2f}"  # track id and mean joint confidence
        out = draw_box(out, box_xywh, colour, label)
    return out


def draw_frame(image_bgr: np.ndarray, result: dict[str, np.ndarray], min_score: float = 0.2) -> np.ndarray:
    """A copy of the frame with every predicted person of a runner frame result drawn."""
    out = image_bgr
    for p in range(len(result["track_ids"])):
        out = draw_person(out, result["joints_xy"][p], result["scores"][p], int(result["track_ids"][p]),
                          result["boxes_xywh"][p], min_score)
    return out.copy() if out is image_bgr else out


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def count_frames(path: Path) -> int:
    """Frames OpenCV can read back from a video file (0 when it cannot open it)."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while cap.isOpened() and cap.grab():
            n += 1
        return n
    finally:
        cap.release()


class OverlayWriter:
    """Writes overlay frames to an mp4/avi (cv2.VideoWriter) or, for a folder path, to numbered JPEGs.

    A context manager. Frames go to a temporary video (or a hidden staging folder) beside the target, and
    only a block that ends without error puts them in place: the video once it reads back with every frame
    written, the JPEGs moved into the folder. Otherwise nothing is left; failures raise OSError naming the path.
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self.as_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None
        self._stack = ExitStack()
        self._tmp = self.path

    def __enter__(self) -> OverlayWriter:
        if self.as_video:
            self._tmp = self._stack.enter_context(atomic_path(self.path, self.path.suffix, check_written=True))
        else:
            self._tmp = temp_dir_beside(self.path)  # mode 0777 less the umask, as a plain mkdir
            self._stack.callback(shutil.rmtree, self._tmp, ignore_errors=True)
        return self

    def write(self, image_bgr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame."""
        if not self.as_video:
            try:
                write_image(self._tmp / f"{self.frames_written:06d}.jpg", image_bgr)
            except OSError as exc:  # it names the staging folder, which is removed
                raise OSError(f"{self.path}: overlay frame {self.frames_written}: {exc.strerror or exc}") from exc
        else:
            if self._writer is None:
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() != ".avi" else "MJPG"))
                h, w = image_bgr.shape[:2]
                self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
                if not self._writer.isOpened():
                    raise OSError(f"{self.path}: OpenCV cannot open a video writer (a file type it cannot "
                                  "write, or a full disk?)")
            if self._writer.write(image_bgr) is False:  # OpenCV 5 says so (4.x returns None: checked on exit)
                raise OSError(f"{self.path}: OpenCV could not write overlay frame {self.frames_written} "
                              "(disk full?)")
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        """Release the video; after a clean block check it and put the overlay in place, else remove it."""
        with self._stack:  # the temporary video or staging folder: renamed into place only if nothing raises
            if self._writer is not None:
                self._writer.release()
                self._writer = None
            if exc is not None:
                raise exc
            if self.as_video and (found := count_frames(self._tmp)) != self.frames_written:
                raise OSError(f"{self.path}: the overlay video reads back {found} of the {self.frames_written} "
                              "frames written (disk full?)")
            if not self.as_video:
                self.path.mkdir(exist_ok=True)
                for file in sorted(self._tmp.iterdir()):
                    os.replace(file, self.path / file.name)
