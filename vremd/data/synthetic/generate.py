"""Seeded synthetic PoseTrack-2018 dataset: videos of articulated people on textured, panning
backgrounds with occluders, crowds (ignore regions), blur and people entering and leaving.

Every video draws its randomness from `np.random.default_rng([seed, split, index])`, so videos
are independent of each other and the same config writes byte-identical json and JPEGs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vremd.config import SyntheticConfig
from vremd.data.synthetic import body as fg
from vremd.data.synthetic import render
from vremd.data.synthetic.body import FigureMotion
from vremd.atomic import atomic_write_bytes, replace_dir, temp_dir_beside
from vremd.data.posetrack import Frame, Person, Video, image_id_for, write_video

SPLIT_CODES = {"train": 0, "val": 1}
MIN_JOINTS_IN_IMAGE = 4  # fewer joints inside the image: the person is not annotated in that frame
MIN_VISIBLE_JOINTS = 2  # fewer visible joints (hidden behind others): not annotated either, as in PoseTrack
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Scene:
    """One video's people and props, in world pixels (image = world - camera pan)."""

    figures: tuple[FigureMotion, ...]
    clothes: tuple[tuple[bool, bool], ...]  # (long_sleeves, shorts) per figure
    textures: tuple[np.ndarray, ...]  # (NUM_MATERIALS, TEX, TEX, 3) per figure
    background: np.ndarray  # (H, W + pan range, 3) uint8
    pan_x: np.ndarray  # (T,) camera x offset into the background, integer pixels
    crowd_polygon: np.ndarray | None  # (8, 2) in background pixels
    occluders: tuple[tuple[np.ndarray, np.ndarray, int], ...]  # (box_xyxy (T, 4), colour (3,), kind)
    labeled: np.ndarray  # (T,) bool
    blur: tuple[tuple[str, float], ...]  # per frame ("none" | "motion" | "defocus", strength)
    gain: np.ndarray  # (T,) global brightness


def video_name(split: str, index: int, cfg: SyntheticConfig) -> tuple[str, int]:
    """Folder name poseval accepts ("000001_mpii_train", "000101_mpii_test") and the video number."""
    if split == "train":
        number = index + 1
        return f"{number:06d}_mpii_train", number
    number = max(100, cfg.train_videos) + index + 1
    return f"{number:06d}_mpii_test", number


def _blur_schedule(rng: np.random.Generator, T: int) -> tuple[tuple[str, float], ...]:
    blur = [("none", 0.0)] * T
    for _ in range(int(rng.integers(0, 3))):  # short bursts, as real camera shake / refocus
        kind = str(rng.choice(["motion", "defocus"]))
        start, length = int(rng.integers(0, T)), int(rng.integers(2, 6))
        strength = float(rng.uniform(5, 11) if kind == "motion" else rng.uniform(1.0, 2.5))
        for t in range(start, min(start + length, T)):
            blur[t] = (kind, strength)
    return tuple(blur)


def build_scene(rng: np.random.Generator, T: int, cfg: SyntheticConfig) -> Scene:
    """Sample everything a video shows: people with roles, background, crowd, occluders, blur."""
    H, W = cfg.image_height, cfg.image_width
    pan_speed = rng.uniform(-0.004, 0.004) * W if rng.random() < 0.6 else 0.0
    pan = pan_speed * np.arange(T) + fg.smooth_noise(rng, np.arange(T, dtype=np.float64), 0.01 * W)
    pan = np.round(pan - pan.min()).astype(int)
    background = render.make_background(rng, H, W + int(pan.max()) + 1)
    crowd = None
    if rng.random() < 0.3:
        cw, ch = rng.uniform(0.2, 0.4) * W, rng.uniform(0.12, 0.2) * H
        cx0, cy0 = rng.uniform(0, background.shape[1] - cw), rng.uniform(0.15, 0.4) * H
        crowd = render.draw_crowd(rng, background, (int(cx0), int(cy0), int(cx0 + cw), int(cy0 + ch)))
    n_people = int(rng.integers(1, cfg.max_people + 1))
    roles = ["main"] + [str(rng.choice(["main", "crosser", "edge"], p=(0.4, 0.35, 0.25))) for _ in range(n_people - 1)]
    figures = tuple(fg.sample_figure(rng, T, (H, W), role) for role in roles)
    figures = tuple(
        FigureMotion(**{**f.__dict__, "joints_xy": f.joints_xy + np.array([pan[0], 0.0])}) for f in figures
    )  # people live in background coordinates: the camera pan moves them with the scene
    occluders = []
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.5 else 0):
        kind = int(rng.integers(3))
        w = rng.uniform(0.03, 0.08) * W if kind == 1 else rng.uniform(0.12, 0.25) * W
        h = rng.uniform(0.6, 1.0) * H if kind == 1 else rng.uniform(0.15, 0.35) * H
        x = rng.uniform(0, background.shape[1] - w) + rng.uniform(-0.3, 0.3) * W * np.arange(T) / T
        y = rng.uniform(0.3, 1.0) * H - h / 2
        box = np.stack([x, np.full(T, y), x + w, np.full(T, y + h)], axis=1)  # (T, 4) world xyxy
        occluders.append((box, rng.uniform(20, 235, 3), kind))
    labeled = rng.random(T) >= cfg.unlabeled_fraction
    labeled[T // 2] = True  # every video has labels
    return Scene(
        figures=figures, clothes=tuple((bool(rng.random() < 0.4), bool(rng.random() < 0.3)) for _ in figures),
        textures=tuple(render.make_textures(rng) for _ in figures), background=background, pan_x=pan,
        crowd_polygon=crowd, occluders=tuple(occluders), labeled=labeled, blur=_blur_schedule(rng, T),
        gain=1.0 + fg.smooth_noise(rng, np.arange(T, dtype=np.float64), 0.12),
    )


def image_joints(scene: Scene, t: int) -> np.ndarray:
    """Joints of every figure in frame t in image pixels: (P, 17, 2)."""
    return np.stack([f.joints_xy[t] for f in scene.figures]) - np.array([scene.pan_x[t], 0.0])


def render_frame(scene: Scene, t: int, cfg: SyntheticConfig, grain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t as (image (H, W, 3) uint8 BGR, owner (H, W) uint8: 0 background, p+1 figure p, 255 object)."""
    H, W = cfg.image_height, cfg.image_width
    img = np.ascontiguousarray(scene.background[:, scene.pan_x[t]:scene.pan_x[t] + W])
    owner = np.zeros((H, W), np.uint8)
    shift = np.array([scene.pan_x[t], 0.0])
    order = np.argsort([f.height_px[t] for f in scene.figures], kind="stable")  # far (short) first
    for p in order:
        f = scene.figures[p]
        moved = FigureMotion(**{**f.__dict__, "joints_xy": f.joints_xy[t:t + 1] - shift,
                                "height_px": f.height_px[t:t + 1], "lateral": f.lateral[t:t + 1],
                                "turn": f.turn[t:t + 1], "head_angle_rad": f.head_angle_rad[t:t + 1]})
        render.paint_figure(img, owner, moved, 0, scene.textures[p], int(p) + 1, *scene.clothes[p])
    for box, color, kind in scene.occluders:
        render.paint_occluder(img, owner, box[t] - np.r_[shift, shift], color, kind)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)  # soften aliased edges, as a lens would
    kind, strength = scene.blur[t]
    if kind == "motion":
        img = render.motion_blur(img, int(strength), float(np.pi * (t % 4) / 4))
    elif kind == "defocus":
        img = cv2.GaussianBlur(img, (0, 0), strength)
    img = cv2.convertScaleAbs(img, alpha=float(scene.gain[t]))
    oy, ox = t % 7, (3 * t) % 11
    noise = grain[:, oy:oy + H, ox:ox + W]  # (2, H, W, 3) added / subtracted grain
    return cv2.subtract(cv2.add(img, noise[0]), noise[1]), owner


def annotate_frame(scene: Scene, t: int, owner: np.ndarray, image_id: int) -> tuple[Person, ...]:
    """The GT persons of frame t: (x, y, 1) visible, (x, y, 0) hidden by someone/something, (0, 0, 0)
    outside the image; box from the in-image joints plus head; head box around the head ellipse."""
    H, W = owner.shape
    persons = []
    for p, joints in enumerate(image_joints(scene, t)):  # joints (17, 2)
        inside = (joints[:, 0] >= 0) & (joints[:, 0] <= W - 1) & (joints[:, 1] >= 0) & (joints[:, 1] <= H - 1)
        if inside.sum() < MIN_JOINTS_IN_IMAGE:
            continue
        f = scene.figures[p]
        px = np.round(joints[inside]).astype(int)
        seen_by = owner[px[:, 1], px[:, 0]]
        visible = np.zeros(17, bool)
        visible[inside] = (seen_by == 0) | (seen_by == p + 1)
        if f.lateral[t] <= 0:
            visible[fg.NOSE] = False  # the face is turned away: the nose is hidden by the head
        if visible.sum() < MIN_VISIBLE_JOINTS:
            continue
        kps = np.zeros((17, 3))
        kps[inside, :2] = np.round(joints[inside], 2)
        kps[inside, 2] = visible[inside]
        persons.append(Person(track_id=p, person_id=image_id * 100 + len(persons), keypoints=kps,
                              bbox_xywh=_person_box(joints[inside], f, t, W, H),
                              bbox_head_xywh=_head_box(joints, f, t)))
    return tuple(persons)


def _head_box(joints: np.ndarray, f: FigureMotion, t: int) -> tuple[float, float, float, float]:
    rv = 0.5 * f.shape.head * f.height_px[t]
    ru, a = 0.78 * rv, f.head_angle_rad[t]
    ex, ey = np.hypot(ru * np.cos(a), rv * np.sin(a)), np.hypot(ru * np.sin(a), rv * np.cos(a))
    cx, cy = (joints[fg.HEAD_TOP] + joints[fg.HEAD_BOTTOM]) / 2
    return (round(cx - ex, 2), round(cy - ey, 2), round(2 * ex, 2), round(2 * ey, 2))


def _person_box(joints_in: np.ndarray, f: FigureMotion, t: int, W: int, H: int) -> tuple[float, float, float, float]:
    pad = 0.07 * f.height_px[t]
    x0, y0 = joints_in.min(0) - pad
    x1, y1 = joints_in.max(0) + pad
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, W - 1.0), min(y1, H - 1.0)
    return (round(x0, 2), round(y0, 2), round(max(x1 - x0, 1.0), 2), round(max(y1 - y0, 1.0), 2))


def render_video(cfg: SyntheticConfig, split: str, index: int) -> tuple[Video, list[np.ndarray], Scene, list[np.ndarray]]:
    """One synthetic video in memory: (Video annotations, BGR frames, the scene, owner maps)."""
    rng = np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])
    name, number = video_name(split, index, cfg)
    T = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    scene = build_scene(rng, T, cfg)
    H, W = cfg.image_height, cfg.image_width
    grain = rng.integers(0, 7, size=(2, H + 7, W + 11, 3), dtype=np.uint8)  # reused per frame, shifted
    frames, images, owners = [], [], []
    for t in range(T):
        image, owner = render_frame(scene, t, cfg, grain)
        image_id = image_id_for(number, t)
        persons = annotate_frame(scene, t, owner, image_id) if scene.labeled[t] else ()
        regions = ()
        if scene.crowd_polygon is not None:
            regions = (scene.crowd_polygon - np.array([scene.pan_x[t], 0.0]),)
        frames.append(Frame(image_id=image_id, frame_index=t, file_name=f"images/{split}/{name}/{t:06d}.jpg",
                            is_labeled=bool(scene.labeled[t]), persons=persons, ignore_regions=regions))
        images.append(image)
        owners.append(owner)
    video = Video(name=name, split=split, json_path=Path("annotations") / split / f"{name}.json",
                  frames=tuple(frames), image_hw=(H, W))
    return video, images, scene, owners


def generate_dataset(out_dir: Path, cfg: SyntheticConfig, progress: bool = True) -> dict:
    """Write the PoseTrack-layout dataset to `out_dir` (replaced as a whole at the end) and return counts.

    `cfg`'s sizes are in the ranges `vremd.config.SyntheticConfig` declares (the config builder checks them)."""
    out_dir = Path(out_dir)
    staging = temp_dir_beside(out_dir)  # a failed run's leftover: prepare_synthetic removes it
    jobs = [("train", i) for i in range(cfg.train_videos)] + [("val", i) for i in range(cfg.val_videos)]
    counts = {"videos": {"train": 0, "val": 0}, "frames": 0, "labeled_frames": 0, "persons": 0,
              "visible_joints": 0, "occluded_joints": 0}
    start = time.perf_counter()
    for split, index in tqdm(jobs, desc="synthetic videos", unit="video", disable=not progress):
        video, images, _, _ = render_video(cfg, split, index)
        for frame, image in zip(video.frames, images):
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"{frame.file_name}: JPEG encoding failed")
            atomic_write_bytes(staging / frame.file_name, jpeg.tobytes())
            counts["persons"] += len(frame.persons)
            for person in frame.persons:
                counts["visible_joints"] += int((person.keypoints[:, 2] > 0).sum())
                counts["occluded_joints"] += int(((person.keypoints[:, 2] == 0) & (person.keypoints[:, 0] != 0)).sum())
        write_video(video, staging / video.json_path)
        counts["videos"][split] += 1
        counts["frames"] += len(video.frames)
        counts["labeled_frames"] += sum(f.is_labeled for f in video.frames)
    replace_dir(staging, out_dir)
    seconds = time.perf_counter() - start
    return {**counts, "seconds": round(seconds, 3), "frames_per_s": round(counts["frames"] / max(seconds, 1e-9), 1)}
