"""HKME: the masks of eqs. 1-2 have the paper's shapes and ranges, and they mask.

"They mask" is tested the way the issue asks: zero one token's mask and show that every other token's
output does not depend on that token's input (the masked token contributes nothing as a key or value).
"""

from __future__ import annotations

import math

import pytest
import torch

from vremd.frames import KEY
from vremd.model.blocks import TransformerStack, mask_log
from vremd.model.hkme import HKME, HumanMask, KeypointMask, SpatioTemporalAggregation

B, T, N, D, J, HEADS = 2, 3, 12, 16, 5, 2  # every axis a different size
ZEROED = 7  # the token whose mask is set to 0


@pytest.fixture
def feats():
    return torch.randn(B, T, N, D, generator=torch.Generator().manual_seed(0))


def _zero_one_token(frames: tuple[int, ...] = (0, 1, 2)) -> torch.Tensor:
    """A log mask ``(B, T, N)`` with random values in (0, 1] and token ZEROED masked (log 0) in ``frames``."""
    log_mask = torch.rand(B, T, N, generator=torch.Generator().manual_seed(3)).clamp_min(0.05).log()
    log_mask[:, list(frames), ZEROED] = -math.inf
    return log_mask


def _perturb_token(feats: torch.Tensor, frames: tuple[int, ...] = (0, 1, 2)) -> torch.Tensor:
    changed = feats.clone()
    changed[:, list(frames), ZEROED] += 5.0 * torch.randn(B, len(frames), D, generator=torch.Generator().manual_seed(4))
    return changed


def _others(x: torch.Tensor) -> torch.Tensor:
    """Every token of ``(B, T, N, D)`` (or ``(B, N, D)``) except ZEROED."""
    keep = [n for n in range(N) if n != ZEROED]
    return x[..., keep, :]


def test_human_mask_is_eq1_with_one_token_per_frame(feats):
    torch.manual_seed(0)
    human = HumanMask(D, HEADS, 2.0, depth=1, num_frames=T)
    assert human.human_token.shape == (T, 1, D)  # T_h in R^{3x1xD}
    f_c, log_mask = human(feats)
    mask = log_mask.exp()
    assert f_c.shape == (B, T, N, D) and mask.shape == (B, T, N)
    assert mask.min() >= 0 and mask.max() <= 1
    # recompute eq. 1 frame by frame with that frame's own token: Mask_h = sigmoid(F_bar T_h^T / sqrt(D))
    for t in range(T):
        x = torch.cat([human.human_token[t].expand(B, 1, D), feats[:, t]], dim=1)  # (B, 1+N, D)
        out = human.blocks(x)
        f_bar, token = out[:, 1:], out[:, :1]
        expected = torch.sigmoid((f_bar * token).sum(-1) / math.sqrt(D))  # (B, N)
        torch.testing.assert_close(mask[:, t], expected)
        torch.testing.assert_close(f_c[:, t], f_bar * expected.unsqueeze(-1))  # F_c = F_bar * Mask_h


def test_human_tokens_differ_per_frame(feats):
    human = HumanMask(D, HEADS, 2.0, depth=1, num_frames=T)
    _, log_mask = human(feats)
    same = feats[:, :1].expand(B, T, N, D)  # the same frame three times
    _, log_same = human(same)
    assert not torch.allclose(log_same[:, 0], log_same[:, 1])  # each frame's own T_h
    changed = feats.clone()
    changed[:, 0] += 1.0
    _, log_changed = human(changed)
    torch.testing.assert_close(log_mask[:, 1:], log_changed[:, 1:])  # intra-frame: other frames untouched


def test_keypoint_mask_is_eq2(feats):
    keypoint = KeypointMask(D, HEADS, 2.0, depth=1, num_joints=J, num_frames=T)
    f_f, log_mask, tokens = keypoint(feats)
    mask = log_mask.exp()
    assert f_f.shape == (B, T, N, D) and mask.shape == (B, T, N) and tokens.shape == (B, T, J, D)
    # softmax over the 3N tokens, summed over the 3J keypoint rows: the mask sums to 3J per sample
    torch.testing.assert_close(mask.sum(dim=(1, 2)), torch.full((B,), float(T * J)))
    x = torch.cat([feats, keypoint.keypoint_tokens.expand(B, T, J, D)], dim=2) + keypoint.frame_embed
    out = keypoint.blocks(x.flatten(1, 2)).unflatten(1, (T, N + J))
    f_hat, t_hat = out[:, :, :N], out[:, :, N:]
    expected = (t_hat.flatten(1, 2) @ f_hat.flatten(1, 2).transpose(1, 2) / math.sqrt(D)).softmax(-1).sum(1)
    torch.testing.assert_close(mask, expected.unflatten(1, (T, N)))
    torch.testing.assert_close(f_f, f_hat * mask.unsqueeze(-1))  # F_f = F_hat * Mask_k
    torch.testing.assert_close(tokens, t_hat)


def test_keypoint_stage_mixes_frames(feats):
    keypoint = KeypointMask(D, HEADS, 2.0, depth=1, num_joints=J, num_frames=T)
    _, _, tokens = keypoint(feats)
    changed = feats.clone()
    changed[:, 2] += 1.0  # change only frame t+1
    _, _, tokens2 = keypoint(changed)
    assert not torch.allclose(tokens[:, KEY], tokens2[:, KEY])  # spatio-temporal: the key frame's tokens see it


def test_a_scaled_token_is_not_masked_by_pre_norm_blocks(feats):
    """Why the masks act as key biases: scaling a token (eq. 1's product alone) barely changes the others."""
    torch.manual_seed(0)
    stack = TransformerStack(D, HEADS, 2.0, depth=2)
    x = feats.flatten(0, 1)  # (B*T, N, D)
    scaled = x.clone()
    scaled[:, ZEROED] *= 0.01  # a mask value of 0.01 applied as a per-token scale
    changed = _perturb_token(feats).flatten(0, 1)
    changed[:, ZEROED] *= 0.01  # the same mask on a different input of that token
    assert (_others(stack(changed)) - _others(stack(scaled))).abs().max() > 1e-2  # it still leaks through
    bias = torch.zeros(B * T, N)
    bias[:, ZEROED] = -math.inf
    torch.testing.assert_close(_others(stack(changed, mask_log(bias))), _others(stack(scaled, mask_log(bias))),
                               rtol=0, atol=0)


def test_zero_human_mask_token_does_not_reach_the_keypoint_stage(feats):
    keypoint = KeypointMask(D, HEADS, 2.0, depth=2, num_joints=J, num_frames=T)
    log_h = _zero_one_token()
    f_f, log_k, tokens = keypoint(feats, log_h)
    f_f2, log_k2, tokens2 = keypoint(_perturb_token(feats), log_h)
    torch.testing.assert_close(_others(f_f2), _others(f_f), rtol=0, atol=0)
    torch.testing.assert_close(tokens2, tokens, rtol=0, atol=0)  # keypoint tokens never see it either
    keep = [n for n in range(N) if n != ZEROED]
    torch.testing.assert_close(log_k2[..., keep], log_k[..., keep], rtol=0, atol=0)
    assert (log_k[..., ZEROED].exp() == 0).all()  # no keypoint mass on a token outside the human mask
    _, log_free, _ = keypoint(_perturb_token(feats))  # control: unmasked, the token does reach the others
    assert not torch.allclose(log_free[..., keep], keypoint(feats)[1][..., keep])


def test_zero_keypoint_mask_token_does_not_reach_the_aggregation(feats):
    agg = SpatioTemporalAggregation(D, HEADS, 2.0, depth=2, num_frames=T)
    log_k = _zero_one_token(frames=(1,))  # masked in the key frame only: its other frames stay visible
    out = agg(feats, log_k)
    out2 = agg(_perturb_token(feats, frames=(1,)), log_k)
    torch.testing.assert_close(_others(out2), _others(out), rtol=0, atol=0)
    free = agg(_perturb_token(feats, frames=(1,)))  # control: without the mask the change spreads
    assert not torch.allclose(_others(free), _others(agg(feats)))


def test_zero_mask_token_does_not_reach_other_tokens_through_hkme(feats):
    """End to end: a token outside the human mask in every frame does not change F at any other token."""
    torch.manual_seed(0)
    hkme = HKME(HumanMask(D, HEADS, 2.0, 1, T), KeypointMask(D, HEADS, 2.0, 1, J, T),
                SpatioTemporalAggregation(D, HEADS, 2.0, 1, T))
    log_h = _zero_one_token()
    f_c = torch.randn(B, T, N, D, generator=torch.Generator().manual_seed(5))
    f_f, log_k, _ = hkme.keypoint(f_c, log_h)
    f_f2, log_k2, _ = hkme.keypoint(_perturb_token(f_c), log_h)
    torch.testing.assert_close(_others(hkme.aggregation(f_f2, log_k2)), _others(hkme.aggregation(f_f, log_k)),
                               rtol=0, atol=0)


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


def test_fully_masked_rows_stay_finite(feats):
    agg = SpatioTemporalAggregation(D, HEADS, 2.0, depth=1, num_frames=T)
    out = agg(feats, torch.full((B, T, N), -math.inf))
    assert torch.isfinite(out).all()


def test_hkme_stages():
    feats = torch.randn(B, T, N, D)
    full = HKME(HumanMask(D, HEADS, 2.0, 1, T), KeypointMask(D, HEADS, 2.0, 1, J, T),
                SpatioTemporalAggregation(D, HEADS, 2.0, 1, T))
    out = full(feats)
    assert out["feature"].shape == (B, N, D) and out["keypoint_tokens"].shape == (B, J, D)
    assert out["human_mask"].shape == (B, T, N) and out["keypoint_mask"].shape == (B, T, N)
    f_c, log_h = full.human(feats)
    _, _, tokens = full.keypoint(f_c, log_h)
    torch.testing.assert_close(out["keypoint_tokens"], tokens[:, KEY])  # the key frame's tokens
    st_only = HKME(None, None, SpatioTemporalAggregation(D, HEADS, 2.0, 1, T))(feats)  # table 5(a)
    assert st_only["keypoint_tokens"] is None and st_only["human_mask"] is None and st_only["keypoint_mask"] is None
    no_f = HKME(HumanMask(D, HEADS, 2.0, 1, T), KeypointMask(D, HEADS, 2.0, 1, J, T), None)(feats)  # table 4(a)
    assert no_f["feature"] is None and no_f["keypoint_tokens"].shape == (B, J, D)
    with pytest.raises(ValueError, match="keypoint stage"):
        HKME(HumanMask(D, HEADS, 2.0, 1, T), None, None)
