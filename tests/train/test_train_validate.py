"""Validation: heatmaps -> image coordinates -> PoseTrack json -> AP, the flip test's mirroring, and predict's
inference path giving validation's joints for the same crops."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

from vremd.config import DetectConfig, smoke_config
from vremd.data.dataset import PoseTrackCrops
from vremd.data.heatmaps import input_to_image_xy
from vremd.data.joints import FLIP_INDEX
from vremd.data.posetrack import read_video
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import build_model, predict_heatmaps
from vremd.predict.inference import predict_crops
from vremd.train.validate import ap_metrics, predict, validate


class Oracle(torch.nn.Module):
    """A perfect model: the dataset's target heatmaps for its samples, mirrored ones for mirrored inputs."""

    def __init__(self, dataset):
        super().__init__()
        self.table = {}
        for i in range(len(dataset)):
            item = dataset[i]
            hm = item["heatmaps"]  # (J, h, w)
            self.table[self._key(item["frames"])] = hm
            self.table[self._key(item["frames"].flip(-1))] = hm.flip(-1)[list(FLIP_INDEX)]

    @staticmethod
    def _key(frames):
        return hashlib.sha1(frames.contiguous().numpy().tobytes()).hexdigest()

    def forward(self, frames):  # (B, T, 3, H, W) -> {"heatmaps": (B, J, h, w)}
        return {"heatmaps": torch.stack([self.table[self._key(f)] for f in frames])}


@pytest.fixture(scope="module")
def val_data(smoke_data):
    index_path = smoke_data.index / "val.parquet"
    return PoseTrackCrops(index_path, None, 17, heatmap_stride=HEATMAP_STRIDE), pd.read_parquet(index_path), smoke_data.gt_dir


def test_flip_test_of_a_perfect_model_returns_its_heatmaps(val_data):
    dataset, _, _ = val_data
    model = Oracle(dataset)
    frames = torch.stack([dataset[i]["frames"] for i in range(3)])  # (3, T, 3, H, W)
    plain = predict_heatmaps(model, frames)["heatmaps"]
    flipped = predict_heatmaps(model, frames, FLIP_INDEX)["heatmaps"]
    assert torch.allclose(plain, flipped)


def test_input_to_image_xy_applies_the_affine():
    xy = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # (B=1, J=2, 2)
    affine = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 3.0, 20.0]]], dtype=torch.float64)  # (1, 2, 3)
    assert torch.equal(input_to_image_xy(xy, affine), torch.tensor([[[12.0, 26.0], [10.0, 20.0]]], dtype=torch.float64))


def test_perfect_heatmaps_score_near_the_ceiling_and_noise_scores_low(val_data, tmp_path):
    dataset, index, gt_dir = val_data
    oracle = validate(Oracle(dataset), dataset, index, gt_dir, tmp_path / "oracle", 4, torch.device("cpu"), 4,
                      flip_test=True)
    # occluded GT joints (v=0 with coordinates) count in poseval's recall but have no target heatmap
    assert oracle.ap.table["Total"] > 75 and oracle.unpredicted == ()

    class Noise(torch.nn.Module):
        def forward(self, frames):
            g = torch.Generator().manual_seed(0)
            return {"heatmaps": torch.rand(frames.shape[0], 17, 16, 12, generator=g)}

    noise = validate(Noise(), dataset, index, gt_dir, tmp_path / "noise", 4, torch.device("cpu"), 4)
    assert noise.ap.table["Total"] < 20 < oracle.ap.table["Total"]
    metrics = ap_metrics(oracle)
    assert set(metrics) == {"ap/head", "ap/shoulder", "ap/elbow", "ap/wrist", "ap/hip", "ap/knee", "ap/ankle",
                            "ap/mean", "val/unpredicted_persons"}
    assert metrics["ap/mean"] == oracle.ap.table["Total"] and metrics["val/unpredicted_persons"] == 0
    assert sorted(p.name for p in (tmp_path / "oracle").iterdir()) == sorted(p.name for p in Path(gt_dir).glob("*.json"))


OKS_NMS = DetectConfig(postprocess="oks_nms")


def test_oks_nms_removes_duplicate_detector_poses_and_keeps_gt_box_samples(val_data, smoke_data, tmp_path):
    dataset, index, gt_dir = val_data
    twice = pd.concat([index, index], ignore_index=True)  # every person cropped from two identical "detections"
    twice["sample_id"] = range(len(twice))
    twice["source"], twice["score"] = "det", 0.9
    (tmp_path / "crops").symlink_to(smoke_data.crops)  # shards at ../crops, as the index's
    path = tmp_path / "index-twice" / "val.parquet"
    path.parent.mkdir()
    twice.to_parquet(path)
    doubled = PoseTrackCrops(path, None, 17, heatmap_stride=HEATMAP_STRIDE)
    oracle = Oracle(dataset)

    def persons(pred_dir):
        return sum(len(v.frames[i].persons) for v in map(read_video, Path(pred_dir).glob("*.json"))
                   for i in range(len(v.frames)))

    kept = validate(oracle, doubled, twice, gt_dir, tmp_path / "nms", 4, torch.device("cpu"), 4, detect=OKS_NMS,
                    joint_slots=smoke_config().model.annotated_joints)
    plain = validate(oracle, doubled, twice, gt_dir, tmp_path / "plain", 4, torch.device("cpu"), 4,
                     detect=DetectConfig(postprocess="none"))
    assert persons(tmp_path / "nms") == len(index) and persons(tmp_path / "plain") == 2 * len(twice) // 2
    assert kept.ap.table["Total"] > plain.ap.table["Total"]  # duplicates are false positives for poseval
    gt_rows = twice.assign(source="gt")
    validate(oracle, doubled, gt_rows, gt_dir, tmp_path / "gt", 4, torch.device("cpu"), 4, detect=OKS_NMS)
    assert persons(tmp_path / "gt") == len(twice)  # GT-box samples are never suppressed


SAME_PATH_SAMPLES = 4


@pytest.fixture(scope="module")
def smoke_model():
    """A smoke-config model with random (seeded) weights, in eval mode."""
    torch.manual_seed(0)
    return build_model(smoke_config().model).eval()


@pytest.mark.parametrize("flip_test", [False, True], ids=["plain", "flip-test"])
def test_predict_gives_validations_joints_and_scores_for_the_same_crops(val_data, smoke_model, flip_test):
    dataset, _, _ = val_data
    n = SAME_PATH_SAMPLES
    assert len(dataset) >= n
    val = predict(smoke_model, Subset(dataset, range(n)), n, torch.device("cpu"), HEATMAP_STRIDE, flip_test)
    crops = np.stack([dataset.raw_crops(i) for i in range(n)])  # (n, T, H, W, 3) uint8: what predict feeds
    ours = predict_crops(smoke_model, crops, "cpu", flip_test=flip_test, crop_to_image=dataset.crop_to_image[:n])
    np.testing.assert_array_equal(ours["joints_xy"], val.joints_xy_image)
    np.testing.assert_array_equal(ours["scores"], val.maxvals)


def test_the_flip_test_changes_predicted_joints(val_data, smoke_model):
    """Guards the test above: the flip test moves the joints, so both paths are seen to honour it."""
    dataset, _, _ = val_data
    crops = np.stack([dataset.raw_crops(i) for i in range(SAME_PATH_SAMPLES)])
    plain, flipped = (predict_crops(smoke_model, crops, flip_test=flip)["joints_xy"] for flip in (False, True))
    assert not np.array_equal(plain, flipped)
