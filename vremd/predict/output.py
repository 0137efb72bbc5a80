"""Predictions of one video as a PoseTrack-2018 json that the official poseval accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vremd.data.posetrack import (
    MAX_TRACK_ID, POSEVAL_FILE_NAME, VIDEO_FOLDER, Frame, Person, Video, image_id_for, write_video,
)


def poseval_video_name(stem: str, video_number: int = 1) -> str:
    """`stem` when it already reads `<digits>_mpii...` (poseval's video folder form), else `000001_mpii_test`."""
    return stem if VIDEO_FOLDER.match(stem) else f"{video_number:06d}_mpii_test"


def default_images(video_name: str, num_frames: int) -> list[dict[str, Any]]:
    """PoseTrack image entries for a video without GT: `images/<video>/<frame:06d>.jpg`, PoseTrack ids."""
    number = int(VIDEO_FOLDER.match(video_name).group(1)) % 1_000_000
    images = []
    for t in range(num_frames):
        # poseval needs frame numbers < 10000; later frames keep unique ids but poseval rejects them
        image_id = image_id_for(number, t) if t < 10_000 else 20_000_000_000 + number * 1_000_000 + t
        images.append({"id": image_id, "file_name": f"images/{video_name}/{t:06d}.jpg", "is_labeled": True})
    return images


def predictions_video(
    video_name: str,
    images: list[dict[str, Any]],
    frame_results: list[dict[str, np.ndarray]],
) -> Video:
    """A `Video` holding one predicted person per box.

    frame_results[t] has "joints_xy" (P, J, 2) image pixels, "scores" (P, J), "track_ids" (P,),
    "boxes_xywh" (P, 4); `images[t]` gives frame t's id and file name (mirrors the GT when known).
    """
    frames, next_person = [], 0
    for t, (image, res) in enumerate(zip(images, frame_results)):
        persons = []
        for p in range(len(res["track_ids"])):
            J = res["joints_xy"].shape[1]
            keypoints = np.concatenate([res["joints_xy"][p], np.ones((J, 1))], axis=1)  # (J, 3): x, y, 1
            persons.append(Person(
                track_id=int(res["track_ids"][p]) % MAX_TRACK_ID, person_id=next_person,
                keypoints=keypoints, bbox_xywh=tuple(float(v) for v in res["boxes_xywh"][p]),
                bbox_head_xywh=None, scores=tuple(float(s) for s in res["scores"][p]),
            ))
            next_person += 1
        frames.append(Frame(
            image_id=int(image["id"]), frame_index=t, file_name=str(image["file_name"]),
            is_labeled=bool(image.get("is_labeled", True)), persons=tuple(persons), ignore_regions=(),
        ))
    return Video(name=video_name, split="pred", json_path=Path(f"{video_name}.json"), frames=tuple(frames))


def write_predictions_json(video: Video, json_path: Path) -> list[str]:
    """Write atomically; return warnings (file names poseval would reject)."""
    write_video(video, json_path)
    bad = [f.file_name for f in video.frames if not POSEVAL_FILE_NAME.search(f.file_name)]
    return [f"{len(bad)} file names poseval will not accept, e.g. {bad[0]!r}"] if bad else []
