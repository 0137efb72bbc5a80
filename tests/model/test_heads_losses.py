"""Heatmap heads give (B, J, H/4, W/4) maps; heatmap_mse is the weighted joints MSE."""

from __future__ import annotations

import pytest
import torch

from vremd.model.heads import KeypointTokenHead, UpsampleHead
from vremd.model.losses import heatmap_mse

B, J, D = 2, 5, 16


def test_keypoint_token_head_shape():
    head = KeypointTokenHead(D, 2.0, heatmap_hw=(16, 12))
    tokens = torch.randn(B, J, D)
    out = head(tokens)
    assert out.shape == (B, J, 16, 12)
    swapped = head(tokens.flip(1))
    torch.testing.assert_close(swapped, out.flip(1))  # one joint's token makes that joint's heatmap


@pytest.mark.parametrize("patch_size,grid_hw", [(16, (4, 3)), (8, (8, 6)), (4, (16, 12))])
def test_upsample_head_reaches_stride_4(patch_size, grid_hw):
    head = UpsampleHead(in_dim=24, hidden=D, num_joints=J, grid_hw=grid_hw, patch_size=patch_size)
    out = head(torch.randn(B, grid_hw[0] * grid_hw[1], 24))
    assert out.shape == (B, J, 16, 12)  # 64x48 input at stride 4


def test_upsample_head_keeps_token_layout():
    """A token at grid (row 0, col 2) lights up the top-right corner, not a transposed place."""
    head = UpsampleHead(in_dim=D, hidden=D, num_joints=1, grid_hw=(4, 3), patch_size=16).eval()
    tokens = torch.zeros(1, 12, D)
    tokens[0, 2] = torch.randn(D) * 10  # row-major: row 0, col 2
    base = head(torch.zeros(1, 12, D))
    diff = (head(tokens) - base).abs()[0, 0]  # (16, 12)
    assert diff[:6, 6:].sum() > 10 * diff[8:, :6].sum()


def test_upsample_head_errors():
    with pytest.raises(ValueError, match="power of 2"):
        UpsampleHead(8, 8, J, (4, 3), patch_size=12)
    with pytest.raises(ValueError, match="do not fill the 4x3 grid"):
        UpsampleHead(8, 8, J, (4, 3), patch_size=16)(torch.randn(1, 10, 8))


def test_heatmap_mse_matches_joints_mse():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(B, J, 6, 4, generator=g), torch.rand(B, J, 6, 4, generator=g)
    weight = torch.tensor([[1.0, 0, 1, 1, 0], [1, 1, 1, 0, 1]])
    loss = heatmap_mse(pred, target, weight)
    # per joint: 0.5 * MSE(pred_j * w_j, target_j * w_j) over (batch, pixels); mean over joints
    per_joint = [0.5 * ((pred[:, j] - target[:, j]) * weight[:, j, None, None]).pow(2).mean() for j in range(J)]
    torch.testing.assert_close(loss, torch.stack(per_joint).mean())
    assert loss.dim() == 0


def test_invisible_joints_get_no_gradient():
    pred = torch.rand(B, J, 6, 4, requires_grad=True)
    target = torch.rand(B, J, 6, 4)
    weight = torch.ones(B, J)
    weight[0, 3] = 0
    heatmap_mse(pred, target, weight).backward()
    assert torch.count_nonzero(pred.grad[0, 3]) == 0
    assert torch.count_nonzero(pred.grad[1, 3]) > 0
    assert heatmap_mse(target, target, weight) == 0


def test_heatmap_mse_shape_errors():
    with pytest.raises(ValueError, match=r"must both be \(B, J, h, w\)"):
        heatmap_mse(torch.rand(B, J, 6, 4), torch.rand(B, J, 4, 6), torch.ones(B, J))
    with pytest.raises(ValueError, match=r"weight \(2, 4\) must be \(B, J\)"):
        heatmap_mse(torch.rand(B, J, 6, 4), torch.rand(B, J, 6, 4), torch.ones(B, J - 1))


@pytest.mark.parametrize("hkme,bmd", [(False, False), (True, True)])
def test_fresh_model_starts_near_zero_heatmaps(hkme, bmd):
    """Regression: PyTorch's default init of the output layers gave initial heatmaps of std ~0.4, ten
    times the Gaussian targets' scale; the baseline (ViT + deconv head) then never learned (AP 0.1).
    Output layers now start at N(0, 1e-3), as in ViTPose: a fresh model predicts ~0 everywhere."""
    import dataclasses

    from vremd.config import smoke_config
    from vremd.model.vremd import build_model

    torch.manual_seed(0)
    cfg = dataclasses.replace(smoke_config().model, hkme=hkme, bmd=bmd)
    model = build_model(cfg).train()
    frames = torch.randn(4, 3, 3, cfg.img_height, cfg.img_width)
    heatmaps = model(frames)["heatmaps"]  # (B, J, h, w)
    assert heatmaps.abs().max() < 0.05
    assert heatmaps.std() > 0  # not dead: the output still depends on the input
