"""The training-throughput benchmark measures the real path: its DCPose-style baseline draws the same
augmentation and targets as the real loader, and `train_step` is the step training runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.train_throughput import (
    PerSampleLoader, build_data, build_old_index, check_same_targets, loader_timings,
)
from vremd.config import load_config
from vremd.data.dataset import PoseTrackCrops
from vremd.train.losses import heatmap_mse
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import build_model
from vremd.train.loop import train_loader, train_step


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = load_config("params.yaml", profile="demo")
    root = tmp_path_factory.mktemp("tt")
    index, dataset_dir = build_data(root, cfg, cfg.data.synthetic, videos=1, frames=6)
    return cfg, index, build_old_index(root, cfg, dataset_dir)


def test_the_per_sample_baseline_yields_the_real_loaders_samples(data):
    cfg, index, _ = data
    real = PoseTrackCrops(index, cfg.augment, cfg.model.num_joints, seed=3, heatmap_stride=HEATMAP_STRIDE)
    base = PerSampleLoader(index, cfg.augment, cfg.model.num_joints, 3, (cfg.crops.width, cfg.crops.height))
    check_same_targets(real, base)  # raises when they differ
    for i in range(0, len(real), 3):
        a, b = real[(2, i)], base[(2, i)]
        assert a["frames"].shape == b["frames"].shape
        # the loader warps the stored canvas of the frame around the crop (augment.borders frame), the baseline the
        # whole frame: the same pixels everywhere (black where the frame ends in both) up to JPEG and resampling
        # error, mostly the baseline's aliasing in its one bilinear 7x downscale (0.08-0.12 measured; the loader
        # before issue 28, with black borders beyond its stored crop: 0.12-0.61)
        assert (a["frames"] - b["frames"]).abs().mean() < 0.15
        assert torch.allclose(a["crop_to_image"], b["crop_to_image"])
    with pytest.raises(RuntimeError, match="differ"):
        check_same_targets(real, PerSampleLoader(index, cfg.augment, cfg.model.num_joints, 4,
                                                 (cfg.crops.width, cfg.crops.height)))


def test_loader_timings_count_the_samples_they_time(data):
    cfg, index, _ = data
    timings, n = loader_timings(cfg, index, samples=8, repeats=1)
    assert n == 8 and set(timings) == {"vremd", "per-sample"} and all(t.min > 0 for t in timings.values())


def test_the_old_augmentation_loader_reads_crops_without_a_margin(data):
    """The before-issue-28 loader the benchmark compares against: crops without a margin, its uniform draws."""
    cfg, index, old_index = data
    timings, n = loader_timings(cfg, index, samples=8, repeats=1, old_index=old_index)
    assert n == 8 and set(timings) == {"vremd", "per-sample", "old-augmentation"}
    old, new = (PoseTrackCrops(i, None, heatmap_stride=HEATMAP_STRIDE) for i in (old_index, index))
    assert (old.margins == 0).all() and (new.margins == [52, 36]).all()  # 96x128 at crops.train_context_scale 1.25
    assert old.raw_crops(0).shape == new.raw_crops(0).shape == (3, 128, 96, 3)


def test_train_step_is_one_optimizer_step_on_a_loader_batch(data):
    cfg, index, _ = data
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg.model, pretrained="")).train()  # random weights, as the benchmark
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    t = dataclasses.replace(cfg.train, loader_workers=0, batch_size=4, max_train_samples=4)
    batch = next(iter(train_loader(PoseTrackCrops(index, cfg.augment, cfg.model.num_joints, heatmap_stride=HEATMAP_STRIDE), t, 0, 1)[0]))
    with torch.no_grad():
        expected = heatmap_mse(model(batch["frames"])["heatmaps"], batch["heatmaps"], batch["target_weight"])
    before = [p.detach().clone() for p in trainable]
    loss = train_step(model, batch, optimizer, 1.0, trainable, torch.device("cpu"))
    assert isinstance(loss, float) and loss == pytest.approx(float(expected), rel=1e-6)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable))
