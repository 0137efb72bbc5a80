"""VREMD assembly: `build_model` reads every ablation switch here and decides which submodules exist.

Data path (paper, figure 2), frames ordered (t-1, t, t+1):
  frames (B, 3, 3, H, W) -> ViT backbone -> tokens (B, 3, N, E); F_t^i = the key frame's tokens (B, N, E)
  width: HKME and BMD run at ``model.dim`` D; tokens are projected E -> D (LayerNorm + Linear) only when
         D != E (the paper runs them at the backbone width, D = E, with no projection)
  HKME  (hkme on):  -> enhanced F (B, N, D) (only when ADC blocks exist: nothing else takes F), key-frame keypoint
                    tokens (B, J, D) (when the keypoint stage exists), masks (B, 3, N)
  BMD   (bmd on):   motions of the (projected) tokens, ADC blocks constrained by F (HKME's F, or without HKME
                    the key frame's backbone tokens) -> M (B, N, D)
  heads: H_m = UpsampleHead([M, F_t^i]) ("by aggregating M and F_t^i and up-sampling"); without BMD
         H_m = UpsampleHead(F_t^i), which is the baseline's head: ViTPose's classic decoder.
         H_k = KeypointTokenHead(keypoint tokens); H = (H_k + H_m) / 2 when both exist, else H_m.
  joints: J = the dataset's annotated joints (``model.annotated_joints``, 15: PoseTrack never annotates the
         ears); the heads predict those J and the output is laid into the ``model.num_joints`` = 17 PoseTrack
         slots, the ear slots all zero (poseval never reads them).

Table rows (experiments/ablations.yaml; tests/model/test_vremd.py asserts each):
  4 baseline: backbone + H_m(F_t)                 4(a) +HKME: H_k + H_m(F_t), no aggregation stage
  4(b) +BMD: ADC(F = key-frame tokens), H_m([M, F_t])   4(c) VREMD: everything
  5(a) no mask: aggregation only (no human / keypoint stage, no H_k)   5(b) human stage + aggregation
  5(c) keypoint stage + aggregation + H_k               5(d) both masks
  6(a) DC: DeformConvBlock in place of every ADC block (no F reader: no aggregation stage, HKME acts via H_k)
  6(b)/(c) DA / DCA branch in the ADC block
  6(a-c) one entangled stream; 6(d) two streams + fusion (about twice the BMD parameters)

The baseline runs the ViT on the key frame only (nothing reads t-1, t+1): it is a single-frame top-down
pose model, the one the `pretrain` stage trains (vremd/pretrain.py).

Checkpoints: the model carries `ARCH_VERSION` as a buffer; loading a state dict without it or from
another version raises `ModelStateError` (weights of an older layout never load partially).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Mapping

import torch
from torch import nn

from vremd.config import ConfigError, ModelConfig
from vremd.errors import InputError
from vremd.frames import FRAME_NAMES, KEY, NUM_FRAMES
from vremd.model.backbone import ViTBackbone, load_vitpose_checkpoint
from vremd.model.bmd import BMD, ADCBlock, ADCStream, DeformConvBlock, EntangledBMD
from vremd.model.deformable import DeformConvMotion, motion_attention_class
from vremd.model.heads import HEATMAP_STRIDE, KeypointTokenHead, UpsampleHead
from vremd.model.hkme import HKME, HumanMask, KeypointMask, SpatioTemporalAggregation

__all__ = ["ARCH_VERSION", "HEADS", "HeadAlone", "ModelStateError", "VREMD", "arch_version_problem", "autocast",
           "build_model", "predict_heatmaps"]

# Bump when a change makes older weights mean something else. 2: H_m from [M, F_t^i], masks as key biases,
# one human token per frame, 15 keypoint tokens, p_z from z, DC block, optional projection.
ARCH_VERSION = 2


class ModelStateError(RuntimeError):
    """A state dict was saved by another model layout (`ARCH_VERSION`); it must not load, even partially."""


def arch_version_problem(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> str | None:
    """Why ``state_dict`` cannot load into this code's VREMD (another `ARCH_VERSION`), or None when it can."""
    version = state_dict.get(prefix + "arch_version")
    if version is not None and int(version) == ARCH_VERSION:
        return None
    found = "no arch_version (saved before version 2)" if version is None else f"arch_version {int(version)}"
    return (f"the state dict has {found}, this code builds arch_version {ARCH_VERSION}; the model's layout "
            "changed (vremd/model/vremd.py ARCH_VERSION): retrain, or use the checkout that trained it")


class VREMD(nn.Module):
    """Video pose model: frames ``(B, 3, 3, H, W)`` -> heatmaps ``(B, num_slots, H/4, W/4)``; see module docstring."""

    def __init__(
        self,
        backbone: ViTBackbone,
        input_proj: nn.Module | None,
        hkme: HKME | None,
        bmd: BMD | EntangledBMD | None,
        keypoint_head: KeypointTokenHead | None,
        motion_head: UpsampleHead,
        joint_slots: tuple[int, ...],
        num_slots: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_proj = input_proj  # None: HKME / BMD run at the backbone width (or do not exist)
        self.hkme = hkme
        self.bmd = bmd
        self.keypoint_head = keypoint_head
        self.motion_head = motion_head
        self.num_slots = num_slots
        self.register_buffer("joint_slots", torch.tensor(joint_slots, dtype=torch.long), persistent=False)
        self.register_buffer("arch_version", torch.tensor(ARCH_VERSION, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        problem = arch_version_problem(state_dict, prefix)
        if problem:
            raise ModelStateError(f"VREMD weights: {problem}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, frames: torch.Tensor, return_aux: bool = False) -> dict[str, torch.Tensor]:
        """Frames ``(B, T=3, 3, H, W)`` normalised -> ``{"heatmaps": (B, 17, H/4, W/4)}``.

        With ``return_aux`` also each head alone, ``heatmaps_motion`` (H_m) and, when H_k exists,
        ``heatmaps_keypoint`` (laid out as ``heatmaps``); ``human_mask`` and ``keypoint_mask`` ``(B, T, N)`` (all
        ones where that mask is not part of the model: the features then pass unmasked) and, when BMD exists,
        ``sampling_points`` ``(B, nh, N, K, 2)``, (x, y) normalised to [0, 1] (forward direction, last block).
        """
        B, T, C, H, W = frames.shape
        if T != NUM_FRAMES:
            raise ValueError(f"VREMD: expected {NUM_FRAMES} frames ({', '.join(FRAME_NAMES)}), got {T}")
        if self.hkme is None and self.bmd is None:  # the baseline reads F_t^i only: no ViT pass over t-1, t+1
            key_tokens = self.backbone(frames[:, KEY:KEY + 1])  # (B, 1, N, E)
            return self.forward_tokens(key_tokens.expand(B, T, *key_tokens.shape[2:]), return_aux)  # (B, 3, N, E)
        return self.forward_tokens(self.backbone(frames), return_aux)  # tokens (B, T, N, E)

    def forward_tokens(self, tokens: torch.Tensor, return_aux: bool = False) -> dict[str, torch.Tensor]:
        """Everything after the backbone: tokens ``(B, 3, N, E)`` -> the dict of `forward`."""
        B, T, N, _ = tokens.shape
        key_feature = tokens[:, KEY]  # F_t^i (B, N, E): the key frame's backbone feature
        feats = tokens if self.input_proj is None else self.input_proj(tokens)  # (B, T, N, D)
        feature = feats[:, KEY]  # F for the ADC blocks without HKME: the key frame's backbone feature (B, N, D)
        keypoint_tokens = None
        aux: dict[str, torch.Tensor | None] = {"human_mask": None, "keypoint_mask": None, "sampling_points": None}
        if self.hkme is not None:
            out = self.hkme(feats)
            if out["feature"] is not None:
                feature = out["feature"]  # enhanced F (B, N, D)
            keypoint_tokens = out["keypoint_tokens"]  # (B, J, D) or None
            aux["human_mask"], aux["keypoint_mask"] = out["human_mask"], out["keypoint_mask"]
        head_in = key_feature  # (B, N, E)
        if self.bmd is not None:
            motion, aux["sampling_points"] = self.bmd(feats, feature, return_points=return_aux)  # (B, N, D)
            head_in = torch.cat([motion, key_feature], dim=-1)  # (B, N, D+E): [M, F_t^i]
        heads = {"motion": self.motion_head(head_in)}  # H_m (B, J, h, w)
        if self.keypoint_head is not None:
            heads["keypoint"] = self.keypoint_head(keypoint_tokens)  # H_k (B, J, h, w)
        heatmaps = sum(heads.values()) / len(heads)  # H = (H_k + H_m) / 2, or H_m
        result = {"heatmaps": self._slots(heatmaps)}
        if return_aux:
            result.update({f"heatmaps_{name}": self._slots(h) for name, h in heads.items()})  # each head alone
            ones = tokens.new_ones(B, T, N)
            result["human_mask"] = aux["human_mask"] if aux["human_mask"] is not None else ones
            result["keypoint_mask"] = aux["keypoint_mask"] if aux["keypoint_mask"] is not None else ones
            if aux["sampling_points"] is not None:
                result["sampling_points"] = aux["sampling_points"]
        return result


    def _slots(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """The J annotated joints' heatmaps ``(B, J, h, w)`` laid into the output slots ``(B, 17, h, w)``, ears 0."""
        slots = heatmaps.new_zeros(heatmaps.shape[0], self.num_slots, *heatmaps.shape[2:])
        return slots.index_copy(1, self.joint_slots, heatmaps)


HEADS = ("motion", "keypoint")  # H_m, H_k: what `HeadAlone` can score


class HeadAlone(nn.Module):
    """One heatmap head of a trained VREMD as a model of its own, ``frames -> {"heatmaps": H_m or H_k}``: scoring
    each head alone shows what each contributes to H = (H_k + H_m) / 2 (`pipeline/evaluate.py --head`)."""

    def __init__(self, model: VREMD, head: str) -> None:
        super().__init__()
        if head not in HEADS:
            raise InputError(f"--head: expected one of {', '.join(HEADS)}, found {head!r}")
        if head == "keypoint" and model.keypoint_head is None:
            raise InputError("--head keypoint: this model has no keypoint-token head H_k (no HKME keypoint stage)")
        self.model, self.head = model, head

    def forward(self, frames: torch.Tensor, return_aux: bool = False) -> dict[str, torch.Tensor]:
        out = self.model(frames, return_aux=True)
        out["heatmaps"] = out[f"heatmaps_{self.head}"]  # (B, 17, h, w)
        return out


def autocast(device: torch.device | str) -> AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 on CPU (bf16 matmuls on CPU are slow and change results). Every forward
    of training, validation and predict runs under it."""
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def predict_heatmaps(model: nn.Module, frames: torch.Tensor, flip_index: Sequence[int] | None = None,
                     return_aux: bool = False) -> dict[str, torch.Tensor]:
    """The model's outputs for frames (B, T, 3, H, W), "heatmaps" (B, J, h, w) as float32.

    With `flip_index` (the joint each slot becomes when the image is mirrored) this is the flip test: the
    heatmaps are averaged with those of the mirrored frames, mirrored back with left/right slots swapped.
    Auxiliary outputs (`return_aux`) are the unmirrored forward's.
    """
    out = dict(model(frames, return_aux=True) if return_aux else model(frames))
    heatmaps = out["heatmaps"].float()  # (B, J, h, w)
    if flip_index is not None:
        flipped = model(frames.flip(-1))["heatmaps"].float()  # (B, J, h, w) of the mirrored crops
        flipped = flipped.flip(-1)[:, list(flip_index)]  # mirror back; left/right joints swap slots
        heatmaps = (heatmaps + flipped) / 2
    out["heatmaps"] = heatmaps
    return out


def reads_enhanced_feature(cfg: ModelConfig) -> bool:
    """Whether anything takes HKME's F: only ADC blocks do (not the DC block of table 6(a), not the heads)."""
    return cfg.bmd and cfg.motion_attention != "dc"


def _build_hkme(cfg: ModelConfig, num_joints: int) -> HKME:
    args = (cfg.dim, cfg.heads, cfg.mlp_ratio)
    human = HumanMask(*args, cfg.hkme_depth) if cfg.human_mask else None
    keypoint = KeypointMask(*args, cfg.hkme_depth, num_joints) if cfg.keypoint_mask else None
    # F feeds only the ADC blocks: without them (table 4(a), 6(a)) the aggregation stage would have no reader
    aggregation = None
    if reads_enhanced_feature(cfg):
        aggregation = SpatioTemporalAggregation(*args, cfg.aggregation_depth)
    return HKME(human, keypoint, aggregation)


def _build_bmd(cfg: ModelConfig, grid_hw: tuple[int, int]) -> BMD | EntangledBMD:
    def block() -> ADCBlock | DeformConvBlock:
        if cfg.motion_attention == "dc":  # table 6(a): the deformable conv replaces the whole ADC block
            return DeformConvBlock(cfg.dim, cfg.mlp_ratio, DeformConvMotion(cfg.dim, cfg.heads, cfg.num_points, grid_hw))
        attention = motion_attention_class(cfg.motion_attention)(cfg.dim, cfg.heads, cfg.num_points, grid_hw)
        return ADCBlock(cfg.dim, cfg.mlp_ratio, attention, cfg.heads)

    def stream() -> ADCStream:
        return ADCStream([block() for _ in range(cfg.adc_blocks)])

    if cfg.bidirectional_separation:
        return BMD(cfg.dim, cfg.mlp_ratio, stream(), stream())
    return EntangledBMD(cfg.dim, stream())


def check_model_config(cfg: ModelConfig) -> None:
    """Refuse settings the model cannot honour (ConfigError naming the ``model.*`` key)."""
    joints = cfg.annotated_joints
    if not joints or list(joints) != sorted(set(joints)) or joints[0] < 0 or joints[-1] >= cfg.num_joints:
        raise ConfigError(f"model.annotated_joints: expected increasing, distinct slots in [0, {cfg.num_joints}) "
                          f"(model.num_joints), found {list(joints)}")
    motion_attention_class(cfg.motion_attention)  # unknown names fail here, naming the key
    if cfg.hkme and not reads_enhanced_feature(cfg) and not cfg.keypoint_mask:
        raise ConfigError("model.keypoint_mask: without ADC blocks (model.bmd false, or motion_attention dc) nothing "
                          "reads HKME's F, so HKME reaches the heatmaps only through the keypoint tokens (H_k); "
                          "hkme=true with keypoint_mask=false would be HKME in name only")


def build_model(cfg: ModelConfig) -> VREMD:
    """Return VREMD for ``cfg`` (all switches read here); loads ``cfg.pretrained`` ViTPose weights if set.

    Parameters are initialised from torch's default generator: seed it for reproducible weights.
    """
    check_model_config(cfg)
    backbone = ViTBackbone(
        (cfg.img_height, cfg.img_width), cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads,
        frozen=cfg.freeze_backbone,
    )
    if cfg.pretrained:
        load_vitpose_checkpoint(backbone, cfg.pretrained)
    grid_hw = backbone.grid_hw
    heatmap_hw = (cfg.img_height // HEATMAP_STRIDE, cfg.img_width // HEATMAP_STRIDE)
    J = len(cfg.annotated_joints)
    modules = cfg.hkme or cfg.bmd
    input_proj = None
    if modules and cfg.dim != cfg.embed_dim:
        input_proj = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.dim))
    hkme = _build_hkme(cfg, J) if cfg.hkme else None
    bmd = _build_bmd(cfg, grid_hw) if cfg.bmd else None
    keypoint_head = KeypointTokenHead(cfg.dim, cfg.mlp_ratio, heatmap_hw) if cfg.hkme and cfg.keypoint_mask else None
    head_in = cfg.embed_dim + (cfg.dim if cfg.bmd else 0)  # [M, F_t^i] or F_t^i
    motion_head = UpsampleHead(head_in, cfg.head_channels, J, grid_hw, cfg.patch_size)
    return VREMD(backbone, input_proj, hkme, bmd, keypoint_head, motion_head, cfg.annotated_joints, cfg.num_joints)
