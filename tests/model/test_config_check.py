"""Settings the model cannot honour are refused up front, each naming its key; the shipped profiles pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vremd.config import ConfigError, load_config, smoke_config
from vremd.model.config_check import check_model_config, model_config_problems

ROOT = Path(__file__).resolve().parents[2]
SMOKE = smoke_config()


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_shipped_profiles_are_honoured(profile):
    assert model_config_problems(load_config(ROOT / "params.yaml", profile)) == []


def _with(section: str, **changes):
    return dataclasses.replace(SMOKE, **{section: dataclasses.replace(getattr(SMOKE, section), **changes)})


@pytest.mark.parametrize("section,changes,needle", [
    ("model", {"img_height": 72}, "model.img_height/model.img_width: 72x48 is not a multiple of model.patch_size 16"),
    ("model", {"patch_size": 12}, "model.patch_size: must be 4 times a power of 2, found 12"),
    ("model", {"num_heads": 3}, "model.embed_dim: 32 is not a multiple of model.num_heads 3"),
    ("model", {"heads": 3}, "model.dim: 32 is not a multiple of model.heads 3"),
    ("model", {"num_points": 0}, "model: these settings do not build a working VREMD: DeformCrossAttnMotion: num_points"),
])
def test_unhonoured_setting_is_refused_naming_the_key(section, changes, needle):
    with pytest.raises(ConfigError) as err:
        check_model_config(_with(section, **changes), source="params.yaml (profile smoke)")
    assert str(err.value).startswith("params.yaml (profile smoke): the model cannot honour ")
    assert needle in str(err.value)


def test_every_problem_is_listed_at_once():
    cfg = _with("model", img_width=40, heads=3)
    problems = model_config_problems(cfg)
    assert [p.split(":")[0] for p in problems] == ["model.img_height/model.img_width", "model.dim"]
