"""The `pretrain` stage's library part: the demo's stand-in for ViTPose pretrained on COCO.

ViTPose is a plain ViT with the classic decoder, trained top-down on single COCO images; the paper freezes
its backbone and trains VREMD on top. The demo cannot download it, so it makes its own of the demo's size:
the same kind of model (VREMD's baseline row, which runs the ViT on the key frame only), trained from scratch
on synthetic stills, its backbone written as a ViTPose checkpoint that `load_vitpose_checkpoint` reads like
the real one (`export_vitpose_state_dict`).

The stills (`pretrain.stills`) are a synthetic dataset of their own seed, train videos only, of a few
frames each with more people per frame: many more scenes, people and poses than the video split, and never
one of its val videos (a seed equal to `data.synthetic.seed` is refused). The single-frame model is scored
on the video data's val split: the demo's counterpart of the paper's single-frame baseline (80.2).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch

from vremd.atomic import atomic_write_bytes
from vremd.config import Config, ConfigError
from vremd.data.crop_store import build_crops
from vremd.data.index import build_index, rebase_index
from vremd.data.sources.download import prepare_synthetic
from vremd.model.backbone import export_vitpose_state_dict
from vremd.model.vremd import build_model

__all__ = ["check_pretrain_config", "pretraining_config", "build_stills", "export_backbone", "STILLS_DIR"]

STILLS_DIR = "stills"  # inside the stage's folder: raw/synthetic, crops, index


def check_pretrain_config(cfg: Config) -> None:
    """Refuse a recipe that would not be a separate pretraining (ConfigError naming the key)."""
    p = cfg.pretrain
    if p.stills.val_videos != 0:
        raise ConfigError(f"pretrain.stills.val_videos: the stills are training images only (the single-frame "
                          f"model is scored on the video data's val split); found {p.stills.val_videos}, set 0")
    if p.stills.train_videos < 1:
        raise ConfigError(f"pretrain.stills.train_videos: need at least 1, found {p.stills.train_videos}")
    if cfg.data.source == "synthetic" and p.stills.seed == cfg.data.synthetic.seed:
        raise ConfigError(f"pretrain.stills.seed: equal to data.synthetic.seed ({p.stills.seed}); the stills must "
                          "come from their own seed, so that they repeat none of the video data")


def pretraining_config(cfg: Config) -> Config:
    """The single-frame model and its schedule as a training `Config`: the baseline row, unfrozen, from scratch,
    in-process, validated once at the end; data.synthetic names the stills it trains on."""
    p = cfg.pretrain
    model = dataclasses.replace(cfg.model, hkme=False, bmd=False, freeze_backbone=False, pretrained="",
                                pretrained_url="", pretrained_sha256="")
    train = dataclasses.replace(cfg.train, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                                lr_step_epochs=p.lr_step_epochs, seed=p.seed, num_workers=0, val_every=0,
                                max_train_samples=0, flip_test=False)
    data = dataclasses.replace(cfg.data, source="synthetic", synthetic=p.stills)
    tracking = dataclasses.replace(cfg.tracking, run_name=f"{cfg.tracking.run_name}-pretrain")
    return dataclasses.replace(cfg, data=data, model=model, train=train, tracking=tracking)


def build_stills(cfg: Config, work_dir: Path, val_index: Path, workers: int = 1, progress: bool = True) -> dict:
    """Generate the stills, crop them and index them under `work_dir`; the index's val split is `val_index`
    (the video data's, rebased). Return the stills' index statistics."""
    raw = Path(work_dir) / "raw" / "synthetic"
    prepare_synthetic(cfg.pretrain.stills, raw, progress=progress)
    crops, index = Path(work_dir) / "crops", Path(work_dir) / "index"
    build_crops(raw, crops, cfg.crops, cfg.data.on_bad_input, val_boxes="gt", workers=workers, progress=progress)
    stats = build_index(crops, index)["train"]
    rebase_index(val_index, index / "val.parquet")
    return stats


def export_backbone(state: dict[str, torch.Tensor], cfg: Config, path: Path, meta: dict[str, str | float]) -> Path:
    """Write the backbone of the pretrained model (`state`, built by `pretraining_config(cfg)`) as a ViTPose
    checkpoint, ``{"state_dict": backbone.*, "meta": meta}``, atomically."""
    model = build_model(pretraining_config(cfg).model)
    model.load_state_dict(state)
    payload = {"state_dict": export_vitpose_state_dict(model.backbone), "meta": dict(meta)}
    buffer = io.BytesIO()  # torch.save names its zip records after the file: a temp file's random name would
    torch.save(payload, buffer)  # make every export's bytes (and sha256) differ; a buffer's records are fixed
    return atomic_write_bytes(path, buffer.getvalue())
