"""An index meets a model: refuse crops that the model would see otherwise than its config says.

What a model sees of a person is fixed when the crops are cut: how far the box is enlarged
(`crops.enlarge`), the crop size (`crops.height` x `crops.width`) and the JPEG quality the pixels were
stored at (`crops.jpeg_quality`: compression changes the pixels the model reads; 0 stores them raw). A model
trained on 1.25-enlarged boxes and scored on 1.5-enlarged ones sees smaller people at other positions and
scores near zero (AP 0.3 -> 0.0 in issue 32, with no warning). So wherever a config meets an index (training
on it, a checkpoint scoring it, a run reproduced on it) `check_index_fits` compares the settings the index
records (`crop_settings.read_crop_settings`) with the config's and the stored crop size with the model's input size.
It is the one place to add what else an index must agree on with a config.
"""

from __future__ import annotations

from pathlib import Path

from vremd.config import Config, ConfigError
from vremd.data.dataset import check_crop_size
from vremd.data.crop_settings import read_crop_settings

__all__ = ["MODEL_VIEW_KEYS", "check_index_fits"]

MODEL_VIEW_KEYS = ("enlarge", "height", "width", "jpeg_quality")  # crops.* keys that change the model's input


def check_index_fits(index_path: Path, cfg: Config, config_name: str) -> None:
    """Return None when the crops of `index_path` are what the model of `cfg` sees; else raise `ConfigError`
    naming the index file, `config_name` (where `cfg` comes from: a checkpoint file, a params profile) and
    both values of every differing setting. An index that records no settings (an older checkout's) is refused."""
    check_crop_size(index_path, cfg.model, config_name)  # the stored pixels first: the most concrete fact
    recorded = read_crop_settings(index_path)
    if recorded is None:
        raise ConfigError(f"{index_path}: records no crop settings (written by an older checkout), so its crops "
                          f"cannot be checked against {config_name}; rebuild it: dvc repro preprocess (or "
                          "pipeline/crops.py, then pipeline/preprocess.py)")
    ours = {key: getattr(cfg.crops, key) for key in MODEL_VIEW_KEYS}
    differ = [key for key in MODEL_VIEW_KEYS if recorded.get(key) != ours[key]]
    if differ:
        theirs = ", ".join(f"crops.{k} = {recorded.get(k)!r}" for k in differ)
        wanted = ", ".join(f"crops.{k} = {ours[k]!r}" for k in differ)
        raise ConfigError(f"{index_path} holds crops cut with {theirs}, but {config_name} has {wanted}: the model "
                          "would see other crops than its config says; cut the crops with the same settings "
                          "(pipeline/crops.py, pipeline/preprocess.py) or use a matching index")
