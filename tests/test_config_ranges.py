"""Every numeric config key declares its range on its field, and the strict builder refuses a value outside it
naming the dotted key, the range and the value. Before (issue 32): `augment.sigma_px=0` (all targets zero),
`train.batch_size=0`, `augment.flip_prob=1.5`, `train.max_train_samples=-5`, `train.lr=-1`, `scale_min > scale_max`
and `train.num_workers=-1` were accepted, the last three failing with a traceback after an MLflow run was opened.

The keys are derived from the dataclasses: a new int or float key without a `Range` fails here.
"""

from __future__ import annotations

import math
import typing
from typing import Annotated

import pytest

from vremd.config import (Config, ConfigError, Range, TrainConfig, config_from_dict, config_from_saved, config_to_dict,
                          leaf_types, neutral_keys, set_dotted, smoke_config)


def _unwrap(tp: typing.Any) -> tuple[typing.Any, list[typing.Any]]:
    """(base type, Annotated notes) of a declared type; the item type of a tuple key."""
    if typing.get_origin(tp) is tuple:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is Annotated:
        base, *notes = typing.get_args(tp)
        return base, notes
    return tp, []


NUMERIC = {key: _unwrap(tp) for key, tp in leaf_types().items() if _unwrap(tp)[0] in (int, float)}


def _range(key: str) -> Range:
    ranges = [n for n in NUMERIC[key][1] if isinstance(n, Range)]
    assert len(ranges) == 1, f"{key}: declare exactly one Range on its type (e.g. `PositiveInt`), found {ranges}"
    return ranges[0]


def _outside(bound: Range, kind: type) -> list[float]:
    """Values just outside `bound` on each bounded side."""
    step = 1 if kind is int else 0.5
    values = []
    if bound.low is not None:
        values.append(bound.low if bound.low_open else bound.low - step)
    if bound.high is not None:
        values.append(bound.high if bound.high_open else bound.high + step)
    return [kind(v) for v in values]


def _tree(key: str, value: typing.Any) -> dict:
    """The smoke config as a plain tree with `key` set to `value` (a one-item list for a tuple key)."""
    tree = config_to_dict(smoke_config())
    is_tuple = typing.get_origin(leaf_types()[key]) is tuple
    set_dotted(tree, key, [value] if is_tuple else value)
    return tree


def test_the_numeric_keys_are_found():
    assert {"train.batch_size", "augment.sigma_px", "train.lr_step_epochs", "model.annotated_joints",
            "data.synthetic.max_frames", "pretrain.stills.seed", "detect.oks_nms", "crops.jpeg_quality"} <= set(NUMERIC)
    assert "model.bmd" not in NUMERIC and "train.use_gpu" not in NUMERIC  # bools are no numbers


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_every_numeric_key_declares_a_range_and_refuses_values_outside_it(key):
    bound = _range(key)
    kind = NUMERIC[key][0]
    item = f"{key}[0]" if typing.get_origin(leaf_types()[key]) is tuple else key
    described = ("an integer " if kind is int else "a number ") + bound.describe()
    assert _outside(bound, kind), f"{key}: the range bounds neither side"
    for value in _outside(bound, kind):
        with pytest.raises(ConfigError) as err:
            config_from_dict(_tree(key, value))
        assert str(err.value) == f"{item}: expected {described}, found {value!r}"


@pytest.mark.parametrize("key, value, message", [
    ("train.batch_size", 0, "train.batch_size: expected an integer >= 1, found 0"),
    ("augment.sigma_px", 0, "augment.sigma_px: expected a number > 0, found 0"),
    ("augment.flip_prob", 1.5, "augment.flip_prob: expected a number in [0, 1], found 1.5"),
    ("train.max_train_samples", -5, "train.max_train_samples: expected an integer >= 0, found -5"),
    ("train.lr", -1, "train.lr: expected a number > 0, found -1"),
    ("train.num_workers", -1, "train.num_workers: expected an integer >= 0, found -1"),
    ("train.epochs", 0, "train.epochs: expected an integer >= 1, found 0"),
    ("crops.jpeg_quality", 101, "crops.jpeg_quality: expected an integer in [0, 100], found 101"),
    ("data.synthetic.unlabeled_fraction", 1, "data.synthetic.unlabeled_fraction: expected a number in [0, 1), found 1"),
    ("train.lr_step_epochs", [3, 0], "train.lr_step_epochs[1]: expected an integer >= 1, found 0"),
    ("train.lr", math.inf, "train.lr: expected a finite number, found inf"),
    ("augment.rotation_deg", math.nan, "augment.rotation_deg: expected a finite number, found nan"),
])
def test_the_issue_values_are_refused_as_one_line(key, value, message):
    tree = config_to_dict(smoke_config())
    set_dotted(tree, key, value)
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    assert str(err.value) == message


@pytest.mark.parametrize("key, value", [("crops.jpeg_quality", 0), ("crops.jpeg_quality", 100),
                                        ("augment.flip_prob", 0), ("augment.flip_prob", 1), ("train.num_workers", 0),
                                        ("train.max_failures", -1), ("train.val_every", 0), ("train.grad_clip", 0),
                                        ("train.max_train_samples", 0), ("detect.oks_nms", 0.0)])
def test_documented_edge_values_are_accepted(key, value):
    tree = config_to_dict(smoke_config())
    set_dotted(tree, key, value)
    assert config_to_dict(config_from_dict(tree)) == tree


@pytest.mark.parametrize("low_key, high_key, low, high", [
    ("augment.scale_min", "augment.scale_max", 1.3, 1.2),
    ("data.synthetic.min_frames", "data.synthetic.max_frames", 9, 8),
    ("pretrain.stills.min_frames", "pretrain.stills.max_frames", 3, 2),
    ("detect.min_size", "detect.max_size", 900, 800),
])
def test_a_lower_bound_above_its_upper_one_is_refused_naming_both(low_key, high_key, low, high):
    tree = config_to_dict(smoke_config())
    set_dotted(tree, low_key, low)
    set_dotted(tree, high_key, high)
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    assert str(err.value) == (f"{low_key} {low} is greater than {high_key} {high}: "
                              f"expected {low_key} <= {high_key}")
    set_dotted(tree, high_key, low)  # equal: fine
    assert config_from_dict(tree)


def test_defaults_smoke_and_saved_configs_are_in_range():
    assert config_from_dict(config_to_dict(Config())) == Config()
    assert config_from_saved(config_to_dict(smoke_config())) == smoke_config()
    with pytest.raises(ConfigError, match=r"^train.batch_size: expected an integer >= 1, found 0$"):
        smoke_config(train=TrainConfig(batch_size=0))  # smoke_config goes through the builder


def test_neutral_keys_are_marked_on_their_fields():
    """Speed-only knobs, retries, kept checkpoints and MLflow naming: no DVC params dep, no part of run identities."""
    neutral = neutral_keys()
    assert {"crops.workers", "train.loader_workers", "tracking.run_name"} <= neutral
    assert "detect.batch_size" not in neutral  # torchvision pads a batch of frames of other sizes: not speed-only
    assert not neutral & {"train.batch_size", "train.num_workers", "detect.oks_nms", "crops.jpeg_quality"}
