"""Plain ViT backbone in the ViTPose layout (timm `VisionTransformer`) and the ViTPose checkpoint loader.

The loader reads the official ViTPose layout and MMPose 1.x's mmpretrain layout (`checkpoint_layouts`).

Two ViTPose details that a shape check would not catch are reproduced exactly:
- its patch-embedding conv pads by 2 pixels (kernel = stride = 16), still giving H/16 x W/16 tokens;
- it adds the class-token position slot to every patch position (``pos_embed[:, 1:] + pos_embed[:, :1]``).
The timm model has no class token and a position table of N entries, so the conversion folds the class
slot into the table once: the forward then equals ViTPose's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vremd.errors import InputError
from vremd.model.checkpoint_layouts import (
    MMPRETRAIN,
    checkpoint_size,
    detect_layout,
    read_weights_only,
    to_official_layout,
)

__all__ = [
    "PATCH_PADDING",
    "ViTBackbone",
    "VitPoseCheckpointError",
    "convert_vitpose_state_dict",
    "load_vitpose_checkpoint",
    "export_vitpose_state_dict",
]

PATCH_PADDING = 2  # ViTPose PatchEmbed: padding = 4 + 2 * (ratio // 2 - 1) with ratio 1


class VitPoseCheckpointError(InputError):
    """A ViTPose checkpoint does not fit the backbone; the message names the file and every bad key."""


class ViTBackbone(nn.Module):
    """Per-frame ViT tokens: frames ``(B, T, 3, H, W)`` -> tokens ``(B, T, N, D)``, N = (H/p) * (W/p).

    Tokens are row-major over the ``(H/p, W/p)`` grid (``grid_hw``), after the final LayerNorm. When
    ``frozen``, parameters have ``requires_grad`` False, the module stays in eval mode under
    ``model.train()`` and runs without autograd (nothing upstream of it can need a gradient).
    """

    def __init__(
        self, img_hw: tuple[int, int], patch_size: int, embed_dim: int, depth: int, num_heads: int,
        frozen: bool,
    ) -> None:
        super().__init__()
        H, W = img_hw
        if H % patch_size or W % patch_size:
            raise ValueError(f"ViTBackbone: image {H}x{W} is not a multiple of patch_size {patch_size}")
        if patch_size <= 2 * PATCH_PADDING:
            raise ValueError(f"ViTBackbone: patch_size {patch_size} must exceed twice the padding {PATCH_PADDING}")
        self.img_hw = (H, W)
        self.grid_hw = (H // patch_size, W // patch_size)
        self.embed_dim = embed_dim
        self.frozen = frozen
        self.vit = VisionTransformer(
            img_size=(H, W), patch_size=patch_size, num_classes=0, global_pool="", embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True, class_token=False,
            no_embed_class=True,  # position table has N entries, added without a class token
        )
        self.vit.patch_embed.proj.padding = (PATCH_PADDING, PATCH_PADDING)  # ViTPose's padded patch conv
        if frozen:
            self.vit.requires_grad_(False)
            self.vit.eval()

    def train(self, mode: bool = True) -> "ViTBackbone":
        """Set training mode; a frozen backbone stays in eval mode (no dropout / drop-path)."""
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, T, 3, H, W)`` (normalised) -> tokens ``(B, T, N, D)``."""
        B, T, C, H, W = frames.shape
        if (H, W) != self.img_hw:
            raise ValueError(f"ViTBackbone: expected {self.img_hw[0]}x{self.img_hw[1]} frames, got {H}x{W}")
        x = frames.flatten(0, 1)  # (B*T, 3, H, W): frames become batch items
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.vit.forward_features(x)  # (B*T, N, D)
        return tokens.unflatten(0, (B, T))  # (B, T, N, D)


# ---------------------------------------------------------------------------------------------
# ViTPose checkpoints

_BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def _resize_pos_embed(patch_pos: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a ``(1, h*w, D)`` row-major position table from grid ``src_hw`` to ``dst_hw``."""
    if src_hw == dst_hw:
        return patch_pos
    D = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, src_hw[0], src_hw[1], D).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid.float(), size=dst_hw, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, dst_hw[0] * dst_hw[1], D).to(patch_pos.dtype)  # (1, N, D)


def _source_grid(num_patches: int, dst_hw: tuple[int, int], src_hw: tuple[int, int] | None) -> tuple[int, int]:
    if src_hw is not None:
        if src_hw[0] * src_hw[1] != num_patches:
            raise VitPoseCheckpointError(
                f"backbone.pos_embed: {num_patches} patch positions do not form the given grid {src_hw}"
            )
        return src_hw
    scale = (num_patches / (dst_hw[0] * dst_hw[1])) ** 0.5
    same_aspect = (round(dst_hw[0] * scale), round(dst_hw[1] * scale))  # e.g. 16x12 for an 8x6 model grid
    if same_aspect[0] * same_aspect[1] == num_patches:
        return same_aspect
    side = round(num_patches ** 0.5)
    if side * side == num_patches:
        return (side, side)  # e.g. an MAE / ImageNet 224x224 table (14x14)
    raise VitPoseCheckpointError(
        f"backbone.pos_embed: cannot infer the grid of {num_patches} patch positions; pass src_grid_hw"
    )


def convert_vitpose_state_dict(
    sd: dict[str, torch.Tensor], grid_hw: tuple[int, int] = (16, 12), src_grid_hw: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Return the official ViTPose ``.pth`` state dict renamed to `ViTBackbone.vit`'s (timm) keys.

    ``backbone.pos_embed`` ``(1, 1 + Np, D)`` becomes ``pos_embed`` ``(1, N, D)``: its patch part is resized
    bicubically to ``grid_hw`` (H/16 x W/16; its own grid is ``src_grid_hw``, inferred when the table has
    the aspect ratio of ``grid_hw`` or is square) and the class slot is added to every position, as ViTPose's
    forward does.
    ``keypoint_head.*`` is dropped; keys outside ``backbone.`` are kept unchanged, so a strict load reports
    them as unexpected. A leading ``module.`` (DataParallel) is stripped. Pure function.
    """
    out: dict[str, torch.Tensor] = {}
    renames = {"backbone.patch_embed.proj.": "patch_embed.proj.", "backbone.last_norm.": "norm."}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.startswith("keypoint_head."):
            continue
        if key == "backbone.pos_embed":
            if value.dim() != 3 or value.shape[0] != 1 or value.shape[1] < 2:
                raise VitPoseCheckpointError(f"backbone.pos_embed: expected (1, 1 + Np, D), found {tuple(value.shape)}")
            cls_pos, patch_pos = value[:, :1], value[:, 1:]  # (1, 1, D), (1, Np, D)
            src_hw = _source_grid(patch_pos.shape[1], grid_hw, src_grid_hw)
            out["pos_embed"] = _resize_pos_embed(patch_pos, src_hw, grid_hw) + cls_pos  # (1, N, D)
            continue
        new = next((new + key[len(old):] for old, new in renames.items() if key.startswith(old)), None)
        if new is None and key.startswith("backbone.blocks."):
            new = key.removeprefix("backbone.")  # blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*
            if not any(f".{part}." in new for part in _BLOCK_PARTS):
                new = key  # an unknown block part: reported as unexpected
        out[new if new is not None else key] = value
    return out


def export_vitpose_state_dict(model: ViTBackbone) -> dict[str, torch.Tensor]:
    """``model``'s weights in the official ViTPose layout (``backbone.*``): the inverse of `convert_vitpose_state_dict`.

    The position table gets a zero class slot, ``(1, 1 + N, D)``, so ViTPose's ``pos_embed[:, 1:] +
    pos_embed[:, :1]`` gives back this model's table exactly.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.vit.state_dict().items():
        if key == "pos_embed":
            value = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], dim=1)  # (1, 1 + N, D)
        elif key.startswith("norm."):
            key = "last_norm." + key.removeprefix("norm.")
        out["backbone." + key] = value.detach().clone()
    return out


def _strict_mismatches(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    misshapen = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in sd and sd[k].shape != own[k].shape
    )
    problems = []
    for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("misshapen keys", misshapen)):
        if keys:
            problems.append(f"{name} ({len(keys)}): " + ", ".join(keys))
    return problems


def load_vitpose_checkpoint(model: ViTBackbone, path: str | Path) -> str:
    """Load a ViTPose checkpoint into ``model`` strictly, or raise one error listing every problem.

    Reads both layouts users can get (`checkpoint_layouts`: the official ViTPose ``.pth`` and MMPose 1.x's
    mmpretrain ``VisionTransformer``) and returns which one it found. Accepts a bare state dict or a
    ``{'state_dict': ..., 'meta': ...}`` wrapper (mmengine; numpy metadata is allowlisted, nothing else), read
    with ``torch.load(weights_only=True)``. A checkpoint of another width or depth is refused naming both
    sizes. The position table is resized to the model's token grid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ViTPose checkpoint not found (model.pretrained)")
    try:
        raw = read_weights_only(path)
    except Exception as exc:  # truncated, foreign, or a pickle with code in it (refused by weights_only)
        raise VitPoseCheckpointError(f"{path}: not a readable weights-only checkpoint ({type(exc).__name__})") from None
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(sd, dict):
        raise VitPoseCheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        layout = detect_layout(sd)
        _check_size(sd, model)
        if layout == MMPRETRAIN:
            sd = to_official_layout(sd, num_patches=model.grid_hw[0] * model.grid_hw[1])
        converted = convert_vitpose_state_dict(sd, grid_hw=model.grid_hw)
    except ValueError as exc:
        raise VitPoseCheckpointError(f"{path}: {exc}") from None
    problems = _strict_mismatches(model.vit, converted)
    if problems:
        raise VitPoseCheckpointError(f"{path} ({layout} layout): does not fit the ViT backbone: " + "; ".join(problems))
    model.vit.load_state_dict(converted, strict=True)
    return layout


def _check_size(sd: dict[str, torch.Tensor], model: ViTBackbone) -> None:
    """Refuse a ViT of another width or depth (say ViT-B weights for a ViT-L model), naming both sizes."""
    embed_dim, depth = checkpoint_size(sd)
    own = (model.embed_dim, len(model.vit.blocks))
    if (embed_dim, depth) != own:
        raise VitPoseCheckpointError(
            f"the checkpoint is a ViT of width {embed_dim} and depth {depth} ({_vit_name(embed_dim, depth)}), "
            f"the model a ViT of width {own[0]} and depth {own[1]} ({_vit_name(*own)}): set model.embed_dim, "
            "model.depth and model.num_heads to the checkpoint's size, or use weights of the model's size"
        )


def _vit_name(embed_dim: int, depth: int) -> str:
    return {(384, 12): "ViT-S", (768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H"}.get(
        (embed_dim, depth), "custom size"
    )
