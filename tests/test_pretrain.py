"""Stage `pretrain` on smoke data, as the demo runs it: a single-frame model trained on stills of their own
seed, written as a ViTPose checkpoint that the paper profile's loader reads, its single-frame val AP in MLflow
and the manifest; then a frozen backbone loaded from it stays bit-identical through training."""

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline import pretrain
from vremd.config import ConfigError, load_config
from vremd.model.backbone import ViTBackbone, load_vitpose_checkpoint
from vremd.model.checkpoint_layouts import OFFICIAL
from vremd.model.vremd import build_model
from vremd.train.checkpoints import load_state
from vremd.train.identity import file_sha256
from vremd.train.loop import THREADS_TAG, RunPaths
from vremd.pretrain import STILLS_DIR, check_pretrain_config, export_backbone
from vremd.train.ray_train import fit
from vremd.train.checkpoints import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))


def _run_stage(root: Path, *overrides: str) -> int:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return pretrain.main(["--params", str(root / "params.yaml"), "--index", str(root / "index"), "--raw",
                          str(root / "raw"), "--out", str(root / "pretrain"), "--no-progress", *sets])


@pytest.fixture(scope="module")
def stage(smoke_data, write_params, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    params = write_params(root, model__pretrained_url="pretrain", model__pretrained="weights/vitpose-demo.pth")
    smoke_data.link_into(root)
    assert _run_stage(root) == 0
    return root, load_config(params), json.loads((root / "pretrain" / "manifest.json").read_text())


def test_checkpoint_is_the_trained_backbone_in_the_vitpose_layout(stage):
    root, cfg, manifest = stage
    path = root / "pretrain" / "vitpose-demo.pth"
    assert manifest["needed"] and manifest["sha256"] == file_sha256(path)
    m = cfg.model
    backbone = ViTBackbone((m.img_height, m.img_width), m.patch_size, m.embed_dim, m.depth, m.num_heads, frozen=True)
    assert load_vitpose_checkpoint(backbone, path) == OFFICIAL
    run_dir = next((root / "pretrain" / "runs").iterdir())
    trained = load_state(latest_checkpoint(run_dir))["model"]
    for key, value in backbone.vit.state_dict().items():
        assert torch.equal(value, trained[f"backbone.vit.{key}"]), key
    assert trained["motion_head.final.weight"].shape[0] == len(m.annotated_joints)  # the classic decoder's output


def test_the_same_pretraining_writes_the_same_bytes(stage, tmp_path):
    """The checkpoint holds no run id or time: a rerun gives the same sha256, so `train` can be reused."""
    root, cfg, manifest = stage
    run_dir = next((root / "pretrain" / "runs").iterdir())
    state = load_state(latest_checkpoint(run_dir))["model"]
    again = export_backbone(state, cfg, tmp_path / "again.pth", {"made_by": "vremd pretrain stage",
                                                                  "val_mean_ap": manifest["single_frame_val_ap"]["Mean"]})
    assert file_sha256(again) == manifest["sha256"]


def test_single_frame_val_ap_is_an_mlflow_run_of_the_baseline_on_the_stills(stage):
    root, cfg, manifest = stage
    run = MlflowClient(cfg.tracking.tracking_uri).get_run(manifest["mlflow_run_id"])
    assert run.info.run_name.startswith("smoke-pretrain-")
    assert run.data.metrics["ap/mean"] == pytest.approx(manifest["single_frame_val_ap"]["Mean"], abs=1e-4)
    assert run.data.tags[THREADS_TAG] == str(torch.get_num_threads())  # CPU results depend on it
    params = run.data.params
    assert params["model.hkme"] == params["model.bmd"] == params["model.freeze_backbone"] == "False"
    assert params["data.synthetic.seed"] == str(cfg.pretrain.stills.seed)
    assert set(manifest["single_frame_val_ap"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle",
                                                    "Mean"}


def test_stills_are_their_own_images_and_hold_no_val_video(stage):
    root, cfg, manifest = stage
    digest = lambda folder: {hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*.jpg")}  # noqa: E731
    stills = root / "pretrain" / STILLS_DIR / "raw" / "synthetic"
    assert not list((stills / "annotations").glob("val/*.json"))
    videos = root / "raw" / "synthetic" / "images"
    assert digest(stills / "images") and not digest(stills / "images") & digest(videos)
    assert manifest["stills"]["samples"] > 0


def test_a_recipe_that_is_not_a_separate_pretraining_is_refused(stage, capsys):
    root, cfg, _ = stage
    same_seed = dataclasses.replace(cfg.pretrain, stills=dataclasses.replace(cfg.pretrain.stills,
                                                                             seed=cfg.data.synthetic.seed))
    with pytest.raises(ConfigError, match=r"pretrain.stills.seed: equal to data.synthetic.seed"):
        check_pretrain_config(dataclasses.replace(cfg, pretrain=same_seed))
    assert _run_stage(root, "pretrain.stills.val_videos=2") == 1
    assert "pretrain: error: pretrain.stills.val_videos" in capsys.readouterr().err


def test_frozen_backbone_is_bit_identical_after_training(stage, tmp_path):
    """The paper's protocol: the pretrained backbone is loaded, frozen, and never changes; the rest trains."""
    root, cfg, _ = stage
    weights = root / "pretrain" / "vitpose-demo.pth"
    model = dataclasses.replace(cfg.model, freeze_backbone=True, pretrained=str(weights))
    train = dataclasses.replace(cfg.train, epochs=2, val_every=0)
    paths = RunPaths(index_dir=str(root / "index"), gt_dir=str(root / "raw" / "synthetic" / "annotations" / "val"),
                     run_dir="")
    m = cfg.model
    before = ViTBackbone((m.img_height, m.img_width), m.patch_size, m.embed_dim, m.depth, m.num_heads, frozen=True)
    load_vitpose_checkpoint(before, weights)
    result = fit(dataclasses.replace(cfg, model=model, train=train), paths, tmp_path, "frozen")
    after = result.state["model"]
    for key, value in before.vit.state_dict().items():
        assert torch.equal(after[f"backbone.vit.{key}"], value), key  # bit-identical, every tensor
    optimizer = result.state["optimizer"]
    n_trainable = sum(len(g["params"]) for g in optimizer["param_groups"])
    assert len(optimizer["state"]) == n_trainable  # AdamW moments for the trainable parameters only
    assert n_trainable == sum(1 for k in after if not k.startswith("backbone.") and "running_" not in k
                              and "num_batches" not in k and k != "arch_version")
    torch.manual_seed(train.seed)  # the loop's initialisation: the heads did train
    initial = build_model(model).state_dict()
    assert not torch.equal(initial["motion_head.final.weight"], after["motion_head.final.weight"])


def test_not_needed_when_the_backbone_comes_from_elsewhere(stage, write_params, tmp_path):
    root, _, _ = stage
    other = tmp_path / "other"
    params = write_params(other, model__pretrained_url="")
    (other / "pretrain").mkdir()
    (other / "pretrain" / "vitpose-demo.pth").write_bytes(b"stale")
    rc = pretrain.main(["--params", str(params), "--index", str(root / "index"), "--raw", str(root / "raw"),
                        "--out", str(other / "pretrain"), "--no-progress"])
    assert rc == 0
    assert json.loads((other / "pretrain" / "manifest.json").read_text())["needed"] is False
    assert not (other / "pretrain" / "vitpose-demo.pth").exists()  # no stale checkpoint beside "not needed"
