"""HKME: the masks of eqs. 1-2 have the paper's shapes and ranges, and each stage does what it says."""

from __future__ import annotations

import math

import pytest
import torch

from vremd.model.hkme import HKME, KEY, FrameBlocks, HumanMask, KeypointMask, SpatioTemporalAggregation

B, T, N, D, J, HEADS = 2, 3, 12, 16, 5, 2  # every axis a different size


@pytest.fixture
def feats():
    return torch.randn(B, T, N, D, generator=torch.Generator().manual_seed(0))


def test_human_mask_is_eq1(feats):
    torch.manual_seed(0)
    human = HumanMask(D, HEADS, 2.0, depth=1)
    f_c, mask = human(feats)
    assert f_c.shape == (B, T, N, D) and mask.shape == (B, T, N)
    assert mask.min() >= 0 and mask.max() <= 1
    # recompute eq. 1 from the blocks' output: Mask_h = sigmoid(F_bar T_h^T / sqrt(D)), F_c = F_bar * Mask_h
    x = torch.cat([human.human_token.expand(B * T, 1, D), feats.flatten(0, 1)], dim=1)
    out = human.blocks(x)
    f_bar, token = out[:, 1:], out[:, :1]
    expected_mask = torch.sigmoid((f_bar * token).sum(-1) / math.sqrt(D)).unflatten(0, (B, T))
    torch.testing.assert_close(mask, expected_mask)
    torch.testing.assert_close(f_c, f_bar.unflatten(0, (B, T)) * expected_mask.unsqueeze(-1))


def test_human_mask_is_per_frame(feats):
    human = HumanMask(D, HEADS, 2.0, depth=1)
    _, mask = human(feats)
    changed = feats.clone()
    changed[:, 0] += 1.0
    _, mask2 = human(changed)
    torch.testing.assert_close(mask[:, 1:], mask2[:, 1:])  # other frames untouched
    assert not torch.allclose(mask[:, 0], mask2[:, 0])


def test_frame_blocks_have_no_mask(feats):
    out, mask = FrameBlocks(D, HEADS, 2.0, depth=1)(feats)
    assert out.shape == (B, T, N, D) and mask is None


def test_keypoint_mask_is_eq2(feats):
    keypoint = KeypointMask(D, HEADS, 2.0, depth=1, num_joints=J, num_frames=T, apply_mask=True)
    f_f, mask, tokens = keypoint(feats)
    assert f_f.shape == (B, T, N, D) and mask.shape == (B, T, N) and tokens.shape == (B, T, J, D)
    assert (mask >= 0).all()
    # softmax over the 3N tokens, summed over the 3J keypoint rows: the mask sums to 3J per sample
    torch.testing.assert_close(mask.sum(dim=(1, 2)), torch.full((B,), float(T * J)))
    unmasked = KeypointMask(D, HEADS, 2.0, depth=1, num_joints=J, num_frames=T, apply_mask=False)
    unmasked.load_state_dict(keypoint.state_dict())
    f_hat, none, tokens2 = unmasked(feats)
    assert none is None
    torch.testing.assert_close(tokens2, tokens)
    torch.testing.assert_close(f_f, f_hat * mask.unsqueeze(-1))  # F_f = F_hat * Mask_k


def test_keypoint_stage_mixes_frames(feats):
    keypoint = KeypointMask(D, HEADS, 2.0, depth=1, num_joints=J, num_frames=T, apply_mask=True)
    _, _, tokens = keypoint(feats)
    changed = feats.clone()
    changed[:, 2] += 1.0  # change only frame t+1
    _, _, tokens2 = keypoint(changed)
    assert not torch.allclose(tokens[:, KEY], tokens2[:, KEY])  # spatio-temporal: the key frame's tokens see it


def test_aggregation_reduces_three_frames_to_one(feats):
    agg = SpatioTemporalAggregation(D, HEADS, 2.0, depth=1, num_frames=T)
    out = agg(feats)
    assert out.shape == (B, N, D)
    for frame in range(T):
        changed = feats.clone()
        changed[:, frame] += 1.0
        assert not torch.allclose(agg(changed), out), f"frame {frame} does not reach F"
    changed = feats.clone()
    changed[1] += 1.0
    torch.testing.assert_close(agg(changed)[0], out[0])  # samples stay independent


def test_hkme_outputs(feats):
    hkme = HKME(
        HumanMask(D, HEADS, 2.0, 1),
        KeypointMask(D, HEADS, 2.0, 1, num_joints=J, num_frames=T, apply_mask=True),
        SpatioTemporalAggregation(D, HEADS, 2.0, 1, num_frames=T),
    )
    out = hkme(feats)
    assert out["feature"].shape == (B, N, D)
    assert out["keypoint_tokens"].shape == (B, J, D)
    assert out["human_mask"].shape == (B, T, N) and out["keypoint_mask"].shape == (B, T, N)
    _, _, tokens = hkme.keypoint(hkme.human(feats)[0])
    torch.testing.assert_close(out["keypoint_tokens"], tokens[:, KEY])  # the key frame's tokens
