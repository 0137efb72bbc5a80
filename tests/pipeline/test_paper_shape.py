"""The `paper` profile's real code path at real shapes, on CPU: ViT-L/16 at 256x192, 3 frames, random
weights written in the MMPose 1.x layout and installed by the `weights` stage under a relative path, the
frozen backbone, the profile's module width, Ray Train with one worker, a few steps, one validation, then
`evaluate`. Only the data (a few synthetic samples) and the schedule are shrunk; every size is the paper's.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.reliability.reliability_fixtures import REPO, copy_mlflow_db, stage_env
from vremd.config import load_config
from vremd.model.weights import read_weights

pytestmark = pytest.mark.slow

SHRUNK = {  # the paper profile, with only the data (GT boxes: no detector) and the schedule made small
    "data": {"source": "synthetic", "on_bad_input": "error", "val_boxes": "gt", "synthetic": {
        "seed": 3, "train_videos": 1, "val_videos": 1, "min_frames": 4, "max_frames": 4, "image_height": 240,
        "image_width": 320, "max_people": 1, "unlabeled_fraction": 0.0}},
    "crops": {"workers": 1},
    "train": {"epochs": 1, "batch_size": 2, "max_train_samples": 4, "use_gpu": False, "loader_workers": 0,
              "num_workers": 1, "val_every": 1, "flip_test": False, "max_failures": 0},
}


def _merge(tree: dict, extra: dict) -> dict:
    for key, value in extra.items():
        tree[key] = _merge(tree.get(key, {}), value) if isinstance(value, dict) else value
    return tree


def _mmpose_vit_l(path: Path, embed_dim: int, depth: int, tokens: int) -> None:
    """Random ViT weights at the paper's size, saved as MMPose 1.x saves ViTPose (mmengine meta included)."""
    g = torch.Generator().manual_seed(0)
    D = embed_dim
    sd = {"backbone.patch_embed.projection.weight": torch.randn(D, 3, 16, 16, generator=g) * 0.02,
          "backbone.patch_embed.projection.bias": torch.zeros(D),
          "backbone.pos_embed": torch.randn(1, tokens, D, generator=g) * 0.02,
          "backbone.ln1.weight": torch.ones(D), "backbone.ln1.bias": torch.zeros(D)}
    shapes = {"ln1": (D,), "attn.qkv": (3 * D, D), "attn.proj": (D, D), "ln2": (D,),
              "ffn.layers.0.0": (4 * D, D), "ffn.layers.1": (D, 4 * D)}
    for i in range(depth):
        for part, shape in shapes.items():
            weight = torch.ones(shape) if part.startswith("ln") else torch.randn(*shape, generator=g) * 0.02
            sd[f"backbone.layers.{i}.{part}.weight"] = weight
            sd[f"backbone.layers.{i}.{part}.bias"] = torch.zeros(shape[0])
    torch.save({"meta": {"epoch": 210, "dataset_meta": {"sigmas": np.full(17, 0.079, np.float32)}},
                "state_dict": sd}, path)


def _run(root: Path, *argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *argv], cwd=root, env=stage_env(RAY_ADDRESS=""), capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def test_paper_profile_end_to_end_at_paper_shapes(write_params, tmp_path):
    started = time.monotonic()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    paper = _merge(params["profiles"]["paper"], SHRUNK)
    model = load_config(REPO / "params.yaml", profile="paper").model
    source = tmp_path / "downloads" / "vitpose-l-mmpose.pth"
    source.parent.mkdir()
    _mmpose_vit_l(source, model.embed_dim, model.depth, (model.img_height // 16) * (model.img_width // 16))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    paper["model"].update(pretrained="weights/vitpose-l.pth", pretrained_url=str(source), pretrained_sha256=digest[:8])
    write_params(tmp_path, paper, profile="paper")
    copy_mlflow_db(tmp_path)
    stages = [
        ["pipeline/download.py", "--out", "data/raw", "--no-progress"],
        ["pipeline/crops.py", "--raw", "data/raw", "--out", "data/crops", "--no-progress"],
        ["pipeline/preprocess.py", "--crops", "data/crops", "--out", "data/index", "--stats", "metrics/dataset.json"],
        ["pipeline/weights.py", "--no-progress"],
        ["pipeline/train.py", "--index", "data/index", "--raw", "data/raw", "--out", "models", "--no-progress"],
        ["pipeline/evaluate.py", "--model", "models/final.pt", "--index", "data/index", "--raw", "data/raw",
         "--out", "reports", "--metrics", "metrics/ap.json", "--no-progress"],
    ]
    for argv in stages:
        _run(tmp_path, str(REPO / argv[0]), *argv[1:])
    manifest = json.loads((tmp_path / "weights" / "manifest.json").read_text())
    assert manifest["layout"] == "MMPose/mmpretrain" and manifest["sha256"] == digest
    final = torch.load(tmp_path / "models" / "final.pt", map_location="cpu", weights_only=True)
    assert final["config"]["model"]["embed_dim"] == model.embed_dim and final["config"]["model"]["dim"] == model.dim
    installed = read_weights(tmp_path / "weights" / "vitpose-l.pth")["state_dict"]
    qkv = final["model"]["backbone.vit.blocks.23.attn.qkv.weight"]
    assert torch.equal(qkv, installed["backbone.layers.23.attn.qkv.weight"])  # frozen: bit-identical after training
    metrics = json.loads((tmp_path / "metrics" / "ap.json").read_text())
    assert {"Head", "Ankle", "Mean", "per_joint"} <= set(metrics)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"paper-shape run: {time.monotonic() - started:.0f} s, peak RSS of one stage {peak_gb:.1f} GB")
