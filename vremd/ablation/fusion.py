"""Which trials of a table train fused, and what a fused group costs in memory (planned on the driver).

Rows that differ only in the VREMD modules after a frozen backbone (`HEAD_KEYS`: the switches of tables
4-6 and the modules' sizes) and share every other key, the seed and the `RunIdentity` see the same
backbone features for the same batches: one fused trial computes those features once per batch and
trains every row's modules on them (`vremd.ablation.fused_loop`). A row that trains its backbone, or
whose backbone, data, augmentation, schedule or seed differs from the others', forms a group of its own
and runs as an ordinary trial; so does a row trained by several Ray Train workers (`train.num_workers`
> 1: its per-worker batches and DDP gradient average are not what one process would compute).

Memory of a group (`estimate_bytes`): the shared backbone's weights and one batch of its tokens, each
row's trainable parameters with their gradients and AdamW moments (16 bytes per parameter), and one
row's activations at a time (rows step one after another), measured by running each row's modules on
the `meta` device and summing the tensors autograd saves, in fp32 (bf16 autocast on GPU saves less).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from vremd.ablation.grid import AblationError, TrialSpec
from vremd.config import config_from_dict
from vremd.frames import NUM_FRAMES
from vremd.model.vremd import build_model

__all__ = ["HEAD_KEYS", "FusionPlan", "qualifies", "plan_fusion", "estimate_bytes", "plan_text", "fused_resources",
           "GIB", "DEFAULT_BUDGET_GIB"]

GIB = 2**30
DEFAULT_BUDGET_GIB = 22.0  # a 24 GB card (the paper's RTX 4090, 22.35 GiB) less room for the CUDA context
# model keys that build only what runs after the backbone (vremd/model/vremd.py build_model)
HEAD_KEYS = ("dim", "heads", "head_channels", "hkme_depth", "aggregation_depth", "adc_blocks", "num_points",
             "mlp_ratio", "hkme", "bmd", "human_mask", "keypoint_mask", "motion_attention", "bidirectional_separation")


@dataclass(frozen=True)
class FusionPlan:
    """The Tune trials of a table: each unit is one trial; a unit of several specs is a fused group."""

    units: list[list[TrialSpec]]
    estimates: dict[int, int]  # unit index -> estimated bytes, for the fused groups

    @property
    def fused(self) -> list[int]:
        return [i for i, unit in enumerate(self.units) if len(unit) > 1]


def qualifies(config: dict[str, Any]) -> bool:
    """A frozen backbone trained in one process (in the trial's, or by one Ray Train worker)."""
    return bool(config["model"]["freeze_backbone"]) and int(config["train"]["num_workers"]) <= 1


def _group_key(spec: TrialSpec) -> str:
    """Everything but the head keys (backbone, data, augmentation, schedule, seed) plus the identity."""
    shared = copy.deepcopy(spec.config)
    for key in HEAD_KEYS:
        shared["model"].pop(key, None)
    return json.dumps({"config": shared, "identity": spec.identity}, sort_keys=True, default=str)


def estimate_bytes(configs: Sequence[dict[str, Any]]) -> int:
    """Estimated peak bytes of training `configs` fused (see the module docstring); built on `meta`, no weights."""
    model_cfgs = [dataclasses.replace(config_from_dict(c).model, pretrained="", freeze_backbone=True) for c in configs]
    batch = int(configs[0]["train"]["batch_size"])
    total, peak_activations = 0, 0
    for i, cfg in enumerate(model_cfgs):
        with torch.device("meta"):
            model = build_model(cfg)
        backbone = sum(p.numel() for p in model.backbone.parameters())
        trainable = sum(p.numel() for p in model.parameters()) - backbone
        total += 16 * trainable  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
        N = model.backbone.grid_hw[0] * model.backbone.grid_hw[1]
        tokens = torch.empty(batch, NUM_FRAMES, N, cfg.embed_dim, device="meta")  # (B, T, N, E)
        if i == 0:
            total += 4 * backbone + 2 * 4 * tokens.numel()  # frozen weights; tokens and one block's output
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.forward_tokens(tokens)
        peak_activations = max(peak_activations, saved[0])
    return total + peak_activations


def plan_fusion(trials: Sequence[TrialSpec], fuse: bool, budget_bytes: int, max_rows: int = 0) -> FusionPlan:
    """Group `trials` (grid order kept by each group's first row), at most `max_rows` rows per fused trial
    (0: no limit); refuse a group over `budget_bytes`.

    The refusal is an `AblationError` raised here, on the driver, before any trial starts; it names the
    largest `--fuse-rows` that would fit.
    """
    if not fuse:
        return FusionPlan([[t] for t in trials], {})
    groups: dict[str, list[TrialSpec]] = {}
    units: list[list[TrialSpec]] = []
    for t in trials:
        if not qualifies(t.config):
            units.append([t])
            continue
        key = _group_key(t)
        if key not in groups or (max_rows > 0 and len(groups[key]) >= max_rows):
            groups[key] = []
            units.append(groups[key])
        groups[key].append(t)
    estimates = {i: estimate_bytes([t.config for t in unit]) for i, unit in enumerate(units) if len(unit) > 1}
    over = [(i, b) for i, b in estimates.items() if b > budget_bytes]
    if over:
        named = "; ".join(f"seed {units[i][0].seed}: {', '.join(t.row for t in units[i])} needs ~{b / GIB:.1f} GiB"
                          for i, b in over)
        fits = [k for k in range(2, max(len(units[i]) for i, _ in over))
                if all(estimate_bytes([t.config for t in units[i][:k]]) <= budget_bytes for i, _ in over)]
        split = f"--fuse-rows {max(fits)} (smaller fused trials), " if fits else ""
        raise AblationError(f"fused trials over the memory budget of {budget_bytes / GIB:.1f} GiB ({named}; "
                            "fp32 estimate); pass " + split + "--fuse-memory-gib if the device holds more, "
                            "or --no-fuse; nothing was run")
    return FusionPlan(units, estimates)


def plan_text(plan: FusionPlan, resources: Mapping[str, float]) -> str:
    """The dry-run listing of the fused groups, each with what its Tune trial asks for (empty when none)."""
    asks = ", ".join(f"{k}={v:g}" for k, v in resources.items() if v) or "nothing"
    lines = []
    for n, i in enumerate(plan.fused, 1):
        unit = plan.units[i]
        lines.append(f"fused trial {n} (seed {unit[0].seed}, one backbone pass per batch, ~{plan.estimates[i] / GIB:.2f} "
                     f"GiB; trial: {asks}, trains in the trial's process): {', '.join(t.row for t in unit)}")
    alone = sum(len(u) == 1 for u in plan.units)
    if lines:
        lines.append(f"{len(plan.fused)} fused trial(s), {alone} ordinary trial(s)")
    return "\n".join(lines) + ("\n" if lines else "")


def fused_resources(config: dict[str, Any]) -> dict[str, float]:
    """What a fused trial asks Tune for: it trains in its own process, so the CPUs its loader needs and,
    with `train.use_gpu`, the one GPU every row's modules and the shared backbone run on."""
    train = config["train"]
    return {"cpu": float(max(1, int(train["loader_workers"]))), "gpu": 1.0 if train["use_gpu"] else 0.0}
