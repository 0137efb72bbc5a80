"""The config loader: profiles, overrides, and errors that name the key."""

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from vremd.config import (
    PRETRAINED_CHECKPOINT,
    Config,
    ConfigError,
    config_from_dict,
    config_from_saved,
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
    stages = {name: spec for dvc_file in ("dvc.yaml", "experiments/dvc.yaml")
              for name, spec in yaml.safe_load((root / dvc_file).read_text())["stages"].items()}
    for profile, tree in params["profiles"].items():
        for stage, spec in stages.items():
            for key in spec.get("params", []):
                if not key.startswith("profiles.${profile}."):
                    continue
                node = tree
                for part in key.removeprefix("profiles.${profile}.").split("."):
                    assert isinstance(node, dict) and part in node, f"dvc.yaml {stage}: {key} missing in profile {profile}"
                    node = node[part]


def _config_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, type, str]]:
    """(dotted key, section class, field name) of every field of `cls` and of the section dataclasses below it."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append((prefix + f.name, cls, f.name))
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _config_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def _sections(root: type = Config) -> dict[str, type]:
    """Attribute name -> section class: `model` -> ModelConfig, `stills` and `synthetic` -> SyntheticConfig."""
    return {dotted.rsplit(".", 1)[-1]: typing.get_type_hints(cls)[name]
            for dotted, cls, name in _config_keys(root) if dataclasses.is_dataclass(typing.get_type_hints(cls)[name])}


def _section_reads(tree: ast.AST, sections: dict[str, type]) -> set[tuple[str, str]]:
    """(section class name, field) pairs `tree` reads: `x.model.dim`, or `m.dim` where `m` is bound in the same
    function to a section (`m = cfg.model`, or a parameter annotated `m: ModelConfig`)."""
    classes = {cls.__name__ for cls in sections.values()}
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            named = [n.id for n in ast.walk(node.annotation) if isinstance(n, ast.Name) and n.id in classes]
            named += [n.value for n in ast.walk(node.annotation) if isinstance(n, ast.Constant) and n.value in classes]
            if named:
                bound[node.arg] = named[0]
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) and node.value.attr in sections:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound[target.id] = sections[node.value.attr].__name__
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base = node.value
            if isinstance(base, ast.Attribute) and base.attr in sections:
                reads.add((sections[base.attr].__name__, node.attr))
            elif isinstance(base, ast.Name) and base.id in bound:
                reads.add((bound[base.id], node.attr))
    return reads


def _reads_outside_config(root: type = Config) -> tuple[set[tuple[str, str]], set[str], set[str]]:
    """What vremd/ and pipeline/ (vremd/config.py aside) read: section fields, attribute names, string constants."""
    sections = _sections(root)
    reads, attributes, strings = set(), set(), set()
    repo = PARAMS.parent
    for path in sorted([*(repo / "vremd").rglob("*.py"), *(repo / "pipeline").rglob("*.py")]):
        if path == repo / "vremd" / "config.py":
            continue
        module = ast.parse(path.read_text(), filename=str(path))
        for scope in [module, *(n for n in module.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))]:
            reads |= _section_reads(scope, sections)
        for node in ast.walk(module):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                attributes.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return reads, attributes, strings


def _dead_keys(root: type = Config) -> list[str]:
    reads, attributes, strings = _reads_outside_config(root)
    text = "\n".join(strings)
    return [dotted for dotted, cls, name in _config_keys(root)
            if (cls.__name__, name) not in reads and dotted not in text
            and not (cls is root and name in attributes)]  # a section itself, or `cfg.profile`


def test_every_config_key_is_read_outside_the_config_module():
    """One fact, one key: a key nothing reads is dead (it changes run hashes and misleads), so it must go.

    A key counts as read where code outside vremd/config.py reads its field from its section (`cfg.train.lr`,
    `t.lr` with `t = cfg.train`, `cfg.lr` with `cfg: TrainConfig`), or names the dotted key in a string (keys
    read from a dict or a `--set`). MLflow params and run hashes walk every key: those are no reads."""
    assert _dead_keys() == []


@dataclasses.dataclass(frozen=True)
class _DeadTrain:
    lr: float = 1.0  # `t.lr` is read (vremd/train/loop.py)
    raw_dir: str = "data/raw"  # `context.raw_dir` is another class's field: no read of this one


@dataclasses.dataclass(frozen=True)
class _WithDead:
    profile: str = "x"
    train: _DeadTrain = dataclasses.field(default_factory=_DeadTrain)


def test_a_dead_key_would_be_found():
    assert _dead_keys(_WithDead) == ["train.raw_dir"]


def test_crops_must_be_the_model_input_size():
    tree = config_to_dict(smoke_config())
    tree["crops"]["height"] = 96
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    message = str(err.value)
    assert "crops.height/crops.width 96x48" in message and "model.img_height/model.img_width 64x48" in message
    with pytest.raises(ConfigError, match="crops.height/crops.width 256x96 differ from model.img_height/"
                                          "model.img_width 256x192"):
        load_config(PARAMS, profile="paper", overrides=["crops.width=96"])
    tree["model"]["img_height"] = 96  # both keys together: fine
    assert config_from_dict(tree).crops.height == 96


def test_a_checkpoint_saved_with_retired_keys_still_loads():
    """Checkpoints of earlier checkouts carry data.raw_dir, augment.heatmap_stride and model.num_frames."""
    saved = config_to_dict(smoke_config())
    saved["data"]["raw_dir"] = "/somewhere/data/raw"
    saved["augment"]["heatmap_stride"] = 4
    saved["model"]["num_frames"] = 3
    assert config_from_saved(saved) == smoke_config()
    with pytest.raises(ConfigError, match="data.raw_dir: unknown key"):
        config_from_dict(saved)  # params.yaml and --set: no such key
    saved["augment"]["heatmap_stride"] = 8
    with pytest.raises(ConfigError, match="augment.heatmap_stride: saved as 8, but this code fixes it at 4"):
        config_from_saved(saved)
