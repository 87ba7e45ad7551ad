import math

import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import metrics


def test_effective_rank_closed_forms():
    assert mc.effective_rank(torch.diag(torch.tensor([3.0, 0.0, 0.0]))).item() == pytest.approx(1.0)
    assert mc.effective_rank(torch.eye(7, dtype=torch.float64)).item() == pytest.approx(7.0)
    # p = (2/3, 1/3): exp(H) = exp(-(2/3 ln 2/3 + 1/3 ln 1/3))
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert mc.effective_rank(torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))).item() == pytest.approx(expected)


def test_norms_closed_forms():
    w = torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert mc.nuclear_norm(w).item() == pytest.approx(7.0)
    assert mc.schatten(w, 2.0).item() == pytest.approx(5.0)
    assert mc.schatten(w, 0.5).item() == pytest.approx((math.sqrt(3) + 2) ** 2)


def test_batched_metrics_match_single():
    ws = torch.randn(4, 5, 6, dtype=torch.float64)
    er = mc.effective_rank(ws)
    assert torch.allclose(er, torch.stack([mc.effective_rank(w) for w in ws]))


def test_reconstruction_error_and_mask():
    t = torch.ones(2, 2, dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    assert mc.reconstruction_error(w, t).item() == pytest.approx(4.0 / 4.0)
    mask = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert mc.reconstruction_error(w, t, mask).item() == pytest.approx(4.0)
    assert mc.reconstruction_error(t, t).item() == 0.0


def test_balancedness_gap_definition():
    w1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    w2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # W2^T W2 - W1 W1^T = diag(0, -3)
    assert mc.balancedness_gaps([w1, w2])[0].item() == pytest.approx(3.0)


def test_completion_loss():
    w = torch.arange(4.0, dtype=torch.float64).view(2, 2)
    loss = metrics.completion_loss(w, torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((0.0 + 9.0) / 2)
