"""VREMD assembly: `build_model` reads every ablation switch here and decides which submodules exist.

Data path (paper, figure 2), frames ordered (t-1, t, t+1):
  frames (B, 3, 3, H, W) -> ViT backbone -> tokens (B, 3, N, E) -> Linear to D -> (B, 3, N, D)
  HKME  (hkme on):  -> F (B, N, D), key-frame keypoint tokens (B, J, D), masks (B, 3, N)
                    (hkme off: F = the key frame's projected backbone tokens)
  BMD   (bmd on):   motions of the projected tokens, ADC conditioned on F -> M (B, N, D)
  heads: H_m = UpsampleHead([M, F]) (bmd off: UpsampleHead(F)); H_k = KeypointTokenHead(tokens) when
         HKME exists; H = (H_k + H_m) / 2 when both exist, else the one that exists.
  baseline (hkme off, bmd off): UpsampleHead on the key frame's backbone tokens (no projection), i.e.
         ViTPose's classic decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from vremd.config import ModelConfig
from vremd.model.backbone import ViTBackbone, load_vitpose_checkpoint
from vremd.model.bmd import BMD, ADCBlock, ADCStream, EntangledBMD
from vremd.model.deformable import motion_attention_class
from vremd.model.heads import HEATMAP_STRIDE, KeypointTokenHead, UpsampleHead
from vremd.model.hkme import HKME, FrameBlocks, HumanMask, KeypointMask, SpatioTemporalAggregation

__all__ = ["KEY", "VREMD", "build_model"]

KEY = 1  # index of the key frame t in the (t-1, t, t+1) frame axis


class VREMD(nn.Module):
    """Video pose model: frames ``(B, 3, 3, H, W)`` -> heatmaps ``(B, J, H/4, W/4)``; see module docstring."""

    def __init__(
        self,
        backbone: ViTBackbone,
        input_proj: nn.Module | None,
        hkme: HKME | None,
        bmd: BMD | EntangledBMD | None,
        keypoint_head: KeypointTokenHead | None,
        motion_head: UpsampleHead,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_proj = input_proj
        self.hkme = hkme
        self.bmd = bmd
        self.keypoint_head = keypoint_head
        self.motion_head = motion_head

    def forward(self, frames: torch.Tensor, return_aux: bool = False) -> dict[str, torch.Tensor]:
        """Frames ``(B, T=3, 3, H, W)`` normalised -> ``{"heatmaps": (B, J, H/4, W/4)}``.

        With ``return_aux`` also ``human_mask`` and ``keypoint_mask`` ``(B, T, N)`` (all ones where that
        mask is not part of the model: the features then pass unmasked) and, when BMD exists,
        ``sampling_points`` ``(B, nh, N, K, 2)``, (x, y) normalised to [0, 1] (forward direction, last ADC block).
        """
        B, T, C, H, W = frames.shape
        if T != 3:
            raise ValueError(f"VREMD: expected 3 frames (t-1, t, t+1), got {T}")
        tokens = self.backbone(frames)  # (B, T, N, E)
        aux: dict[str, torch.Tensor | None] = {"human_mask": None, "keypoint_mask": None}
        if self.input_proj is None:  # baseline: ViTPose decoder on the key frame
            heatmaps = self.motion_head(tokens[:, KEY])  # (B, J, h, w)
        else:
            feats = self.input_proj(tokens)  # (B, T, N, D)
            feature, keypoint_tokens = feats[:, KEY], None  # F (B, N, D)
            if self.hkme is not None:
                out = self.hkme(feats)
                feature, keypoint_tokens = out["feature"], out["keypoint_tokens"]  # (B, N, D), (B, J, D)
                aux["human_mask"], aux["keypoint_mask"] = out["human_mask"], out["keypoint_mask"]
            head_in = feature
            if self.bmd is not None:
                motion, aux["sampling_points"] = self.bmd(feats, feature, return_points=return_aux)  # (B, N, D)
                head_in = torch.cat([motion, feature], dim=-1)  # (B, N, 2D): [M, F]
            heatmaps = self.motion_head(head_in)  # H_m (B, J, h, w)
            if self.keypoint_head is not None:
                heatmaps = (self.keypoint_head(keypoint_tokens) + heatmaps) / 2  # H = (H_k + H_m) / 2
        result = {"heatmaps": heatmaps}
        if return_aux:
            N = tokens.shape[2]
            ones = tokens.new_ones(B, T, N)
            result["human_mask"] = aux["human_mask"] if aux["human_mask"] is not None else ones
            result["keypoint_mask"] = aux["keypoint_mask"] if aux["keypoint_mask"] is not None else ones
            if aux.get("sampling_points") is not None:
                result["sampling_points"] = aux["sampling_points"]
        return result


def _build_hkme(cfg: ModelConfig) -> HKME:
    args = (cfg.dim, cfg.heads, cfg.mlp_ratio)
    human = HumanMask(*args, cfg.hkme_depth) if cfg.human_mask else FrameBlocks(*args, cfg.hkme_depth)
    keypoint = KeypointMask(*args, cfg.hkme_depth, cfg.num_joints, cfg.num_frames, apply_mask=cfg.keypoint_mask)
    aggregation = SpatioTemporalAggregation(*args, cfg.aggregation_depth, cfg.num_frames)
    return HKME(human, keypoint, aggregation)


def _build_bmd(cfg: ModelConfig, grid_hw: tuple[int, int]) -> BMD | EntangledBMD:
    attention_cls = motion_attention_class(cfg.motion_attention)

    def stream() -> ADCStream:
        return ADCStream([
            ADCBlock(cfg.dim, cfg.mlp_ratio, attention_cls(cfg.dim, cfg.heads, cfg.num_points, grid_hw), cfg.heads)
            for _ in range(cfg.adc_blocks)
        ])

    if cfg.bidirectional_separation:
        return BMD(cfg.dim, cfg.mlp_ratio, stream(), stream())
    return EntangledBMD(cfg.dim, stream())


def build_model(cfg: ModelConfig) -> VREMD:
    """Return VREMD for ``cfg`` (all switches read here); loads ``cfg.pretrained`` ViTPose weights if set.

    Parameters are initialised from torch's default generator: seed it for reproducible weights.
    """
    if cfg.num_frames != 3:
        raise ValueError(f"model.num_frames: VREMD uses 3 frames (t-1, t, t+1), found {cfg.num_frames}")
    backbone = ViTBackbone(
        (cfg.img_height, cfg.img_width), cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads,
        frozen=cfg.freeze_backbone,
    )
    if cfg.pretrained:
        load_vitpose_checkpoint(backbone, cfg.pretrained)
    grid_hw = backbone.grid_hw
    heatmap_hw = (cfg.img_height // HEATMAP_STRIDE, cfg.img_width // HEATMAP_STRIDE)
    if not cfg.hkme and not cfg.bmd:  # baseline: backbone + heatmap head only
        head = UpsampleHead(cfg.embed_dim, cfg.dim, cfg.num_joints, grid_hw, cfg.patch_size)
        return VREMD(backbone, None, None, None, None, head)
    input_proj = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.dim))
    hkme = _build_hkme(cfg) if cfg.hkme else None
    bmd = _build_bmd(cfg, grid_hw) if cfg.bmd else None
    keypoint_head = KeypointTokenHead(cfg.dim, cfg.mlp_ratio, heatmap_hw) if cfg.hkme else None
    head_in = cfg.dim * (2 if cfg.bmd else 1)  # [M, F] or F
    motion_head = UpsampleHead(head_in, cfg.dim, cfg.num_joints, grid_hw, cfg.patch_size)
    return VREMD(backbone, input_proj, hkme, bmd, keypoint_head, motion_head)
