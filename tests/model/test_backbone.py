"""ViT backbone and the ViTPose checkpoint loader: a ViTPose-layout checkpoint round-trips exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vremd.model.backbone import (
    ViTBackbone,
    VitPoseCheckpointError,
    convert_vitpose_state_dict,
    export_vitpose_state_dict,
    load_vitpose_checkpoint,
)
from vremd.model.checkpoint_layouts import OFFICIAL

IMG_HW = (64, 48)  # H != W: a 4x3 token grid
PATCH, DIM, DEPTH, HEADS = 16, 24, 2, 3


def vitpose_state_dict(grid_hw: tuple[int, int] = (4, 3), seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official ViTPose .pth layout (backbone.* plus a keypoint_head)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "backbone.patch_embed.proj.weight": rnd(DIM, 3, PATCH, PATCH),
        "backbone.patch_embed.proj.bias": rnd(DIM),
        "backbone.pos_embed": rnd(1, 1 + grid_hw[0] * grid_hw[1], DIM, scale=0.5),
        "backbone.last_norm.weight": 1 + rnd(DIM, scale=0.1),
        "backbone.last_norm.bias": rnd(DIM),
        "keypoint_head.final_layer.weight": rnd(17, DIM, 1, 1),
        "keypoint_head.final_layer.bias": rnd(17),
    }
    shapes = {"norm1": (DIM,), "attn.qkv": (3 * DIM, DIM), "attn.proj": (DIM, DIM), "norm2": (DIM,),
              "mlp.fc1": (4 * DIM, DIM), "mlp.fc2": (DIM, 4 * DIM)}
    for i in range(DEPTH):
        for part, shape in shapes.items():
            is_norm = part.startswith("norm")
            sd[f"backbone.blocks.{i}.{part}.weight"] = (1 + rnd(*shape, scale=0.1)) if is_norm else rnd(*shape)
            sd[f"backbone.blocks.{i}.{part}.bias"] = rnd(shape[0])
    return sd


def plain_vitpose_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """ViTPose's forward written out in plain torch: images (B, 3, H, W) -> tokens (B, N, D)."""
    ln = lambda x, p: F.layer_norm(x, (DIM,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)  # noqa: E731
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    x = F.conv2d(images, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"],
                 stride=PATCH, padding=2)  # ViTPose pads its patch conv by 2
    x = x.flatten(2).transpose(1, 2)  # (B, N, D)
    pos = sd["backbone.pos_embed"]
    x = x + pos[:, 1:] + pos[:, :1]  # the class slot is added to every patch position
    B, N, _ = x.shape
    dh = DIM // HEADS
    for i in range(DEPTH):
        p = f"backbone.blocks.{i}"
        q, k, v = lin(ln(x, p + ".norm1"), p + ".attn.qkv").reshape(B, N, 3, HEADS, dh).permute(2, 0, 3, 1, 4)
        attn = ((q / math.sqrt(dh)) @ k.transpose(-2, -1)).softmax(-1)
        x = x + lin((attn @ v).transpose(1, 2).reshape(B, N, DIM), p + ".attn.proj")
        x = x + lin(F.gelu(lin(ln(x, p + ".norm2"), p + ".mlp.fc1")), p + ".mlp.fc2")
    return ln(x, "backbone.last_norm")


def make_backbone(frozen: bool = True) -> ViTBackbone:
    return ViTBackbone(IMG_HW, PATCH, DIM, DEPTH, HEADS, frozen=frozen)


def test_tokens_shape_and_grid():
    backbone = make_backbone()
    assert backbone.grid_hw == (4, 3)
    assert backbone.vit.patch_embed.proj.padding == (2, 2)
    out = backbone(torch.randn(2, 3, 3, *IMG_HW))
    assert out.shape == (2, 3, 12, DIM)


def test_frames_are_processed_independently():
    backbone = make_backbone()
    frames = torch.randn(2, 3, 3, *IMG_HW)
    out = backbone(frames)
    single = backbone(frames[1:, 2:])  # one sample, one frame
    torch.testing.assert_close(out[1:, 2:], single, atol=1e-5, rtol=1e-5)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 64x48 frames, got 48x64"):
        make_backbone()(torch.randn(1, 3, 3, 48, 64))


def test_checkpoint_round_trip_matches_plain_vitpose(tmp_path):
    sd = vitpose_state_dict()
    path = tmp_path / "vitpose.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 210}}, path)
    backbone = make_backbone()
    load_vitpose_checkpoint(backbone, path)
    own = backbone.vit.state_dict()
    converted = convert_vitpose_state_dict(sd, grid_hw=(4, 3))
    assert set(own) == set(converted)
    for key, value in converted.items():
        assert torch.equal(own[key], value), key  # every tensor landed
    images = torch.randn(2, 3, *IMG_HW)
    expected = plain_vitpose_forward(sd, images)
    got = backbone(images.unsqueeze(1)).squeeze(1)  # (B, 1, 3, H, W) -> (B, N, D)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_exported_backbone_loads_back_bit_identical_through_the_vitpose_loader(tmp_path):
    """The `pretrain` stage's checkpoint: this backbone in the official layout, read by the paper's loader."""
    torch.manual_seed(3)
    trained = make_backbone(frozen=False)
    exported = export_vitpose_state_dict(trained)
    assert all(k.startswith("backbone.") for k in exported) and exported["backbone.pos_embed"].shape[1] == 4 * 3 + 1
    assert "backbone.last_norm.weight" in exported
    torch.save({"state_dict": exported, "meta": {"made_by": "test"}}, tmp_path / "demo.pth")
    loaded = make_backbone()
    assert load_vitpose_checkpoint(loaded, tmp_path / "demo.pth") == OFFICIAL
    for key, value in trained.vit.state_dict().items():
        assert torch.equal(loaded.vit.state_dict()[key], value), key
    frames = torch.randn(2, 3, 3, *IMG_HW)
    assert torch.equal(loaded(frames), trained.eval()(frames))
    torch.testing.assert_close(plain_vitpose_forward(exported, frames[:, 0]), loaded(frames)[:, 0], atol=1e-5, rtol=1e-5)


def test_bare_state_dict_and_module_prefix_are_accepted(tmp_path):
    sd = {f"module.{k}": v for k, v in vitpose_state_dict().items()}
    torch.save(sd, tmp_path / "bare.pth")
    backbone = make_backbone()
    load_vitpose_checkpoint(backbone, tmp_path / "bare.pth")
    torch.testing.assert_close(backbone.vit.patch_embed.proj.bias, sd["module.backbone.patch_embed.proj.bias"])


def test_pos_embed_is_resized_bicubically_from_another_grid():
    sd = vitpose_state_dict(grid_hw=(8, 6))
    pos = sd["backbone.pos_embed"]
    cls_slot = pos[:, :1]
    sd["backbone.pos_embed"] = torch.cat([cls_slot, torch.full((1, 48, DIM), 0.25)], dim=1)  # constant field
    out = convert_vitpose_state_dict(sd, grid_hw=(4, 3))["pos_embed"]  # 8x6 inferred: same aspect ratio
    assert out.shape == (1, 12, DIM)
    torch.testing.assert_close(out, (0.25 + cls_slot).expand(1, 12, DIM))
    # a field varying along x only keeps varying along x only, and in the same direction
    ramp = torch.linspace(-1, 1, 6).repeat(8)[None, :, None].expand(1, 48, DIM)  # (1, 8*6, D) row-major
    sd["backbone.pos_embed"] = torch.cat([torch.zeros(1, 1, DIM), ramp], dim=1)
    grid = convert_vitpose_state_dict(sd, grid_hw=(4, 3), src_grid_hw=(8, 6))["pos_embed"][0, :, 0].reshape(4, 3)
    torch.testing.assert_close(grid, grid[:1].expand(4, 3))
    assert grid[0, 0] < grid[0, 1] < grid[0, 2]


def test_square_pos_embed_grid_is_inferred():
    sd = vitpose_state_dict(grid_hw=(14, 14))
    assert convert_vitpose_state_dict(sd, grid_hw=(16, 12))["pos_embed"].shape == (1, 192, DIM)
    sd = vitpose_state_dict(grid_hw=(1, 37))
    with pytest.raises(VitPoseCheckpointError, match="cannot infer the grid of 37"):
        convert_vitpose_state_dict(sd, grid_hw=(4, 3))


def test_mismatched_checkpoint_lists_every_bad_key(tmp_path):
    sd = vitpose_state_dict()
    del sd["backbone.blocks.1.mlp.fc2.bias"]
    sd["backbone.blocks.0.attn.qkv.weight"] = torch.zeros(2 * DIM, DIM)
    sd["backbone.cls_token"] = torch.zeros(1, 1, DIM)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    backbone = make_backbone()
    before = backbone.vit.patch_embed.proj.weight.clone()
    with pytest.raises(VitPoseCheckpointError) as info:
        load_vitpose_checkpoint(backbone, path)
    message = str(info.value)
    assert str(path) in message
    assert "1 missing keys: blocks.1.mlp.fc2.bias" in message
    assert "1 unexpected keys: backbone.cls_token" in message
    assert f"blocks.0.attn.qkv.weight (checkpoint ({2 * DIM}, {DIM}), model ({3 * DIM}, {DIM}))" in message
    assert torch.equal(backbone.vit.patch_embed.proj.weight, before)  # nothing half-loaded


def test_missing_checkpoint_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_vitpose_checkpoint(make_backbone(), tmp_path / "nope.pth")


def test_frozen_backbone_has_no_trainable_parameters_and_stays_in_eval():
    backbone = make_backbone(frozen=True)
    backbone.train()
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not any(m.training for m in backbone.vit.modules())
    assert backbone(torch.randn(1, 3, 3, *IMG_HW)).grad_fn is None
    trainable = make_backbone(frozen=False).train()
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable(torch.randn(1, 3, 3, *IMG_HW)).grad_fn is not None
