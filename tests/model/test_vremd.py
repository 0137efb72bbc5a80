"""VREMD assembly: every switch combination builds and runs, gradients go where they should, it learns.

Switch combinations: the product of hkme, bmd, human_mask, keypoint_mask, motion_attention and
bidirectional_separation, collapsed where a switch has no effect: the mask switches only exist inside HKME
(hkme off -> they are not varied), motion_attention and bidirectional_separation only inside BMD (bmd off ->
not varied); where no ADC block reads F (bmd off, or dc) HKME needs the keypoint stage (refused without).
That leaves 4 * 4 + 2 * 2 + 2 + 6 + 1 = 29 distinct models. The smoke model runs HKME / BMD at D=16 < E=32 (a projection);
`test_backbone_width_has_no_projection` covers D = E.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from vremd.config import ModelConfig, smoke_config
from vremd.data.joints import ANNOTATED_JOINTS, JOINT_NAMES, NUM_JOINTS, UNANNOTATED_JOINTS
from vremd.eval.poseval_io import CATEGORY_NAMES
from vremd.ablation.cost import format_cost_table, module_flops, parameter_counts
from vremd.train.losses import heatmap_mse
from vremd.model.vremd import ARCH_VERSION, HeadAlone, ModelStateError, build_model

SMOKE = dataclasses.replace(smoke_config().model, dim=16)  # D=16 != E=32 != N=12 != B=2
B, T = 2, 3
J = NUM_JOINTS  # output slots (17); the model predicts the 15 annotated ones
H, W = SMOKE.img_height, SMOKE.img_width  # 64 x 48
N = (H // 16) * (W // 16)


def _combinations():
    for hkme, bmd in itertools.product([True, False], repeat=2):
        masks = list(itertools.product([True, False], repeat=2)) if hkme else [(True, True)]
        motion = list(itertools.product(["dc", "da", "dca"], [True, False])) if bmd else [("dca", True)]
        for (human, keypoint), (attention, separation) in itertools.product(masks, motion):
            if hkme and not keypoint and (not bmd or attention == "dc"):
                continue  # no ADC block reads F: HKME would act through nothing (refused)
            yield dict(hkme=hkme, bmd=bmd, human_mask=human, keypoint_mask=keypoint,
                       motion_attention=attention, bidirectional_separation=separation)


COMBINATIONS = list(_combinations())


def _id(switches: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in switches.items())


def build(seed: int = 0, **switches):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(dataclasses.replace(SMOKE, **switches))


def frames(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_combinations_are_distinct():
    assert len(COMBINATIONS) == 29
    assert len({_id(c) for c in COMBINATIONS}) == 29


@pytest.mark.parametrize("switches", COMBINATIONS, ids=_id)
def test_output_shapes_for_every_switch_combination(switches):
    model = build(**switches).eval()
    with torch.no_grad():
        out = model(frames(), return_aux=True)
    assert out["heatmaps"].shape == (B, J, H // 4, W // 4)
    assert torch.isfinite(out["heatmaps"]).all()
    assert torch.equal(out["heatmaps"][:, list(UNANNOTATED_JOINTS)], torch.zeros(B, 2, H // 4, W // 4))  # ears
    assert (out["heatmaps"][:, list(ANNOTATED_JOINTS)].flatten(2).abs().amax(-1) > 0).all()
    assert out["human_mask"].shape == (B, T, N) and out["keypoint_mask"].shape == (B, T, N)
    if switches["bmd"]:
        nh, k = (1, 9) if switches["motion_attention"] == "dc" else (SMOKE.heads, SMOKE.num_points)
        assert out["sampling_points"].shape == (B, nh, N, k, 2)
    else:
        assert "sampling_points" not in out
    assert set(model(frames()).keys()) == {"heatmaps"}
    assert (model.hkme is not None) == switches["hkme"] and (model.bmd is not None) == switches["bmd"]


def test_masks_follow_eqs_1_and_2():
    out = build().eval()(frames(), return_aux=True)
    human, keypoint = out["human_mask"], out["keypoint_mask"]
    assert ((human >= 0) & (human <= 1)).all() and not torch.allclose(human, torch.ones_like(human))
    torch.testing.assert_close(keypoint.sum(dim=(1, 2)), torch.full((B,), float(T * len(ANNOTATED_JOINTS))))  # 3J
    off = build(human_mask=False, keypoint_mask=False).eval()(frames(), return_aux=True)
    assert torch.equal(off["human_mask"], torch.ones(B, T, N))  # no mask: features pass unmasked
    assert torch.equal(off["keypoint_mask"], torch.ones(B, T, N))


@pytest.mark.parametrize("switches", [
    {}, dict(keypoint_mask=False, human_mask=False), dict(bidirectional_separation=False, motion_attention="da"),
    dict(motion_attention="dc"), dict(hkme=False), dict(bmd=False), dict(hkme=False, bmd=False),
], ids=_id)
def test_gradients_reach_every_trainable_parameter_and_not_the_frozen_backbone(switches):
    """Checked after one optimizer step: deformable offset generators start at zero weight (DCNv2 /
    Deformable-DETR initialisation), which zeroes the first gradient of the layers feeding them."""
    model = build(**switches).train()
    target = torch.rand(B, J, H // 4, W // 4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        heatmap_mse(model(frames())["heatmaps"], target, torch.ones(B, J)).backward()
        optimizer.step()
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = sorted(n for n, p in trainable.items() if p.grad is None or torch.count_nonzero(p.grad) == 0)
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_unfrozen_backbone_is_trained():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(SMOKE, freeze_backbone=False)).train()
    heatmap_mse(model(frames())["heatmaps"], torch.rand(B, J, H // 4, W // 4), torch.ones(B, J)).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_same_seed_same_output():
    x = frames()
    a, b, c = build(seed=3).eval(), build(seed=3).eval(), build(seed=4).eval()
    with torch.no_grad():
        out_a, out_b, out_c = a(x)["heatmaps"], b(x)["heatmaps"], c(x)["heatmaps"]
    assert torch.equal(out_a, out_b)
    assert not torch.allclose(out_a, out_c)


def _gaussian_targets(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = H // 4, W // 4
    centres = torch.rand(B, J, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])  # (x, y)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * 2.0**2))  # (B, J, h, w), sigma 2 px


def test_overfits_one_tiny_batch():
    model = build().train()
    x, target, weight = frames(), _gaussian_targets(5), torch.ones(B, J)
    weight[0, 1] = 0
    weight[:, list(UNANNOTATED_JOINTS)] = 0  # as in PoseTrack: the ears are never annotated
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(60):
        loss = heatmap_mse(model(x)["heatmaps"], target, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss {losses[0]:.4g} -> {losses[-1]:.4g}"


def test_bad_config_values_are_clear_errors():
    with pytest.raises(ValueError, match="model.motion_attention: unknown value 'dcx'"):
        build(motion_attention="dcx")
    with pytest.raises(ValueError, match="model.annotated_joints"):
        build(num_joints=15)  # slot 16 does not exist
    with pytest.raises(ValueError, match="model.annotated_joints"):
        build(annotated_joints=(0, 2, 1))
    with pytest.raises(ValueError, match="model.keypoint_mask"):
        build(bmd=False, keypoint_mask=False)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build(pretrained="/nonexistent/missing.pth")


def test_pretrained_vitpose_weights_are_loaded(tmp_path):
    donor = build(seed=7)
    sd = {("backbone.last_norm." + k[5:]) if k.startswith("norm.") else
          ("backbone.patch_embed." + k[12:]) if k.startswith("patch_embed.") else f"backbone.{k}": v
          for k, v in donor.backbone.vit.state_dict().items()}
    pos = sd["backbone.pos_embed"]  # timm (1, N, D) -> ViTPose (1, 1 + N, D) with a zero class slot
    sd["backbone.pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    torch.save({"state_dict": sd}, tmp_path / "vitpose.pth")
    model = build(seed=0, pretrained=str(tmp_path / "vitpose.pth"))
    for key, value in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_cost_table_per_module(capsys):
    model = build().eval()
    total, per_child = module_flops(model, frames()[:1])
    rows = [dataclasses.replace(r, flops=per_child[r.name]) for r in parameter_counts(model)]
    names = [r.name for r in rows]
    assert names == ["backbone", "input_proj", "hkme", "bmd", "keypoint_head", "motion_head"]
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert rows[0].trainable == 0 and all(r.trainable == r.params for r in rows[1:])
    assert all(r.flops > 0 for r in rows) and sum(r.flops for r in rows) == total
    with capsys.disabled():
        print("\nsmoke model cost (per sample)\n" + format_cost_table(rows))


def test_annotated_joints_are_the_slots_poseval_scores():
    assert ModelConfig().annotated_joints == ANNOTATED_JOINTS  # config default = the data package's joint set
    assert {JOINT_NAMES[j] for j in ANNOTATED_JOINTS} == set(CATEGORY_NAMES)  # poseval maps joints by these names
    assert {JOINT_NAMES[j] for j in UNANNOTATED_JOINTS} == {"left_ear", "right_ear"}


def test_keypoint_tokens_cover_the_annotated_joints_only():
    model = build()
    assert len(ANNOTATED_JOINTS) == 15 and set(ANNOTATED_JOINTS).isdisjoint(UNANNOTATED_JOINTS)
    assert model.hkme.keypoint.keypoint_tokens.shape == (T, 15, SMOKE.dim)
    assert model.motion_head.final.out_channels == 15


def test_backbone_width_has_no_projection():
    model = build_model(dataclasses.replace(SMOKE, dim=SMOKE.embed_dim))
    assert model.input_proj is None
    tokens = torch.randn(B, T, N, SMOKE.embed_dim)
    seen = {}
    model.hkme.human.register_forward_hook(lambda m, args, out: seen.update(human_in=args[0]))
    model.eval().forward_tokens(tokens)
    assert torch.equal(seen["human_in"], tokens)  # HKME gets the backbone tokens themselves
    assert build().input_proj is not None  # D != E: LayerNorm + Linear


def test_checkpoints_of_another_layout_are_refused():
    model = build()
    state = model.state_dict()
    assert int(state["arch_version"]) == ARCH_VERSION
    build(seed=1).load_state_dict(state)  # same layout loads
    old = {k: v for k, v in state.items() if k != "arch_version"}
    for strict in (True, False):
        with pytest.raises(ModelStateError, match="saved before version 2"):
            build().load_state_dict(old, strict=strict)
    with pytest.raises(ModelStateError, match="arch_version 1"):
        build().load_state_dict({**state, "arch_version": torch.tensor(1)})


def test_baseline_runs_the_vit_on_the_key_frame_only():
    """The baseline reads F_t^i alone (a single-frame model, the `pretrain` stage's): the neighbours' ViT passes
    are skipped, the output is the one of the full pass, and changing frames t-1, t+1 changes nothing."""
    model = build(hkme=False, bmd=False).eval()
    x = frames()
    with torch.no_grad():
        out = model(x)["heatmaps"]
        full = model.forward_tokens(model.backbone(x))["heatmaps"]  # all three frames through the ViT
        other = x.clone()
        other[:, [0, 2]] = torch.randn_like(other[:, [0, 2]])
        torch.testing.assert_close(out, full, atol=1e-6, rtol=1e-5)
        assert torch.equal(model(other)["heatmaps"], out)
    seen = []
    model.backbone.vit.patch_embed.register_forward_hook(lambda module, args, result: seen.append(args[0].shape[0]))
    with torch.no_grad():
        model(x)
    assert seen == [x.shape[0]]  # B images, not B * 3


def test_each_head_alone_and_their_average():
    """`--head`: H_m and H_k scored alone; H is exactly their average, and a model without H_k refuses it."""
    model = build().eval()
    x = frames()
    with torch.no_grad():
        out = model(x, return_aux=True)
        assert torch.equal(out["heatmaps"], (out["heatmaps_motion"] + out["heatmaps_keypoint"]) / 2)
        assert not torch.equal(out["heatmaps_motion"], out["heatmaps_keypoint"])
        assert torch.equal(HeadAlone(model, "keypoint")(x)["heatmaps"], out["heatmaps_keypoint"])
    with pytest.raises(ValueError, match="no keypoint-token head"):
        HeadAlone(build(hkme=False, bmd=True), "keypoint")
    with pytest.raises(ValueError, match="--head: expected one of motion, keypoint"):
        HeadAlone(model, "both")
