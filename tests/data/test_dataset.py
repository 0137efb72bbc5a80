"""Sample index and PoseTrackCrops: shapes, eval-mode affines, flip symmetry, determinism."""

import dataclasses

import numpy as np
import pytest
import torch

from test_crops import CFG, two_people, write_fixture_video
from vremd.config import AugmentConfig
from vremd.data.augment import apply_augmentation
from vremd.data.boxes import apply_affine
from vremd.data.crop_store import build_crops
from vremd.data.dataset import IMAGENET_MEAN, IMAGENET_STD, PoseTrackCrops
from vremd.data.index import build_index
from vremd.data.joints import FLIP_INDEX, JOINT_NAMES
from vremd.model.heads import HEATMAP_STRIDE

NO_AUG = AugmentConfig(rotation_deg=0.0, scale_min=1.0, scale_max=1.0, flip_prob=0.0, half_body_prob=0.0)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    videos = [write_fixture_video(root / "raw", "train", 30, two_people(3)),
              write_fixture_video(root / "raw", "val", 31, two_people(2))]
    build_crops(root / "raw", root / "crops", CFG, "error")
    stats = build_index(root / "crops", root / "index")
    return root / "index", stats, videos


def test_index_and_stats(index_dir):
    path, stats, _ = index_dir
    assert stats["train"]["samples"] == 6 and stats["val"]["samples"] == 4
    assert stats["train"]["persons"] == 2 and stats["train"]["frames"] == 3 and stats["train"]["videos"] == 1
    assert set(stats["train"]["visible_per_joint"]) == set(JOINT_NAMES)
    assert stats["train"]["visible_per_joint"]["nose"] == 6 and stats["train"]["skipped_total"] == 0
    ds = PoseTrackCrops(path / "train.parquet", None, heatmap_stride=HEATMAP_STRIDE)
    assert ds.index["sample_id"].tolist() == list(range(6))
    for column in ("split", "video", "json_path", "frame_index", "image_id", "file_name", "track_id",
                   "person_id", "box_xywh", "score"):
        assert column in ds.index.columns


def test_eval_item_shapes_and_affine(index_dir):
    path, _, videos = index_dir
    ds = PoseTrackCrops(path / "train.parquet", None, heatmap_stride=HEATMAP_STRIDE)
    item = ds[4]
    assert item["frames"].shape == (3, 3, 32, 24) and item["frames"].dtype == torch.float32
    assert item["heatmaps"].shape == (17, 8, 6) and item["target_weight"].shape == (17,)
    assert item["joints_xy"].shape == (17, 2) and item["visible"].shape == (17,)
    assert item["crop_to_image"].shape == (2, 3) and item["crop_to_image"].dtype == torch.float64
    assert item["sample_id"] == 4
    row = ds.index.iloc[4]
    person = videos[0].frames[row["frame_index"]].persons[row["track_id"]]
    back = apply_affine(item["crop_to_image"].numpy(), item["joints_xy"].numpy().astype(np.float64))
    assert back == pytest.approx(person.keypoints[:, :2], abs=1e-3)
    # the key frame (B channel 20 + 40 t) sits in the middle, ImageNet-normalised
    blue = item["frames"][:, 2].mean(dim=(1, 2)) * IMAGENET_STD[2] + IMAGENET_MEAN[2]
    expected = [20 + 40 * max(row["frame_index"] - 1, 0), 20 + 40 * row["frame_index"], 20 + 40 * min(row["frame_index"] + 1, 2)]
    assert (blue * 255).numpy() == pytest.approx(expected, abs=3)


def test_augmented_crop_to_image_maps_joints_back(index_dir):
    path, _, videos = index_dir
    ds = PoseTrackCrops(path / "train.parquet", AugmentConfig(half_body_prob=1.0), seed=3, heatmap_stride=HEATMAP_STRIDE)
    for i in range(len(ds)):
        item, row = ds[i], ds.index.iloc[i]
        person = videos[0].frames[row["frame_index"]].persons[row["track_id"]]
        vis = item["visible"].numpy() > 0
        # flipped samples swap slots: map the target slots back to the original joints
        back = apply_affine(item["crop_to_image"].numpy(), item["joints_xy"].numpy().astype(np.float64))
        flipped = np.linalg.det(item["crop_to_image"].numpy()[:, :2]) < 0
        original = person.keypoints[list(FLIP_INDEX) if flipped else slice(None), :2]
        assert back[vis] == pytest.approx(original[vis], abs=1e-2)
        assert item["target_weight"].tolist() == item["visible"].tolist()


def test_flip_mirrors_pixels_and_swaps_left_right(index_dir):
    path, _, _ = index_dir
    plain = PoseTrackCrops(path / "train.parquet", NO_AUG, heatmap_stride=HEATMAP_STRIDE)[2]
    flip = PoseTrackCrops(path / "train.parquet", dataclasses.replace(NO_AUG, flip_prob=1.0), heatmap_stride=HEATMAP_STRIDE)[2]
    assert torch.equal(flip["frames"], plain["frames"].flip(-1))
    left_wrist, right_wrist = JOINT_NAMES.index("left_wrist"), JOINT_NAMES.index("right_wrist")
    x, y = plain["joints_xy"][right_wrist]
    assert flip["joints_xy"][left_wrist].tolist() == pytest.approx([24 - 1 - x.item(), y.item()], abs=1e-4)
    assert torch.allclose(flip["heatmaps"][left_wrist], plain["heatmaps"][right_wrist].flip(-1), atol=1e-5)


def test_flipping_twice_is_identity():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 32, 24, 3), dtype=np.uint8)
    joints = rng.uniform(2, 20, (17, 2))
    flip = np.array([[-1.0, 0.0, 23.0], [0.0, 1.0, 0.0]])
    once = apply_augmentation(frames, joints, np.ones(17), flip, True)
    twice = apply_augmentation(*once, flip, True)
    assert np.array_equal(twice[0], frames) and twice[1] == pytest.approx(joints)
    assert not np.array_equal(once[0], frames)


def test_augmentation_is_deterministic_per_epoch(index_dir):
    path, _, _ = index_dir
    ds = PoseTrackCrops(path / "train.parquet", AugmentConfig(), seed=7, heatmap_stride=HEATMAP_STRIDE)
    a = ds[(0, 1)]
    assert torch.equal(ds[1]["frames"], a["frames"])  # a bare index is epoch 0
    ds2 = PoseTrackCrops(path / "train.parquet", AugmentConfig(), seed=7, heatmap_stride=HEATMAP_STRIDE)
    assert torch.equal(ds2[(0, 1)]["frames"], a["frames"]) and torch.equal(ds2[(0, 1)]["heatmaps"], a["heatmaps"])
    assert not torch.equal(ds2[(1, 1)]["frames"], a["frames"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["frames"].shape == (2, 3, 3, 32, 24) and batch["crop_to_image"].shape == (2, 2, 3)


def test_loader_workers_run_opencv_single_threaded(index_dir):
    """Each DataLoader worker process caps OpenCV at one thread; the parent's setting is left alone."""
    import cv2

    class ThreadProbe(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return 2

        def __getitem__(self, i):
            self.inner[i]  # the dataset's own item, augmentation warps included
            return cv2.getNumThreads()

    before = cv2.getNumThreads()
    cv2.setNumThreads(4)  # what the worker inherits: more than one, even on a one-core machine
    try:
        dataset = PoseTrackCrops(index_dir[0] / "train.parquet", AugmentConfig(), seed=0, heatmap_stride=HEATMAP_STRIDE)
        in_workers = torch.utils.data.DataLoader(ThreadProbe(dataset), batch_size=None, num_workers=2)
        assert [int(n) for n in in_workers] == [1, 1]
        assert ThreadProbe(dataset)[0] == 4  # in-process loading keeps the caller's OpenCV threads
    finally:
        cv2.setNumThreads(before)
