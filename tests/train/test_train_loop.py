"""The worker loop in-process (num_workers=0) on real smoke data and the real model: resume, determinism."""

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from vremd.train.checkpoints import load_state
from vremd.data.dataset import PoseTrackCrops
from vremd.model.heads import HEATMAP_STRIDE
from vremd.train.loop import EpochSampler, train_loader
from vremd.train.ray_train import fit
from vremd.train.checkpoints import latest_checkpoint
from vremd.train.runs import RunMismatchError


def with_train(cfg, **changes):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


@pytest.fixture(scope="module")
def smoke(smoke_data):
    torch.set_num_threads(1)  # tiny model on a shared 2-core machine: one thread is fastest
    return smoke_data.cfg, smoke_data.run_paths()


def test_sampler_splits_each_epoch_evenly_and_deterministically():
    shards = [EpochSampler(10, 7, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    a, b = (list(s) for s in shards)
    assert {epoch for epoch, _ in a + b} == {4}  # the epoch travels with each key to the loader workers
    a, b = [i for _, i in a], [i for _, i in b]
    assert len(a) == len(b) == len(shards[0]) == 4  # 7 capped samples padded to 8
    assert len(set(a + b)) == 7 and set(a + b) <= set(range(10))
    again = EpochSampler(10, 7, seed=3, rank=0, world_size=2)
    again.set_epoch(4)
    assert [i for _, i in again] == a
    again.set_epoch(5)
    assert [i for _, i in again] != a


def test_resume_continues_at_the_next_epoch_with_identical_state(smoke, tmp_path):
    cfg, paths = smoke
    two = with_train(cfg, epochs=2, val_every=0)
    straight = fit(two, paths, tmp_path, "straight")
    first = fit(with_train(two, epochs=1), paths, tmp_path, "resumed")
    assert [h["epoch"] for h in first.history] == [1]
    resumed = fit(two, paths, tmp_path, "resumed")  # same run name: picks up epoch 1's checkpoint
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]  # epoch 1 was not trained again (same timing too)
    assert resumed.history[1]["loss"] == straight.history[1]["loss"]
    for key, value in straight.state["model"].items():
        assert torch.equal(value, resumed.state["model"][key]), key
    opt_a, opt_b = straight.state["optimizer"]["state"], resumed.state["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and opt_a
    steps = 2 * math.ceil(len(pd.read_parquet(Path(paths.index_dir) / "train.parquet")) / cfg.train.batch_size)
    for p in opt_a:
        assert int(opt_a[p]["step"]) == int(opt_b[p]["step"]) == steps
        assert torch.equal(opt_a[p]["exp_avg"], opt_b[p]["exp_avg"])
        assert torch.equal(opt_a[p]["exp_avg_sq"], opt_b[p]["exp_avg_sq"])
    assert straight.state["scheduler"] == resumed.state["scheduler"]


def test_same_seed_same_metrics_and_validation_writes_predictions(smoke, tmp_path):
    cfg, paths = smoke
    a = fit(cfg, paths, tmp_path, "a")
    b = fit(cfg, paths, tmp_path, "b")
    timing_free = lambda history: [{k: v for k, v in h.items() if k != "samples_per_s"} for h in history]  # noqa: E731
    assert timing_free(a.history) == timing_free(b.history)
    assert {"loss", "lr", "samples_per_s", "ap/head", "ap/ankle", "ap/mean"} <= set(a.history[0])
    assert sorted(p.name for p in (a.checkpoint_dir / "predictions").iterdir()) == \
        sorted(p.name for p in Path(paths.gt_dir).glob("*.json"))
    other_seed = fit(with_train(cfg, seed=1), paths, tmp_path, "c")
    assert other_seed.history[0]["loss"] != a.history[0]["loss"]


def test_frozen_backbone_stays_out_of_the_optimizer(smoke, tmp_path):
    cfg, paths = smoke
    frozen = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, freeze_backbone=True))
    result = fit(with_train(frozen, val_every=0, epochs=1), paths, tmp_path, "frozen")
    groups = result.state["optimizer"]["param_groups"]
    n_trainable = sum(len(g["params"]) for g in groups)
    n_backbone = sum(1 for k in result.state["model"] if k.startswith("backbone."))
    n_all = len(result.state["model"])
    assert 0 < n_trainable <= n_all - n_backbone


def test_changed_config_refuses_to_resume(smoke, tmp_path):
    cfg, paths = smoke
    fit(with_train(cfg, val_every=0), paths, tmp_path, "run")
    with pytest.raises(RunMismatchError, match="train.lr"):
        fit(with_train(cfg, val_every=0, lr=0.5), paths, tmp_path, "run")
    assert latest_checkpoint(tmp_path / "run") is not None
    assert load_state(latest_checkpoint(tmp_path / "run"))["epoch"] == 1


def _epoch_frames(loader, sampler, epoch: int) -> dict[int, torch.Tensor]:
    sampler.set_epoch(epoch)
    return {int(i): f for batch in loader for i, f in zip(batch["sample_id"], batch["frames"])}


def test_loader_workers_draw_a_new_augmentation_each_epoch(smoke):
    """Before: persistent loader workers never saw the dataset's set_epoch: 18 of 18 samples repeated epoch 0."""
    cfg, paths = smoke
    t = dataclasses.replace(cfg.train, loader_workers=2, batch_size=4)
    runs = []
    for _ in range(2):  # two fresh loaders at the same seed: the same two epochs
        train_set = PoseTrackCrops(Path(paths.index_dir) / "train.parquet", cfg.augment, cfg.model.num_joints, t.seed,
                                   heatmap_stride=HEATMAP_STRIDE)
        loader, sampler = train_loader(train_set, t, rank=0, world_size=1)
        assert loader.num_workers == 2 and loader.persistent_workers
        runs.append([_epoch_frames(loader, sampler, epoch) for epoch in (0, 1)])
        del loader
    (e0, e1), (again0, again1) = runs
    assert e0.keys() == e1.keys() and len(e0) == len(train_set) > 4
    assert all(not torch.equal(e0[k], e1[k]) for k in e0)  # every sample augmented anew in epoch 1
    assert all(torch.equal(e0[k], again0[k]) and torch.equal(e1[k], again1[k]) for k in e0)  # seeded: reproducible
