"""mcreg_lib.chapters.norms: P4's problem and conventions, train_p4, the minimum-norm search."""

import math

import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib.chapters import norms

P4_LR = norms.mse_lr(3e-3, 3)


def test_p4_problem_and_conventions():
    p = norms.p4_problem()
    assert p.shape == (2, 2) and p.n_observed == 3
    assert p.observed_matrix().tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert p.mask().tolist() == [[0.0, 1.0], [1.0, 1.0]]
    q = norms.p4_problem(-2, 0.5, 0.05)
    assert q.observed_matrix().tolist() == [[0.0, -2.0], [0.5, 0.05]]
    assert norms.mse_lr(3e-3, 3) == pytest.approx(4.5e-3)
    assert norms.p4_loss(norms.mse_loss(1e-4, 3), 3) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="w22=nan is not allowed"):
        norms.p4_problem(1, 1, float("nan"))
    with pytest.raises(ValueError, match="p4_lr=-1"):
        norms.mse_lr(-1, 3)


def test_w11_bound():
    # P4's bound (1 - sqrt(2l))^2 / sqrt(2l): 68.7 at l = 1e-4 (PAPERS.md)
    assert float(norms.w11_lower_bound(1e-4)) == pytest.approx(68.72, abs=0.01)
    d = math.sqrt(2e-6)
    assert float(norms.w11_lower_bound(1e-6, -2, 0.5, 0.01)) == pytest.approx((2 - d) * (0.5 - d) / (0.01 + d))
    assert float(norms.w11_lower_bound(1.0)) == 0.0  # vacuous: delta >= 1
    # any W with det > 0 on the original problem has |w11| at least the bound of its loss
    g = np.random.default_rng(0)
    w = g.normal(size=(10_000, 2, 2)) * [[30, 1.2], [1.2, 0.2]]
    w = w[np.linalg.det(w) > 0]
    loss = 0.5 * ((w[:, 0, 1] - 1) ** 2 + (w[:, 1, 0] - 1) ** 2 + w[:, 1, 1] ** 2)
    assert np.all(np.abs(w[:, 0, 0]) >= norms.w11_lower_bound(loss) - 1e-12)


def test_min_norm_completion():
    w, val = norms.min_norm_completion(1, 1, 0, "nuclear_norm")  # sqrt(w^2 + 4), smallest at w = 0
    assert w == pytest.approx(0.0, abs=1e-6) and val == pytest.approx(2.0, abs=1e-9)
    w, val = norms.min_norm_completion(-2, 0.5, 0.1, "frobenius_norm")
    assert w == pytest.approx(0.0, abs=1e-6) and val == pytest.approx(math.sqrt(4.26), abs=1e-9)
    # restricted to det < 0 the perturbed problem needs w11 < -1/eps
    w, val = norms.min_norm_completion(-2, 0.5, 0.1, "frobenius_norm", sign=-1)
    assert w < -10.0 and val > 10.0
    with pytest.raises(ValueError, match="no completion with det of sign 1"):
        norms.min_norm_completion(1, 1, 0, "nuclear_norm", sign=1)  # every completion has det -1
    with pytest.raises(ValueError, match="norm='max'"):
        norms.min_norm_completion(1, 1, 0, "max")


def test_p4_init_scale_reproduces_p4_stds():
    for depth in (2, 3, 4):
        s = norms.p4_init_scale("gaussian", 8e-3, depth)
        layers = [mc.models.init_layers((2, 2), depth, "gaussian", s, seed)[0] for seed in range(3000)]
        assert float(torch.stack(layers).std()) == pytest.approx(8e-3, rel=0.05)
    s = norms.p4_init_scale("balanced", 8e-3, 3)
    w = torch.stack([mc.end_to_end(mc.models.init_layers((2, 2), 3, "balanced", s, seed)) for seed in range(3000)])
    assert float(w.std()) == pytest.approx(8e-3, rel=0.05)


def test_train_p4_adds_p4s_columns():
    p = norms.p4_problem()
    spec = mc.grid(p, depth=3, init="balanced", init_scale=1e-2, det_sign=1, lr=norms.mse_lr(3e-3, 3), max_steps=500,
                   stop_loss=0.0, dtype="float64")
    result = norms.train_p4(spec)
    h, t = result.histories, result.table
    np.testing.assert_allclose(h["loss_p4"], 1.5 * h["train_loss"])
    np.testing.assert_allclose(h["abs_w11"], h["w11"].abs())
    assert t.loc[0, "loss_p4"] == pytest.approx(1.5 * t.loc[0, "train_loss"])
    assert "loss_p4_at_flip" in t.columns
