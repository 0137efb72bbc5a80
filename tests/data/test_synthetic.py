"""Synthetic dataset: deterministic bytes, poseval-valid PoseTrack-2018 layout, honest visibility
flags, smooth motion, and a contact sheet that renders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from vremd.config import SyntheticConfig
from vremd.data.synthetic import body as fg
from vremd.data.draw import contact_sheet, draw_pose
from vremd.data.joints import JOINT_NAMES
from vremd.data.posetrack import POSEVAL_FILE_NAME, list_videos, read_video, validate_layout
from vremd.data.synthetic.generate import generate_dataset, image_joints, render_video

CFG = SyntheticConfig(seed=3, train_videos=3, val_videos=2, min_frames=8, max_frames=12,
                      image_height=120, image_width=160, max_people=4, unlabeled_fraction=0.25)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synthetic"
    summary = generate_dataset(out, CFG, progress=False)
    assert summary["videos"] == {"train": 3, "val": 2}
    assert summary["frames"] == len(list(out.rglob("*.jpg")))
    assert summary["occluded_joints"] > 0 and summary["visible_joints"] > summary["occluded_joints"]
    return out


def test_same_seed_is_byte_identical_and_videos_independent(dataset, tmp_path):
    generate_dataset(tmp_path / "again", CFG, progress=False)
    first, again = tree_bytes(dataset), tree_bytes(tmp_path / "again")
    assert first.keys() == again.keys() and first == again
    generate_dataset(tmp_path / "other", dataclasses.replace(CFG, seed=4), progress=False)
    other = tree_bytes(tmp_path / "other")
    shared = first.keys() & other.keys()
    assert all(first[k] != other[k] for k in shared if k.endswith(".json"))
    # a video does not depend on how many others are generated
    generate_dataset(tmp_path / "one", dataclasses.replace(CFG, train_videos=1, val_videos=0), progress=False)
    for key, payload in tree_bytes(tmp_path / "one").items():
        assert first[key] == payload, key


def test_layout_and_poseval_format(dataset):
    validate_layout(dataset)
    image_ids, names = set(), []
    for split, suffix in (("train", "_mpii_train"), ("val", "_mpii_test")):
        for path in list_videos(dataset, split):
            video = read_video(path)
            names.append(video.name)
            assert video.name.endswith(suffix) and video.image_hw == (CFG.image_height, CFG.image_width)
            assert CFG.min_frames <= len(video.frames) <= CFG.max_frames
            for t, frame in enumerate(video.frames):
                match = POSEVAL_FILE_NAME.search(frame.file_name)
                assert match and frame.file_name == f"images/{split}/{video.name}/{t:06d}.jpg"
                assert frame.image_id == 10_000_000_000 + int(match.group(1)) * 10_000 + int(match.group(2))
                assert frame.image_id not in image_ids
                image_ids.add(frame.image_id)
                if not frame.is_labeled:
                    assert frame.persons == ()  # like PoseTrack: unlabeled frames carry no people
                for person in frame.persons:
                    assert person.bbox_head_xywh is not None and min(person.bbox_head_xywh[2:]) > 0
                    assert person.bbox_xywh is not None and 0 <= person.track_id < 10000
                    absent = (person.keypoints == 0).all(axis=1)
                    assert set(np.unique(person.keypoints[~absent, 2])) <= {0.0, 1.0}
            image = cv2.imread(str(dataset / video.frames[0].file_name))
            assert image.shape == (CFG.image_height, CFG.image_width, 3)
    assert names == sorted(names) and names[0] == "000001_mpii_train" and "000101_mpii_test" in names
    raw = (dataset / "annotations/val/000101_mpii_test.json").read_text()
    assert '"head_bottom","head_top"' in raw and str(list(JOINT_NAMES)).replace("'", '"').replace(", ", ",") in raw
    labeled = [f.is_labeled for p in list_videos(dataset, "train") for f in read_video(p).frames]
    assert 0.5 < np.mean(labeled) < 0.95


def _covered_by_others(scene, t: int, p: int, xy: np.ndarray) -> bool:
    """True if some other figure's drawing box or an occluder could cover image point xy."""
    joints = image_joints(scene, t)  # (P, 17, 2)
    for q, other in enumerate(scene.figures):
        if q == p:
            continue
        margin = 0.16 * other.height_px[t] + 3
        lo, hi = joints[q].min(0) - margin, joints[q].max(0) + margin
        if (lo <= xy).all() and (xy <= hi).all():
            return True
    for box, _, _ in scene.occluders:
        x0, y0, x1, y1 = box[t] - np.array([scene.pan_x[t], 0, scene.pan_x[t], 0]) + np.array([-2, -2, 2, 2])
        if x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1:
            return True
    return False


def _check_visibility(index: int) -> int:
    """Assert the flags of one video against the scene geometry; return how many joints are hidden."""
    cfg = dataclasses.replace(CFG, seed=11, min_frames=10, max_frames=10)
    video, images, scene, owners = render_video(cfg, "train", index)
    H, W = cfg.image_height, cfg.image_width
    checked, hidden = 0, 0
    for t, frame in enumerate(video.frames):
        joints = image_joints(scene, t)
        for person in frame.persons:
            p = person.track_id
            inside = (joints[p, :, 0] >= 0) & (joints[p, :, 0] <= W - 1) & (joints[p, :, 1] >= 0) & (joints[p, :, 1] <= H - 1)
            kps = person.keypoints
            np.testing.assert_array_equal((kps == 0).all(axis=1), ~inside)  # outside the image -> (0, 0, 0)
            np.testing.assert_allclose(kps[inside, :2], joints[p, inside], atol=0.01)
            for j in np.flatnonzero(inside):
                covered = _covered_by_others(scene, t, p, joints[p, j])
                back_nose = j == fg.NOSE and scene.figures[p].lateral[t] <= 0
                if not covered and not back_nose:
                    assert kps[j, 2] == 1, (t, p, JOINT_NAMES[j])
                if kps[j, 2] == 0:
                    assert covered or back_nose, (t, p, JOINT_NAMES[j])
                checked += 1
                hidden += kps[j, 2] == 0
    assert checked > 50
    return hidden


def test_visibility_flags_follow_geometry():
    hidden = [_check_visibility(index) for index in range(4)]
    assert sum(hidden) > 0  # occlusion happens, and every hidden joint is explained by geometry


def test_motion_is_smooth_but_not_static(dataset):
    steps, heads = [], []
    for path in list_videos(dataset, "train") + list_videos(dataset, "val"):
        frames = read_video(path).frames
        for a, b in zip(frames, frames[1:]):
            prev = {p.track_id: p for p in a.persons}
            for person in b.persons:
                if person.track_id not in prev:
                    continue
                both = (person.keypoints[:, 2] > 0) & (prev[person.track_id].keypoints[:, 2] > 0)
                step = np.linalg.norm(person.keypoints[both, :2] - prev[person.track_id].keypoints[both, :2], axis=1)
                steps.extend(step)
                heads.extend([np.hypot(*person.bbox_head_xywh[2:])] * len(step))
    steps, heads = np.asarray(steps), np.asarray(heads)
    assert len(steps) > 100
    assert (steps <= 1.5 * heads).all(), (steps / heads).max()  # no joint jumps more than 1.5 head sizes
    assert np.median(steps / heads) > 0.01  # people do move


def test_figure_proportions_are_plausible():
    rng = np.random.default_rng(0)
    fig = fg.sample_figure(rng, 30, (240, 320), "main")
    j = fig.joints_xy  # (T, 17, 2)
    assert j.shape == (30, 17, 2)
    arm = np.linalg.norm(j[:, fg.L_SHO] - j[:, fg.L_ELB], axis=-1) / fig.height_px
    shin = np.linalg.norm(j[:, fg.R_KNEE] - j[:, fg.R_ANK], axis=-1) / fig.height_px
    np.testing.assert_allclose(arm, fig.shape.upper_arm)  # limb lengths stay fixed while moving
    np.testing.assert_allclose(shin, fig.shape.shin)
    assert (j[:, fg.HEAD_TOP, 1] < j[:, fg.HEAD_BOTTOM, 1]).all()  # upright: head top above neck
    assert (j[:, fg.HEAD_BOTTOM, 1] < j[:, fg.L_HIP, 1]).all() and (j[:, fg.L_HIP, 1] < j[:, fg.L_ANK, 1]).all()


def test_draw_pose_and_contact_sheet(dataset):
    image = np.zeros((50, 60, 3), np.uint8)
    joints = np.stack([np.linspace(5, 55, 17), np.linspace(5, 45, 17)], axis=1)
    visible = np.ones(17)
    visible[3] = 0
    drawn = draw_pose(image, joints, visible, (0, 255, 0))
    assert image.sum() == 0 and drawn[..., 1].sum() > 0  # the input is not modified
    sheet = contact_sheet(dataset, list_videos(dataset, "train"), frames_per_video=2, columns=3)
    assert sheet.shape == (2 * CFG.image_height, 3 * CFG.image_width, 3)


def _sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_blur_crowds_and_tracks_entering_or_leaving():
    cfg = dataclasses.replace(CFG, seed=1, min_frames=16, max_frames=16)
    blurred, sharp, crowds, comings_and_goings = [], [], 0, 0
    for index in range(8):
        video, images, scene, _ = render_video(cfg, "val", index)
        for t, (kind, _) in enumerate(scene.blur):
            (sharp if kind == "none" else blurred).append(_sharpness(images[t]))
        if scene.crowd_polygon is not None:
            crowds += 1
            for frame in video.frames:  # the crowd is an ignore region on every frame, its people unannotated
                (region,) = frame.ignore_regions
                assert region.shape == (8, 2) and len(frame.persons) <= len(scene.figures)
        labeled = [f for f in video.frames if f.is_labeled]
        tracks = [{p.track_id for p in f.persons} for f in labeled]
        everyone = set().union(*tracks)
        comings_and_goings += sum(1 for track in everyone if not all(track in ids for ids in tracks))
    assert blurred and crowds > 0 and comings_and_goings > 0
    assert np.median(blurred) < 0.6 * np.median(sharp)  # blurred frames really lose detail
