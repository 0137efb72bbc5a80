"""Typed, frozen configuration: params.yaml + profile + overrides -> `Config`.

Only CLIs read params.yaml; the library receives these dataclasses (or one section of them).
Unknown keys and wrong types fail with the dotted key, what was expected and a close match.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml

from vremd.errors import InputError

DataSource = Literal["synthetic", "posetrack17", "posetrack18", "posetrack21"]
MotionAttention = Literal["dc", "da", "dca"]
BadInputPolicy = Literal["error", "skip"]
EvalProtocol = Literal["posetrack18", "posetrack21"]


class ConfigError(InputError):
    """A configuration value is missing, unknown, of the wrong type or out of range; the message names the key."""


@dataclass(frozen=True)
class Range:
    """The values a numeric key (or each item of a tuple key) may take, declared on the field's type:
    `epochs: PositiveInt` or `Annotated[float, Range(0, 1, high_open=True)]`. None leaves that side unbounded;
    an open side excludes the bound itself. The strict builder checks it for params.yaml, `--set`, configs
    rebuilt from dicts (Ray workers, Tune trials) and saved ones (checkpoints, MLflow params)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        """True where `value` lies within the range."""
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        """`>= 1`, `> 0`, `in [0, 1]`, `in [0, 1)`: the range as an error message states it."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


class Neutral:
    """Marks a key that changes how fast or how robustly a run goes, never what it outputs (worker counts,
    retries, kept checkpoints, where MLflow logs): no DVC params dep and no part of a run's identity."""


NEUTRAL = Neutral()  # `workers: Annotated[PositiveInt, NEUTRAL] = 2`

# Every int and float key (and tuple item) declares its range with one of these or its own `Range`:
# tests/test_config_ranges.py fails for a numeric key without one.
Count = Annotated[int, Range(0)]  # 0, 1, 2, ...
PositiveInt = Annotated[int, Range(1)]
Seed = Annotated[int, Range(0)]  # numpy and torch generators take seeds >= 0
Positive = Annotated[float, Range(0, low_open=True)]
NonNegative = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]  # probabilities, IoU / OKS / score thresholds


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of the generated PoseTrack-format dataset."""

    seed: Seed = 0
    # video names carry 6 digits: max(100, train_videos) + val_videos must stay below 1,000,000
    train_videos: Annotated[int, Range(0, 499_999)] = 24
    val_videos: Annotated[int, Range(0, 499_999)] = 8
    min_frames: Annotated[int, Range(1, 9_999)] = 20  # <= max_frames (check_cross_fields)
    max_frames: Annotated[int, Range(1, 9_999)] = 60
    image_height: Annotated[int, Range(32)] = 240  # the renderer draws people of at least a few pixels
    image_width: Annotated[int, Range(32)] = 320
    max_people: PositiveInt = 4
    unlabeled_fraction: Annotated[float, Range(0, 1, high_open=True)] = 0.25  # 1 would label no frame


@dataclass(frozen=True)
class DataConfig:
    """Where raw PoseTrack-layout data comes from and how bad input is treated."""

    source: DataSource = "synthetic"  # the stages find it at `<--raw>/<source>`
    urls: tuple[str, ...] = ()  # archive URLs or local paths (real data only)
    sha256: tuple[str, ...] = ()  # one per url, or empty to skip verification
    val_boxes: str = "gt"  # "gt", "detect" (the `detect` stage's boxes) or a path to a COCO detection json
    on_bad_input: BadInputPolicy = "error"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class CropsConfig:
    """3-frame person crops: box enlargement, output size, parallelism."""

    enlarge: Positive = 1.25  # the paper enlarges the person box by 25%
    height: PositiveInt = 256
    width: PositiveInt = 192
    jpeg_quality: Annotated[int, Range(0, 100)] = 95  # crops are JPEGs of this quality (1-100); 0: raw uint8 pixels
    workers: Annotated[Count, NEUTRAL] = 2  # processes (0 and 1: in this one); speed only: not a DVC params dependency
    # train boxes smaller than this are a counted skip (val persons are scored at any size)
    min_box_px: NonNegative = 4.0
    # Train crops are stored on a canvas of the frame's pixels around the crop (same pixel scale; black only where
    # the frame ends), so that augment.borders "frame" warps show the scene: every rotation of the crop zoomed out
    # by this factor stays on it (margins: vremd.data.boxes.warp_margin_px; 192x256 at 1.35: 120 x 88 px, a
    # 432x432 canvas). 0: the crop only (val crops never have a margin).
    train_context_scale: Annotated[float, Range(0, 3)] = 1.35


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of crops and target encoding (vremd/data/augment.py).

    Defaults: the paper's recipe ("rotation +-45, scale 0.65-1.35, half body, flip, consistent with PoseWarper and
    DCPose") as DCPose samples it: Pose-Group/DCPose `configs/posetimation/DcPose/Base_PoseTrack17.yaml:97-101`
    (FLIP, NUM_JOINTS_HALF_BODY 8, PROB_HALF_BODY 0.3, ROT_FACTOR 45, SCALE_FACTOR 0.35) drawn as in
    `datasets/zoo/posetrack/PoseTrack.py:197-219`. The heatmap stride is no key: it is the model's
    `vremd.model.heads.HEATMAP_STRIDE`."""

    # "dcpose": DCPose's distributions (the keys' dcpose meanings below); "uniform": before issue 28, rotation
    # uniform in +-rotation_deg on every sample and zoom uniform in [scale_min, scale_max]
    sampling: Literal["dcpose", "uniform"] = "dcpose"
    # "frame": warp the stored train canvas (crops.train_context_scale), so rotations and zoom-outs show the scene
    # as DCPose's warp of the whole frame does; "crop": warp the 1.25x crop only, black outside it (before issue 28)
    borders: Literal["frame", "crop"] = "frame"
    rotation_deg: Annotated[float, Range(0, 180)] = 45.0  # dcpose: std of the angle (ROT_FACTOR); uniform: half-range
    rotation_clip_deg: Annotated[float, Range(0, 180)] = 90.0  # dcpose: |angle| clip, 2 x ROT_FACTOR (PoseTrack.py:209)
    rotation_prob: Fraction = 0.6  # dcpose: the share of samples rotated at all (PoseTrack.py:210)
    scale_sigma: Fraction = 0.35  # dcpose: std of the zoom 1 + N(0, sigma) (SCALE_FACTOR, PoseTrack.py:208)
    # dcpose: the zoom's clip, 1 -+ SCALE_FACTOR; uniform: its ends (scale_min <= scale_max: check_cross_fields)
    scale_min: Positive = 0.65
    scale_max: Annotated[float, Range(0, 3, low_open=True)] = 1.35  # > 1 zooms out
    flip_prob: Fraction = 0.5  # FLIP: true, taken when random() <= 0.5 (PoseTrack.py:212)
    half_body_prob: Fraction = 0.3  # PROB_HALF_BODY, when > 8 joints are visible (PoseTrack.py:198)
    sigma_px: Positive = 2.0  # Gaussian sigma in heatmap pixels (0 would make every target zero)


@dataclass(frozen=True)
class ModelConfig:
    """VREMD architecture sizes and the paper's ablation switches (read only in vremd/model/vremd.py)."""

    # backbone (timm VisionTransformer, ViTPose layout)
    img_height: PositiveInt = 256
    img_width: PositiveInt = 192
    patch_size: PositiveInt = 16
    embed_dim: PositiveInt = 1024
    depth: PositiveInt = 24
    num_heads: PositiveInt = 16
    freeze_backbone: bool = True
    pretrained: str = ""  # path to a ViTPose COCO .pth, empty for random init
    pretrained_url: str = ""  # where the `weights` stage fetches `pretrained` from (URL, local path, or `pretrain`)
    pretrained_sha256: str = ""  # its sha256, or a prefix of >= 8 hex digits
    # VREMD modules
    num_joints: PositiveInt = 17  # keypoint slots of the output (PoseTrack's 17 COCO-order slots)
    # the slots the dataset annotates: J keypoint tokens and heatmap channels; the other slots are output as
    # zeros. PoseTrack17/18/21: every slot but the ears (3, 4), = vremd.data.joints.ANNOTATED_JOINTS
    annotated_joints: tuple[Count, ...] = (0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
    dim: PositiveInt = 256  # width of HKME / BMD tokens; equal to embed_dim: no projection of the backbone tokens
    heads: PositiveInt = 8
    head_channels: PositiveInt = 256  # deconvolution channels of the upsampling heatmap head (ViTPose: 256)
    hkme_depth: PositiveInt = 2
    aggregation_depth: PositiveInt = 1
    adc_blocks: PositiveInt = 2
    num_points: PositiveInt = 4  # K sampling points per query in deformable attention
    mlp_ratio: Positive = 2.0
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

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 32  # per Ray Train worker
    lr: Positive = 2e-3
    weight_decay: NonNegative = 1e-4
    lr_step_epochs: tuple[PositiveInt, ...] = (16,)  # the lr is multiplied by lr_gamma after each of these epochs
    lr_gamma: Positive = 0.1
    grad_clip: NonNegative = 1.0  # max gradient norm; 0: no clipping
    seed: Seed = 0
    num_workers: Count = 1  # Ray Train workers; 0 runs the loop in-process
    use_gpu: bool = False
    loader_workers: Annotated[Count, NEUTRAL] = 0  # torch DataLoader processes per Ray worker (speed only)
    checkpoint_keep: Annotated[PositiveInt, NEUTRAL] = 2  # checkpoints kept in the run folder (not a stage output)
    # worker-group restarts (Ray's FailureConfig; -1: without limit); a restart resumes exactly where it stopped
    max_failures: Annotated[int, Range(-1), NEUTRAL] = 1
    val_every: Count = 1  # validate every N epochs (0: only at the end)
    flip_test: bool = False
    max_train_samples: Count = 0  # 0: all; >0 caps samples per epoch (demo speed)


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
    epochs: PositiveInt = 8
    batch_size: PositiveInt = 32
    lr: Positive = 2e-3
    lr_step_epochs: tuple[PositiveInt, ...] = (7,)
    seed: Seed = 0


@dataclass(frozen=True)
class DetectConfig:
    """Person detector for test-time boxes (`vremd.detect`) and the post-processing of the poses of scored boxes
    (`vremd.eval.postprocess`, shared by validation and predict; GT boxes are never post-processed)."""

    model: str = "fasterrcnn_resnet50_fpn_v2"  # or fasterrcnn_mobilenet_v3_large_fpn (CPU)
    weights: str = ""  # local state dict; empty: torchvision's download and cache
    # boxes scoring >= it are kept (DCPose PoseTrack.py:377 drops `score < IMAGE_THRE`, 0.2): by the detector, by
    # the crops stage reading a detection json, by predict reading one
    score_threshold: Fraction = 0.2
    nms_iou: Fraction = 0.5  # box NMS inside the detector (torchvision's default)
    min_size: PositiveInt = 800  # input resize: shorter side (torchvision's default) ...
    max_size: PositiveInt = 1333  # ... longer side at most (>= min_size, check_cross_fields)
    # images per forward pass; not speed-only: torchvision pads a batch to its largest image, and frames of other
    # sizes (PoseTrack videos differ) then see other padding than alone
    batch_size: PositiveInt = 4
    # "none": every kept box's pose is written (DCPose); "oks_nms": rescoring + OKS-NMS as MMPose's PoseTrack18Metric
    postprocess: Literal["none", "oks_nms"] = "none"
    oks_nms: Fraction = 0.9  # oks_nms: keep a pose while its OKS with every kept one is <= this (MMPose nms_thr)
    keypoint_threshold: Fraction = 0.2  # oks_nms: joints above it rescore a person (MMPose keypoint_score_thr)


@dataclass(frozen=True)
class EvalConfig:
    """Which per-joint AP protocol scores predictions."""

    protocol: EvalProtocol = "posetrack18"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow location and naming: where results are logged, never what they are."""

    tracking_uri: Annotated[str, NEUTRAL] = "sqlite:///mlflow.db"
    experiment: Annotated[str, NEUTRAL] = "vremd"
    run_name: Annotated[str, NEUTRAL] = "demo"


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
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked (and, for tuples and int->float, converted) against type `tp` and its `Range`."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *notes = typing.get_args(tp)
        checked = _coerce(value, base, key)
        for bound in (n for n in notes if isinstance(n, Range)):
            if not bound.admits(checked):
                kind = "an integer" if base is int else "a number"
                raise ConfigError(f"{key}: expected {kind} {bound.describe()}, found {value!r}")
        return checked
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, found {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")  # pragma: no cover


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
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


def leaf_types(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of `cls` ("train.lr", "pretrain.stills.seed") -> its declared type, `Annotated`
    notes (`Range`, `NEUTRAL`) kept."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        if dataclasses.is_dataclass(tp):
            out.update(leaf_types(tp, f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out


def neutral_keys() -> frozenset[str]:
    """The dotted keys marked `NEUTRAL`: they never change an output (no DVC params dep, not in run identities)."""
    return frozenset(key for key, tp in leaf_types().items()
                     if typing.get_origin(tp) is Annotated and NEUTRAL in typing.get_args(tp)[1:])


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
    """`cfg`, or ConfigError where two keys that must agree do not: the crops are the model's input, and each
    lower bound of a pair is at most its upper one."""
    crop_hw, model_hw = (cfg.crops.height, cfg.crops.width), (cfg.model.img_height, cfg.model.img_width)
    if crop_hw != model_hw:
        raise ConfigError(f"crops.height/crops.width {crop_hw[0]}x{crop_hw[1]} differ from model.img_height/"
                          f"model.img_width {model_hw[0]}x{model_hw[1]}: the crops are the model's input")
    pairs = [("augment.scale_min", "augment.scale_max"), ("data.synthetic.min_frames", "data.synthetic.max_frames"),
             ("pretrain.stills.min_frames", "pretrain.stills.max_frames"), ("detect.min_size", "detect.max_size")]
    flat = flatten(cfg)
    for low_key, high_key in pairs:
        if flat[low_key] > flat[high_key]:
            raise ConfigError(f"{low_key} {flat[low_key]} is greater than {high_key} {flat[high_key]}: "
                              f"expected {low_key} <= {high_key}")
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
             "tracking.tracking_uri")
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
    for dotted in PATH_KEYS:
        section, leaf = dotted.split(".")
        node = out.setdefault(section, {})
        if isinstance(node, dict):  # anything else is reported by the typed build
            default = getattr(typing.get_type_hints(Config)[section](), leaf)
            node[leaf] = resolve_path_value(dotted, node.get(leaf, default), base)
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
    """The tiny test configuration: 64x48 crops, 4x3 tokens, D=32, one block per stage, batch 2, through the
    strict builder (sections given as `section_overrides` are checked too)."""
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
    return config_from_dict(config_to_dict(dataclasses.replace(cfg, **section_overrides)))  # ranges checked
