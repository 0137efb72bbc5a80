"""Heatmap targets: encode -> decode round trip, weights, flip alignment between input and heatmap."""

import numpy as np
import pytest
import torch

from vremd.data.heatmaps import decode, encode, heatmap_to_input_xy, input_to_heatmap_xy

H, W, STRIDE = 64, 48, 4  # crop input; heatmap is (16, 12)


def test_encode_decode_round_trip_within_0_3_px_for_non_integer_positions():
    rng = np.random.default_rng(0)
    joints = np.stack([rng.uniform(6, W - 7, 17), rng.uniform(6, H - 7, 17)], axis=1)  # (J, 2)
    hm, weight = encode(joints, np.ones(17), (H // STRIDE, W // STRIDE), STRIDE, sigma_px=2.0)
    assert hm.shape == (17, 16, 12) and weight.tolist() == [1.0] * 17
    xy, maxvals = decode(torch.from_numpy(hm)[None])  # (1, J, 2) heatmap pixels
    err = np.abs(input_to_heatmap_xy(joints, STRIDE) - xy[0].numpy())
    assert err.max() < 0.3
    assert err.max() < 0.05  # the Taylor step is exact for a clean Gaussian
    back = heatmap_to_input_xy(xy[0].numpy(), STRIDE)
    assert np.abs(back - joints).max() < 0.3 * STRIDE
    assert maxvals.shape == (1, 17) and (maxvals > 0.8).all()


def test_invisible_or_outside_joints_get_zero_weight_and_zero_map():
    joints = np.array([[10.0, 10.0], [10.0, 10.0], [-20.0, 5.0]])
    hm, weight = encode(joints, np.array([1, 0, 1]), (16, 12), STRIDE, 2.0)
    assert weight.tolist() == [1.0, 0.0, 0.0]
    assert hm[1].max() == 0 and hm[2].max() == 0 and hm[0].max() > 0.5


def test_peak_position_and_quarter_offset_fallback():
    hm = torch.zeros(2, 3, 16, 12)
    hm[0, 0, 5, 7] = 1.0  # isolated spike: log surface is not a clean parabola -> quarter step
    hm[0, 0, 5, 8] = 0.5
    xy, maxvals = decode(hm)
    assert xy[0, 0, 1].item() == pytest.approx(5.0, abs=0.26)
    assert 7.0 < xy[0, 0, 0].item() <= 7.5
    assert maxvals[0, 0].item() == 1.0 and maxvals[1, 2].item() == 0.0


def test_flip_of_input_is_flip_of_heatmap():
    joints = np.array([[13.3, 20.7]])
    hm, _ = encode(joints, np.ones(1), (16, 12), STRIDE, 2.0)
    flipped = np.array([[W - 1 - 13.3, 20.7]])
    hm_f, _ = encode(flipped, np.ones(1), (16, 12), STRIDE, 2.0)
    assert np.allclose(hm_f, hm[:, :, ::-1], atol=1e-6)
