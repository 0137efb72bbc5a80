"""The config loader: profiles, overrides, and errors that name the key."""

from pathlib import Path

import pytest

from vremd.config import (
    PRETRAINED_CHECKPOINT,
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    flatten,
    load_config,
    smoke_config,
)

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_both_profiles_load_and_differ():
    demo = load_config(PARAMS, profile="demo")
    paper = load_config(PARAMS, profile="paper")
    assert demo.profile == "demo" and paper.profile == "paper"
    assert (paper.model.embed_dim, paper.model.depth, paper.model.num_heads) == (1024, 24, 16)
    assert (paper.crops.height, paper.crops.width) == (256, 192)
    assert paper.train.lr == pytest.approx(2e-3) and paper.train.lr_step_epochs == (16,)
    assert demo.data.source == "synthetic" and paper.data.source == "posetrack18"
    assert demo.model.img_height == demo.crops.height and demo.model.img_width == demo.crops.width


def test_overrides_are_typed():
    cfg = load_config(PARAMS, overrides=["model.bmd=false", "train.lr_step_epochs=[3, 5]", "train.lr=1"])
    assert cfg.model.bmd is False
    assert cfg.train.lr_step_epochs == (3, 5)
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.motion_atention=dc", "model.motion_atention: unknown key (did you mean model.motion_attention?)"),
        ("model.motion_attention=xx", "model.motion_attention: expected one of 'dc' | 'da' | 'dca', found 'xx'"),
        ("train.epochs=2.5", "train.epochs: expected an integer, found 2.5"),
        ("model.bmd=1", "model.bmd: expected true or false, found 1"),
        ("crops=3", "crops: expected a mapping of CropsConfig fields"),
        ("train.lr_step_epochs=4", "train.lr_step_epochs: expected a list"),
        ("nosuchsection.x=1", "nosuchsection: unknown key"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PARAMS, overrides=[override])
    assert message in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("profiles: {demo: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: {bmd: true}\n")
    with pytest.raises(ConfigError, match="top-level 'profiles'"):
        load_config(flat)
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_config(PARAMS, profile="nope")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(PARAMS, overrides=["model.bmd"])


def test_round_trip_through_plain_dict():
    cfg = smoke_config()
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    flat = flatten(cfg)
    assert flat["model.motion_attention"] == "dca"
    assert flat["train.lr_step_epochs"] == []
    assert all("." in key or key == "profile" for key in flat)


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.model.bmd = False  # type: ignore[misc]


def test_paths_are_resolved_once_against_the_params_folder_or_the_cwd(tmp_path, monkeypatch):
    """Relative paths broke where Ray workers and Tune trials change the working directory."""
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    (repo / "params.yaml").write_text(
        "profile: p\nprofiles:\n  p:\n    model: {pretrained: weights/vit.pth}\n"
        "    data: {urls: [https://host/a.zip, archives/b.zip], val_boxes: gt}\n")
    monkeypatch.chdir(elsewhere)
    cfg = load_config(repo / "params.yaml")
    assert cfg.model.pretrained == str(repo / "weights" / "vit.pth")  # the file's folder, not the cwd
    assert cfg.data.urls == ("https://host/a.zip", str(repo / "archives" / "b.zip"))
    assert cfg.data.raw_dir == str(repo / "data" / "raw")  # a default is a path too
    assert cfg.data.val_boxes == "gt" and cfg.tracking.tracking_uri == f"sqlite:///{repo / 'mlflow.db'}"
    over = load_config(repo / "params.yaml", overrides=["model.pretrained=mine.pth", "data.val_boxes=d/dets.json"])
    assert over.model.pretrained == str(elsewhere / "mine.pth")  # typed on the command line: the cwd
    assert over.data.val_boxes == str(elsewhere / "d" / "dets.json")
    assert load_config(repo / "params.yaml", overrides=["model.pretrained=''"]).model.pretrained == ""
    assert load_config(PARAMS, profile="demo").model.pretrained == str(PARAMS.parent / "weights" / "vitpose-demo.pth")
    # `pretrain` names the pretrain stage's checkpoint, next to the params file; a URL stays a URL
    assert load_config(PARAMS, profile="demo").model.pretrained_url == str(PARAMS.parent / PRETRAINED_CHECKPOINT)
    assert load_config(PARAMS, profile="paper").model.pretrained_url.startswith("https://")


def test_every_param_a_dvc_stage_names_exists_in_every_profile():
    """DVC refuses to run a stage whose `params:` key is missing from params.yaml: `make demo` would fail."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for profile, tree in params["profiles"].items():
        for stage, spec in stages.items():
            for key in spec.get("params", []):
                if not key.startswith("profiles.${profile}."):
                    continue
                node = tree
                for part in key.removeprefix("profiles.${profile}.").split("."):
                    assert isinstance(node, dict) and part in node, f"dvc.yaml {stage}: {key} missing in profile {profile}"
                    node = node[part]
