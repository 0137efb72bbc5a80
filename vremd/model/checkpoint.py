"""The trained-model file, models/final.pt: written by `save_trained`, rebuilt into a model by `load_trained`.

On disk: ``{"model": state_dict, "config": config_to_dict(cfg), "epoch", "history", "mlflow_run_id"}`` (the last
three None when unknown). Its own config builds and decodes the model, so predict and evaluate need no
params.yaml. A bare state dict also loads, given a fallback config. Files are read by `read_weights` (weights
only) and written atomically: a failed write leaves an existing file untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vremd.atomic import atomic_write
from vremd.config import Config, ConfigError, config_from_saved, config_to_dict
from vremd.model.backbone import load_vitpose_checkpoint
from vremd.model.config_check import check_model_config
from vremd.model.vremd import VREMD, arch_version_problem, build_model
from vremd.model.weights import CheckpointError, read_weights, state_dict_problems

__all__ = ["CheckpointError", "CheckpointWriteError", "load_trained", "read_weights", "save_trained",
           "saved_config", "state_dict_problems"]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file is untouched."""


def save_trained(path: str | Path, model: torch.nn.Module | Mapping[str, torch.Tensor], cfg: Config, *,
                 epoch: int | None = None, history: list[dict] | None = None,
                 mlflow_run_id: str | None = None) -> Path:
    """Write the trained model (a module or its state dict) and the config that built it to `path`, atomically.

    Raises `CheckpointWriteError` naming the file when it cannot be written.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    payload: dict[str, Any] = {"model": state, "config": config_to_dict(cfg), "epoch": epoch, "history": history,
                               "mlflow_run_id": mlflow_run_id}
    try:
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except (OSError, RuntimeError) as exc:  # torch wraps some write errors in RuntimeError
        raise CheckpointWriteError(f"{path}: cannot write the trained model ({exc}); an existing file is kept") \
            from exc


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `module.` (DDP) and `_orig_mod.` (torch.compile) wrappers' key prefixes."""
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _read_trained(path: Path, mmap: bool = False) -> tuple[dict[str, torch.Tensor], Config | None]:
    """(state dict, the config it carries or None) of a trained-model file or a bare state dict."""
    raw = read_weights(path, mmap=mmap)
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        sd, cfg_dict = raw["model"], raw.get("config")
    elif isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        sd, cfg_dict = raw, None
    else:
        raise CheckpointError(f"{path}: expected {{'model': state_dict, 'config': ...}} as written by training")
    try:
        return sd, (config_from_saved(cfg_dict) if cfg_dict is not None else None)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: config: {exc}") from None


def saved_config(path: str | Path) -> Config | None:
    """The config a trained-model file carries, None for one without (its tensors are memory-mapped, not read)."""
    return _read_trained(Path(path), mmap=True)[1]


def load_trained(
    path: str | Path, vitpose: str | Path | None = None,
    fallback_cfg: Config | Callable[[], Config] | None = None,
) -> tuple[VREMD, Config]:
    """Rebuild the trained model from `path` and load it strictly; returns (model in eval mode, config).

    The file's own config builds and decodes the model. A bare state dict or one without "config" uses
    `fallback_cfg` (a callable is called only then, so an unrelated params.yaml is never read for a file with a
    config). A config the model cannot honour (vremd.model.config_check) is refused naming the file. With
    `vitpose`, the file may hold only the trained heads (backbone keys absent) and the backbone is loaded from
    that ViTPose .pth. Every refusal is a `CheckpointError` naming the file (and the keys).
    """
    path = Path(path)
    sd, cfg = _read_trained(path)
    source = f"{path}: config"
    if cfg is None and fallback_cfg is not None:
        cfg, source = (fallback_cfg() if callable(fallback_cfg) else fallback_cfg), f"{path}: the fallback config"
    elif cfg is None:
        raise CheckpointError(f"{path}: config: missing, and no --params/--profile config to build the model from")
    try:
        check_model_config(cfg, source=source)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    # the weights come from the file (or `vitpose`), never from the config's pretrained path
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=""))
    model = build_model(cfg.model)
    sd = _strip_prefixes(dict(sd))
    stale = arch_version_problem(sd)
    if stale:
        raise CheckpointError(f"{path}: {stale}")
    problems = state_dict_problems(model, sd, optional_prefix="backbone." if vitpose else "")
    if problems:
        raise CheckpointError(f"{path}: does not fit the model of its config (model.*): " + "; ".join(problems))
    model.load_state_dict(sd, strict=vitpose is None)
    if vitpose is not None:
        load_vitpose_checkpoint(model.backbone, vitpose)
    return model.eval(), cfg
