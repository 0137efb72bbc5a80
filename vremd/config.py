"""Typed, frozen configuration: params.yaml + profile + overrides -> `Config`.

Only CLIs read params.yaml; the library receives these dataclasses (or one section of them).
Unknown keys and wrong types fail with the dotted key, what was expected and a close match.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from vremd.errors import InputError

DataSource = Literal["synthetic", "posetrack17", "posetrack18", "posetrack21"]
MotionAttention = Literal["dc", "da", "dca"]
BadInputPolicy = Literal["error", "skip"]
EvalProtocol = Literal["posetrack18", "posetrack21"]


class ConfigError(InputError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of the generated PoseTrack-format dataset."""

    seed: int = 0
    train_videos: int = 24
    val_videos: int = 8
    min_frames: int = 20
    max_frames: int = 60
    image_height: int = 240
    image_width: int = 320
    max_people: int = 4
    unlabeled_fraction: float = 0.25


@dataclass(frozen=True)
class Archives:
    """One real dataset's archives."""

    urls: tuple[str, ...] = ()  # archive URLs or local paths
    sha256: tuple[str, ...] = ()  # one per url, or empty to skip verification


@dataclass(frozen=True)
class TableArchives:
    """The archives of each dataset a paper table is measured on, for a profile whose own `data.source` is another:
    experiments/dvc.yaml's `data-<source>` stage prepares it in data/tables/<source>/ (pipeline/table_data.py)."""

    posetrack17: Archives = field(default_factory=Archives)  # tables 1, 4, 5, 6
    posetrack18: Archives = field(default_factory=Archives)  # table 2
    posetrack21: Archives = field(default_factory=Archives)  # table 3


@dataclass(frozen=True)
class DataConfig:
    """Where raw PoseTrack-layout data comes from and how bad input is treated."""

    source: DataSource = "synthetic"  # the stages find it at `<--raw>/<source>`
    urls: tuple[str, ...] = ()  # archive URLs or local paths (real data only)
    sha256: tuple[str, ...] = ()  # one per url, or empty to skip verification
    val_boxes: str = "gt"  # "gt", "detect" (the `detect` stage's boxes) or a path to a COCO detection json
    on_bad_input: BadInputPolicy = "error"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    table_archives: TableArchives = field(default_factory=TableArchives)  # the tables' other datasets


@dataclass(frozen=True)
class CropsConfig:
    """3-frame person crops: box enlargement, output size, parallelism."""

    enlarge: float = 1.25  # the paper enlarges the person box by 25%
    height: int = 256
    width: int = 192
    jpeg_quality: int = 95  # crops are stored as JPEGs of this quality; 0 stores raw uint8 pixels
    workers: int = 2  # speed only: not a DVC params dependency
    min_box_px: float = 4.0  # train boxes smaller than this are a counted skip (val persons are scored at any size)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of crops (the paper's recipe) and target encoding.

    The heatmap stride is no key: it is the model's `vremd.model.heads.HEATMAP_STRIDE`."""

    rotation_deg: float = 45.0
    scale_min: float = 0.65
    scale_max: float = 1.35
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    sigma_px: float = 2.0  # Gaussian sigma in heatmap pixels


@dataclass(frozen=True)
class ModelConfig:
    """VREMD architecture sizes and the paper's ablation switches (read only in vremd/model/vremd.py)."""

    # backbone (timm VisionTransformer, ViTPose layout)
    img_height: int = 256
    img_width: int = 192
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    freeze_backbone: bool = True
    pretrained: str = ""  # path to a ViTPose COCO .pth, empty for random init
    pretrained_url: str = ""  # where the `weights` stage fetches `pretrained` from (URL, local path, or `pretrain`)
    pretrained_sha256: str = ""  # its sha256, or a prefix of >= 8 hex digits
    # VREMD modules
    num_joints: int = 17  # keypoint slots of the output (PoseTrack's 17 COCO-order slots)
    # the slots the dataset annotates: J keypoint tokens and heatmap channels; the other slots are output as
    # zeros. PoseTrack17/18/21: every slot but the ears (3, 4), = vremd.data.joints.ANNOTATED_JOINTS
    annotated_joints: tuple[int, ...] = (0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
    dim: int = 256  # width of HKME / BMD tokens; equal to embed_dim: no projection of the backbone tokens
    heads: int = 8
    head_channels: int = 256  # deconvolution channels of the upsampling heatmap head (ViTPose: 256)
    hkme_depth: int = 2
    aggregation_depth: int = 1
    adc_blocks: int = 2
    num_points: int = 4  # K sampling points per query in deformable attention
    mlp_ratio: float = 2.0
    # ablation switches (paper tables 4-6)
    hkme: bool = True
    bmd: bool = True
    human_mask: bool = True
    keypoint_mask: bool = True
    motion_attention: MotionAttention = "dca"
    bidirectional_separation: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule, Ray scaling, checkpoints."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lr_step_epochs: tuple[int, ...] = (16,)
    lr_gamma: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 1  # Ray Train workers; 0 runs the loop in-process
    use_gpu: bool = False
    loader_workers: int = 0  # torch DataLoader processes per Ray worker (speed only)
    checkpoint_keep: int = 2
    max_failures: int = 1
    val_every: int = 1  # validate every N epochs (0: only at the end)
    flip_test: bool = False
    max_train_samples: int = 0  # 0: all; >0 caps samples per epoch (demo speed)


@dataclass(frozen=True)
class PretrainConfig:
    """Stage `pretrain`, the demo's stand-in for ViTPose on COCO (runs when `model.pretrained_url` is `pretrain`).

    The backbone with the classic decoder (the baseline row's model, which reads only the key frame) trains
    from scratch as a single-frame top-down pose model on synthetic stills of their own seed, and its backbone
    is written as a ViTPose checkpoint (`PRETRAINED_CHECKPOINT`) for the `weights` stage to install. The
    schedule is its own; `train.weight_decay`, `train.lr_gamma`, `train.grad_clip` and `train.use_gpu` are shared.
    """

    stills: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(
        seed=1, train_videos=400, val_videos=0, min_frames=4, max_frames=4, max_people=6, unlabeled_fraction=0.0))
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    lr_step_epochs: tuple[int, ...] = (7,)
    seed: int = 0


@dataclass(frozen=True)
class DetectConfig:
    """Person detector for test-time boxes (`vremd.detect`) and the DCPose-style post-processing of its boxes."""

    model: str = "fasterrcnn_resnet50_fpn_v2"  # or fasterrcnn_mobilenet_v3_large_fpn (CPU)
    weights: str = ""  # local state dict; empty: torchvision's download and cache
    score_threshold: float = 0.2  # torchvision keeps boxes scoring above it (DCPose VAL.IMAGE_THRE 0.2, kept at >=)
    nms_iou: float = 0.5  # box NMS inside the detector (torchvision's default)
    min_size: int = 800  # input resize: shorter side (torchvision's default) ...
    max_size: int = 1333  # ... longer side at most
    batch_size: int = 4
    oks_nms: float = 0.9  # OKS-NMS of the predicted poses per frame (DCPose VAL.OKS_THRE)
    keypoint_threshold: float = 0.2  # joints above it rescore a person (DCPose VAL.IN_VIS_THRE)


@dataclass(frozen=True)
class EvalConfig:
    """Which per-joint AP protocol scores predictions."""

    protocol: EvalProtocol = "posetrack18"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow location and naming."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "vremd"
    run_name: str = "demo"


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run."""

    profile: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ---------------------------------------------------------------------------------------------
# building dataclasses from plain mappings, strictly


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked (and, for tuples and int->float, converted) against type `tp`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, found {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, found {value!r}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, found {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, found {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")  # pragma: no cover


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"{dotted}: unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree["a"]["b"] = value` for `dotted = "a.b"`, creating missing mappings."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set a key below the non-mapping {part!r}")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`"model.bmd=false"` -> `("model.bmd", False)`; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. model.bmd=false")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem}); "
                          "put quotes around a string value") from None


def check_cross_fields(cfg: Config) -> Config:
    """`cfg`, or ConfigError where two keys that must agree do not: the crops are the model's input."""
    crop_hw, model_hw = (cfg.crops.height, cfg.crops.width), (cfg.model.img_height, cfg.model.img_width)
    if crop_hw != model_hw:
        raise ConfigError(f"crops.height/crops.width {crop_hw[0]}x{crop_hw[1]} differ from model.img_height/"
                          f"model.img_width {model_hw[0]}x{model_hw[1]}: the crops are the model's input")
    return cfg


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Build a `Config` from a plain (possibly partial) mapping, e.g. one produced by `config_to_dict`."""
    return check_cross_fields(_build(Config, values, ""))


# Keys earlier checkouts wrote into checkpoints and MLflow params, and the one value of each this code still
# honours (None: any; `data.raw_dir` was a path nothing read). A config built from params.yaml refuses them as unknown.
RETIRED_KEYS: dict[str, Any] = {"data.raw_dir": None, "augment.heatmap_stride": 4, "model.num_frames": 3}


def is_retired(dotted: str, value: Any) -> bool:
    """True for a retired key whose saved `value` this code honours (drop it); ConfigError for another value."""
    if dotted not in RETIRED_KEYS:
        return False
    fixed = RETIRED_KEYS[dotted]
    if fixed is not None and value not in (fixed, str(fixed)):
        raise ConfigError(f"{dotted}: saved as {value!r}, but this code fixes it at {fixed} (no longer a key)")
    return True


def config_from_saved(values: Mapping[str, Any]) -> Config:
    """`config_from_dict` of a config an earlier run saved (a checkpoint's): `RETIRED_KEYS` are dropped."""
    tree = copy.deepcopy(dict(values))
    for dotted in RETIRED_KEYS:
        section, leaf = dotted.split(".")
        node = tree.get(section)
        if isinstance(node, dict) and leaf in node and is_retired(dotted, node[leaf]):
            del node[leaf]
    return config_from_dict(tree)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists): what crosses process boundaries."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values (`model.bmd: True`), the MLflow params of a run."""
    out: dict[str, Any] = {}
    for key, value in (config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# Keys that hold a file or folder (or a URI that may be one). `load_config` makes them absolute once, on the
# driver: relative values in a params file are relative to that file's folder (the repo root for params.yaml),
# `--set` values to the working directory. Workers and trials then read the same files whatever their cwd.
PATH_KEYS = ("data.urls", "data.val_boxes", "model.pretrained", "model.pretrained_url", "detect.weights",
             "tracking.tracking_uri",
             *(f"data.table_archives.{f.name}.urls" for f in dataclasses.fields(TableArchives)))
_NOT_A_PATH = {"data.val_boxes": "gt", "model.pretrained": "", "model.pretrained_url": "", "detect.weights": ""}
# `data.val_boxes: detect` names the file the `detect` stage writes (pipeline/detect.py), relative to the repo
DETECTED_VAL_BOXES = "detections/detected/val.json"
# `model.pretrained_url: pretrain` names the checkpoint the `pretrain` stage writes (pipeline/pretrain.py)
PRETRAINED_CHECKPOINT = "pretrain/vitpose-demo.pth"


def _absolute(value: str, base: Path) -> str:
    return os.path.normpath(Path(base) / Path(value).expanduser())


def resolve_path_value(key: str, value: Any, base: Path) -> Any:
    """`value` of the path key `key` made absolute against `base`; URLs, "gt", "" and non-strings are kept."""
    if isinstance(value, (list, tuple)):
        return [resolve_path_value(key, v, base) for v in value]
    if not isinstance(value, str) or value == _NOT_A_PATH.get(key):
        return value
    if key == "data.val_boxes" and value == "detect":
        value = DETECTED_VAL_BOXES
    if key == "model.pretrained_url" and value == "pretrain":
        value = PRETRAINED_CHECKPOINT
    if key == "tracking.tracking_uri":
        if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
            return "sqlite:///" + _absolute(value[len("sqlite:///"):], base)
        return value if "://" in value or value.startswith("databricks") else _absolute(value, base)
    return value if "://" in value else _absolute(value, base)


def resolve_paths(tree: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """A copy of a plain config tree with every `PATH_KEYS` entry (given, or its default) absolute against `base`."""
    out = copy.deepcopy(dict(tree))
    defaults = flatten(Config())
    for dotted in PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if isinstance(node, dict):  # anything else is reported by the typed build
            node[leaf] = resolve_path_value(dotted, node.get(leaf, defaults[dotted]), base)
    return out


def load_config(
    params_path: str | Path = "params.yaml",
    profile: str | None = None,
    overrides: typing.Iterable[str] = (),
) -> Config:
    """params.yaml -> the chosen profile's section, with `KEY=VALUE` overrides applied on top.

    params.yaml holds `profile: <name>` and `profiles: {<name>: {data: ..., model: ...}}`. Paths
    (`PATH_KEYS`) come back absolute: relative to the params file's folder, or for `--set` to the cwd.
    """
    path = Path(params_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("profiles"), Mapping):
        raise ConfigError(f"{path}: expected a top-level 'profiles' mapping")
    name = profile or raw.get("profile", "demo")
    profiles = raw["profiles"]
    if name not in profiles:
        raise ConfigError(f"{path}: profile: unknown profile {name!r}, expected one of {sorted(profiles)}")
    if not isinstance(profiles[name] or {}, Mapping):
        raise ConfigError(f"{path}: profiles.{name}: expected a mapping of config sections")
    tree = resolve_paths(profiles[name] or {}, path.resolve().parent)
    tree["profile"] = name
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, resolve_path_value(key, value, Path.cwd()) if key in PATH_KEYS else value)
    try:
        return config_from_dict(tree)
    except ConfigError as exc:
        raise ConfigError(f"{path} (profile {name}): {exc}") from None


def smoke_config(**section_overrides: Any) -> Config:
    """The tiny test configuration: 64x48 crops, 4x3 tokens, D=32, one block per stage, batch 2."""
    cfg = Config(
        profile="smoke",
        data=DataConfig(
            synthetic=SyntheticConfig(
                seed=0, train_videos=2, val_videos=2, min_frames=6, max_frames=8,
                image_height=96, image_width=128, max_people=2, unlabeled_fraction=0.25,
            )
        ),
        crops=CropsConfig(height=64, width=48, workers=1),
        augment=AugmentConfig(),
        model=ModelConfig(
            img_height=64, img_width=48, patch_size=16, embed_dim=32, depth=1, num_heads=2,
            dim=32, heads=2, head_channels=32, hkme_depth=1, aggregation_depth=1, adc_blocks=1, num_points=4,
            mlp_ratio=2.0,
        ),
        train=TrainConfig(epochs=1, batch_size=2, lr=1e-3, lr_step_epochs=(), num_workers=0,
                          checkpoint_keep=1, max_failures=0),
        pretrain=PretrainConfig(
            stills=SyntheticConfig(seed=1, train_videos=2, val_videos=0, min_frames=2, max_frames=2, image_height=96,
                                   image_width=128, max_people=2, unlabeled_fraction=0.0),
            epochs=1, batch_size=2, lr=1e-3, lr_step_epochs=()),
        tracking=TrackingConfig(run_name="smoke"),
    )
    return dataclasses.replace(cfg, **section_overrides)
