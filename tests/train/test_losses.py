"""heatmap_mse is the weighted joints MSE: invisible joints give no gradient, shapes are checked."""

from __future__ import annotations

import pytest
import torch

from vremd.train.losses import heatmap_mse

B, J = 2, 5


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
