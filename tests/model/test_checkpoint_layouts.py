"""Both ViTPose checkpoint layouts users can download load to the same backbone and the reference forward.

The MMPose 1.x file is built here with exactly the real file's structure: mmengine's ``{"meta", "state_dict"}``
with numpy arrays and scalars in ``meta["dataset_meta"]`` (mmpose ``parse_pose_metainfo``), mmpretrain
``VisionTransformer`` keys (``patch_embed.projection``, ``layers.N.ln1``, ``attn.qkv``, ``ffn.layers.0.0``,
``ffn.layers.1``, final ``ln1``) and MMPose's heatmap head (``head.deconv_layers`` / ``head.final_layer``).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.model.test_backbone import DEPTH, DIM, HEADS, IMG_HW, PATCH, make_backbone, plain_vitpose_forward, vitpose_state_dict
from vremd.model.backbone import ViTBackbone, VitPoseCheckpointError, load_vitpose_checkpoint
from vremd.model.checkpoint_layouts import MMPRETRAIN, OFFICIAL, detect_layout

OFFICIAL_TO_MMPRETRAIN = {  # per block part: official name -> mmpretrain name
    "norm1": "ln1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "ln2",
    "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1",
}


def mmpose_checkpoint(official: dict[str, torch.Tensor], extra_pos_row: bool = False) -> dict:
    """The same weights as ``official``, saved as MMPose 1.x saves a ViTPose model (class row folded in)."""
    sd: dict[str, torch.Tensor] = {
        "backbone.patch_embed.projection.weight": official["backbone.patch_embed.proj.weight"],
        "backbone.patch_embed.projection.bias": official["backbone.patch_embed.proj.bias"],
        "backbone.ln1.weight": official["backbone.last_norm.weight"],
        "backbone.ln1.bias": official["backbone.last_norm.bias"],
        "head.deconv_layers.0.weight": torch.zeros(DIM, 8, 4, 4),
        "head.final_layer.weight": torch.zeros(17, 8, 1, 1),
        "head.final_layer.bias": torch.zeros(17),
    }
    pos = official["backbone.pos_embed"]
    folded = pos[:, 1:] + pos[:, :1]  # (1, Np, D): mmpretrain adds its table as is
    sd["backbone.pos_embed"] = torch.cat([torch.full_like(pos[:, :1], 7.0), folded], 1) if extra_pos_row else folded
    for i in range(DEPTH):
        for part, mm in OFFICIAL_TO_MMPRETRAIN.items():
            for kind in ("weight", "bias"):
                sd[f"backbone.layers.{i}.{mm}.{kind}"] = official[f"backbone.blocks.{i}.{part}.{kind}"]
    dataset_meta = {
        "dataset_name": "coco", "num_keypoints": 17,
        "keypoint_id2name": {i: f"kpt{i}" for i in range(17)},
        "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
        "flip_pairs": [(1, 2), (3, 4)], "skeleton_links": [(15, 13), (13, 11)],
        "keypoint_colors": np.full((17, 3), 255, dtype=np.uint8),
        "skeleton_link_colors": np.zeros((19, 3), dtype=np.uint8),
        "dataset_keypoint_weights": np.ones(17, dtype=np.float32),
        "sigmas": np.full(17, 0.079, dtype=np.float32),
    }
    meta = {"epoch": 210, "iter": 123, "mmengine_version": "0.7.0", "time": "20230314_000000",
            "seed": np.int64(21), "lr": np.float64(5e-4), "dataset_meta": dataset_meta}
    return {"meta": meta, "state_dict": sd}


def plain_mmpretrain_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """mmpretrain VisionTransformer (with_cls_token=False, patch padding 2) in plain torch: (B, 3, H, W) -> (B, N, D)."""
    ln = lambda x, p: F.layer_norm(x, (DIM,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)  # noqa: E731
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd[p + ".bias"])  # noqa: E731
    x = F.conv2d(images, sd["backbone.patch_embed.projection.weight"], sd["backbone.patch_embed.projection.bias"],
                 stride=PATCH, padding=2)
    x = x.flatten(2).transpose(1, 2) + sd["backbone.pos_embed"]  # (B, N, D): the table is added as is
    B, N, _ = x.shape
    dh = DIM // HEADS
    for i in range(DEPTH):
        p = f"backbone.layers.{i}"
        q, k, v = lin(ln(x, p + ".ln1"), p + ".attn.qkv").reshape(B, N, 3, HEADS, dh).permute(2, 0, 3, 1, 4)
        attn = ((q / math.sqrt(dh)) @ k.transpose(-2, -1)).softmax(-1)
        x = x + lin((attn @ v).transpose(1, 2).reshape(B, N, DIM), p + ".attn.proj")
        x = x + lin(F.gelu(lin(ln(x, p + ".ln2"), p + ".ffn.layers.0.0")), p + ".ffn.layers.1")
    return ln(x, "backbone.ln1")


def test_both_layouts_load_to_identical_weights_and_the_reference_forward(tmp_path):
    official = vitpose_state_dict(seed=3)
    torch.save({"state_dict": official, "meta": {"epoch": 210}}, tmp_path / "official.pth")
    checkpoint = mmpose_checkpoint(official)
    torch.save(checkpoint, tmp_path / "mmpose.pth")
    a, b = make_backbone(), make_backbone()
    assert load_vitpose_checkpoint(a, tmp_path / "official.pth") == OFFICIAL
    assert load_vitpose_checkpoint(b, tmp_path / "mmpose.pth") == MMPRETRAIN
    own_a, own_b = a.vit.state_dict(), b.vit.state_dict()
    assert own_a.keys() == own_b.keys()
    for key in own_a:
        torch.testing.assert_close(own_a[key], own_b[key], atol=0, rtol=0, msg=key)
    images = torch.randn(2, 3, *IMG_HW)
    got = b(images.unsqueeze(1)).squeeze(1)  # (B, N, D)
    torch.testing.assert_close(got, plain_mmpretrain_forward(checkpoint["state_dict"], images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, plain_vitpose_forward(official, images), atol=1e-5, rtol=1e-5)


def test_mmpretrain_table_with_an_unused_class_row_drops_it_as_mmpretrain_does(tmp_path):
    official = vitpose_state_dict(seed=4)
    checkpoint = mmpose_checkpoint(official, extra_pos_row=True)
    torch.save(checkpoint, tmp_path / "mmpose.pth")
    backbone = make_backbone()
    load_vitpose_checkpoint(backbone, tmp_path / "mmpose.pth")
    torch.testing.assert_close(backbone.vit.pos_embed, checkpoint["state_dict"]["backbone.pos_embed"][:, 1:])


def test_numpy_metadata_is_allowlisted_but_code_is_still_refused(tmp_path):
    checkpoint = mmpose_checkpoint(vitpose_state_dict())
    torch.save(checkpoint, tmp_path / "mmpose.pth")
    with pytest.raises(pickle.UnpicklingError):  # what plain weights_only loading does with this file
        torch.load(tmp_path / "mmpose.pth", weights_only=True)
    load_vitpose_checkpoint(make_backbone(), tmp_path / "mmpose.pth")  # allowlisted: loads

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    checkpoint["meta"]["evil"] = Payload()
    torch.save(checkpoint, tmp_path / "evil.pth")
    with pytest.raises(VitPoseCheckpointError, match="unreadable checkpoint"):
        load_vitpose_checkpoint(make_backbone(), tmp_path / "evil.pth")


def test_a_checkpoint_of_another_size_names_both_sizes(tmp_path):
    official = vitpose_state_dict()
    torch.save(mmpose_checkpoint(official), tmp_path / "small.pth")
    bigger = ViTBackbone(IMG_HW, PATCH, 2 * DIM, DEPTH + 1, HEADS, frozen=True)
    with pytest.raises(VitPoseCheckpointError) as info:
        load_vitpose_checkpoint(bigger, tmp_path / "small.pth")
    message = str(info.value)
    assert "small.pth" in message
    assert f"width {DIM} and depth {DEPTH}" in message
    assert f"width {2 * DIM} and depth {DEPTH + 1}" in message


def test_vit_b_in_a_vit_l_model_is_named_by_size():
    from vremd.model.backbone import _check_size

    vit_b = {"backbone.patch_embed.projection.weight": torch.zeros(768, 3, 16, 16)}
    vit_b |= {f"backbone.layers.{i}.ln1.weight": torch.zeros(768) for i in range(12)}
    model = ViTBackbone((32, 32), 16, 1024, 24, 16, frozen=True)  # a ViT-L (24 x 1024), tiny input
    with pytest.raises(VitPoseCheckpointError, match=r"\(ViT-B\).*\(ViT-L\)"):
        _check_size(vit_b, model)


def test_an_unknown_layout_is_refused(tmp_path):
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(VitPoseCheckpointError, match="not a ViTPose checkpoint"):
        load_vitpose_checkpoint(make_backbone(), tmp_path / "other.pth")
    with pytest.raises(ValueError):
        detect_layout({"x": torch.zeros(1)})
