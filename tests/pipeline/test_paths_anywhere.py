"""Relative paths work wherever the code runs: inside Ray Train workers, and from another working directory.

Before: `model.pretrained: weights/...` raised FileNotFoundError once `train.num_workers >= 1` (Ray
workers run in another cwd), and `evaluate.py` run from another folder silently dropped the Paper column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline import evaluate, train
from tests.predict.predict_fixtures import save_smoke_checkpoint
from vremd.config import smoke_config
from vremd.data.dataset_record import REBUILD, read_record, write_parquet
from vremd.model.vremd import build_model

RELATIVE_STORE = "sqlite:///mlflow.db"  # relative: beside params.yaml


def vitpose_weights(path: Path) -> dict[str, torch.Tensor]:
    """The smoke backbone's random weights in the official ViTPose .pth layout; returns them in timm keys."""
    torch.manual_seed(123)
    vit = build_model(smoke_config().model).backbone.vit.state_dict()
    renames = {"patch_embed.proj.": "backbone.patch_embed.proj.", "norm.": "backbone.last_norm.",
               "blocks.": "backbone.blocks."}
    sd = {}
    for key, value in vit.items():
        if key == "pos_embed":  # (1, N, D) -> (1, 1 + N, D) with a zero class slot
            sd["backbone.pos_embed"] = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
            continue
        old = next(o for o in renames if key.startswith(o))
        sd[renames[old] + key[len(old):]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return vit


@pytest.mark.slow
def test_relative_pretrained_path_reaches_ray_train_workers(no_local_ray, smoke_data, write_params, tmp_path,
                                                            monkeypatch):
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    smoke_data.link_into(root)
    elsewhere.mkdir()
    vit = vitpose_weights(root / "weights" / "vit.pth")
    params = write_params(root, model__pretrained="weights/vit.pth", model__freeze_backbone=True,  # beside params
                          tracking__tracking_uri=RELATIVE_STORE)
    monkeypatch.chdir(elsewhere)  # neither the driver's nor the workers' cwd holds weights/
    code = train.main(["--params", str(params), "--index", str(root / "index"), "--raw", str(root / "raw"),
                       "--out", str(root / "models"), "--curve", str(root / "curve.csv"),
                       "--storage", str(root / "ray_results"), "--set", "train.num_workers=1",
                       "--set", "train.epochs=1", "--no-progress"])
    assert code == 0
    final = torch.load(root / "models" / "final.pt", weights_only=True)
    assert final["config"]["model"]["pretrained"] == str(root / "weights" / "vit.pth")
    assert final["config"]["train"]["num_workers"] == 1
    for key, value in vit.items():  # frozen backbone: the worker loaded exactly these weights
        assert torch.equal(final["model"][f"backbone.vit.{key}"], value), key
    assert (root / "mlflow.db").is_file() and not (elsewhere / "mlflow.db").exists()


def _index_labelled(index: Path, dest: Path, source: str) -> None:
    """A copy of the index folder `index` in `dest` whose records say it was cut from `source` (rows unchanged;
    their shard paths are relative, so `dest` needs a crops/ beside it)."""
    dest.mkdir()
    for split in ("train", "val"):
        path = index / f"{split}.parquet"
        record = read_record(path, "preprocess", REBUILD)
        write_parquet(pd.read_parquet(path), dest / path.name, {**record, "source": source})


def test_evaluate_from_another_folder_keeps_the_paper_column(smoke_data, write_params, tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (root / "raw").mkdir(parents=True)
    elsewhere.mkdir()
    # the smoke data as PoseTrack18-format files: the paper's table 2 is the reference
    (root / "raw" / "posetrack18").symlink_to(smoke_data.dataset_dir, target_is_directory=True)
    (root / "crops").symlink_to(smoke_data.crops, target_is_directory=True)
    _index_labelled(smoke_data.index, root / "index", source="posetrack18")  # evaluate refuses a synthetic one
    params = write_params(root, data__source="posetrack18", tracking__tracking_uri=RELATIVE_STORE)
    save_smoke_checkpoint(root / "final.pt")
    monkeypatch.chdir(elsewhere)
    code = evaluate.main(["--params", str(params), "--model", str(root / "final.pt"), "--index", str(root / "index"),
                          "--raw", str(root / "raw"), "--out", str(root / "reports"),
                          "--metrics", str(root / "ap.json"), "--no-progress"])
    assert code == 0
    table = (root / "reports" / "per_joint.md").read_text()
    assert table.startswith("| Joint | Paper | Ours | Delta |")
    paper_mean = next(line for line in table.splitlines() if line.startswith("| Mean"))
    assert float(paper_mean.split("|")[2]) > 0  # the paper's mean AP, not the "–" of a missing paper row


def test_an_input_file_outside_its_dvc_tracked_folder_is_named(tmp_path, capsys):
    from pipeline.cli_config import REPO_DIR, warn_if_untracked

    warn_if_untracked(str(REPO_DIR / "weights" / "vit.pth"), "weights", "model.pretrained", "train")
    assert capsys.readouterr().err == ""
    warn_if_untracked(str(tmp_path / "vit.pth"), "weights", "model.pretrained", "train")
    assert capsys.readouterr().err == (f"train: warning: model.pretrained {tmp_path / 'vit.pth'} lies outside "
                                       "weights/, so dvc repro cannot see its content change\n")
