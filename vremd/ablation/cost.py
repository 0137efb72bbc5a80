"""Model cost: parameter counts and forward FLOPs per top-level module of a model.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``: one multiply-add counts as 2 FLOPs, and
only ops with a registered formula count (matmuls, convolutions, attention); element-wise ops, norms,
softmax and the bilinear sampling of deformable attention (``grid_sample``) are not counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vremd.config import ModelConfig
from vremd.model.vremd import build_model

__all__ = ["ModuleCost", "parameter_counts", "parameters_outside_backbone", "module_flops", "format_cost_table"]


@dataclass(frozen=True)
class ModuleCost:
    """Parameters (all / trainable) and forward FLOPs of one top-level submodule."""

    name: str
    params: int
    trainable: int
    flops: int | None = None


def parameter_counts(model: nn.Module) -> list[ModuleCost]:
    """One `ModuleCost` per direct child that has parameters (``flops`` unset), in definition order."""
    rows = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if params:
            trainable = sum(p.numel() for p in params if p.requires_grad)
            rows.append(ModuleCost(name, sum(p.numel() for p in params), trainable))
    return rows


def parameters_outside_backbone(cfg: ModelConfig) -> tuple[int, int]:
    """``(backbone, rest)`` parameter counts of the model ``cfg`` builds: the ablation tables' capacity figure.

    Built on the meta device (no memory, no weights read), so it costs well under a second even for ViT-L.
    """
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg, pretrained=""))
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return backbone, sum(p.numel() for p in model.parameters()) - backbone


@torch.no_grad()
def module_flops(model: nn.Module, *inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward ``model(*inputs)`` under FlopCounterMode; return total FLOPs and FLOPs per direct child name."""
    counter = FlopCounterMode(display=False, depth=2)
    with counter:
        model(*inputs)
    prefix = type(model).__name__ + "."
    per_child = {}
    for key, ops in counter.get_flop_counts().items():
        child = key.removeprefix(prefix)
        if key.startswith(prefix) and "." not in child:
            per_child[child] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_child


def format_cost_table(rows: list[ModuleCost], per: str = "sample") -> str:
    """Markdown table of parameters (M) and GFLOPs per ``per``, with a total row."""
    lines = [f"| module | params (M) | trainable (M) | GFLOPs / {per} |", "|---|---:|---:|---:|"]

    def fmt(r: ModuleCost) -> str:
        gflops = "-" if r.flops is None else f"{r.flops / 1e9:.3f}"
        return f"| {r.name} | {r.params / 1e6:.3f} | {r.trainable / 1e6:.3f} | {gflops} |"

    lines += [fmt(r) for r in rows]
    total_flops = None if any(r.flops is None for r in rows) else sum(r.flops for r in rows)
    lines.append(fmt(ModuleCost("total", sum(r.params for r in rows), sum(r.trainable for r in rows), total_flops)))
    return "\n".join(lines)
