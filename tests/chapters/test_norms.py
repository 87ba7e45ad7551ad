"""mcreg_lib.chapters.norms: P4's problem and conventions, train_p4, the minimum-norm search, the P3 direction rule, the
2x2 readers and the tensor-completion point."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import tensors
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
    # P4's bound (1 - sqrt(2l))^2 / sqrt(2l): 68.7 at l = 1e-4 (Razin & Cohen 2020)
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


# --- P3: the direction of the nuclear norm -------------------------------------------------------------------------

def _cell(start, end, errors=(0.1, 0.1), spread=0.0, seeds=3):
    rows = []
    for init, mean, err in ((1e-3, start, errors[0]), (1e-6, end, errors[1])):
        for k in range(seeds):
            rows.append({"init_scale": init, "nuclear_norm": mean + spread * (k - (seeds - 1) / 2),
                         "error_all": err})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("start,end,truth,verdict", [
    (215.0, 220.0, 221.0, "rises toward the truth"),
    (222.0, 225.0, 221.0, "rises away from the truth"),
    (223.0, 221.5, 221.0, "falls toward the truth"),
    (219.0, 215.0, 221.0, "falls away from the truth"),
    (221.5, 221.45, 221.0, "no change beyond the spread"),  # below 0.1% of the truth's
])
def test_direction_rule(start, end, truth, verdict):
    d = norms.direction(_cell(start, end), truth, largest=1e-3, smallest=1e-6, recovery_tol=1e-3)
    assert d["verdict"] == verdict
    assert d["change"] == pytest.approx(end - start)


def test_direction_spread_and_recovered_ends_do_not_decide():
    # a change smaller than the seeds' spread is no change
    d = norms.direction(_cell(215.0, 216.0, spread=2.0), 221.0, largest=1e-3, smallest=1e-6, recovery_tol=1e-3)
    assert d["verdict"] == "no change beyond the spread" and d["spread"] == pytest.approx(2.0)
    # every run recovered at both ends: not ordered, whatever the numbers
    d = norms.direction(_cell(221.2, 221.0, errors=(1e-5, 1e-5)), 221.0, largest=1e-3, smallest=1e-6,
                        recovery_tol=1e-3)
    assert d["verdict"] == "recovers at both ends"
    d = norms.direction(_cell(215.0, 220.0).iloc[:3], 221.0, largest=1e-3, smallest=1e-6, recovery_tol=1e-3)
    assert d["verdict"] == "no finished runs"


def test_directions_leave_out_budget_hits():
    cell = _cell(215.0, 220.0).assign(instance=0, n_observed=2000, depth=2, stop_reason="stop_loss", diverged=False)
    cell.loc[0, "stop_reason"] = "max_steps"
    cell.loc[0, "nuclear_norm"] = 100.0  # would change the mean if it were used
    refs = pd.DataFrame([{"instance": 0, "n_observed": 2000, "method": "ground truth", "nuclear_norm": 221.0}])
    out = norms.directions(cell, refs, recovery_tol=1e-3)
    assert len(out) == 1 and out.loc[0, "left_out"] == 1 and out.loc[0, "verdict"] == "rises toward the truth"
    assert out.loc[0, "start"] == pytest.approx(215.0)


def test_references_truth_and_minimizer():
    p = mc.completion_problem(n=8, rank=1, n_observed=40, seed=0)
    refs = norms.references([p], [0])
    truth = refs[refs.method == "ground truth"].iloc[0]
    nnm = refs[refs.method == "min nuclear norm"].iloc[0]
    assert truth.error_all == 0.0 and truth.nuclear_norm == pytest.approx(float(mc.metrics.nuclear_norm(p.target)))
    assert nnm.nuclear_norm <= truth.nuclear_norm + 1e-2  # the minimizer is at most the truth's (up to SCS's tol)


# --- P4: reading the 2x2 runs --------------------------------------------------------------------------------------

def test_w11_at_losses_interpolates_in_log_loss():
    h = pd.DataFrame({"run": [0, 0, 0, 1], "step": [0, 1, 2, 0], "loss_p4": [1.0, 1e-2, 1e-4, 1.0],
                      "abs_w11": [0.0, 10.0, 30.0, 0.0]})
    out = norms.w11_at_losses(h, [1e-2, 1e-3, 1e-5]).set_index("run")
    assert out.loc[0, "w11@0.01"] == pytest.approx(10.0)
    assert out.loc[0, "w11@0.001"] == pytest.approx(20.0)  # halfway between 1e-2 and 1e-4 in log(loss)
    assert math.isnan(out.loc[0, "w11@1e-05"]) and math.isnan(out.loc[1, "w11@0.01"])


def test_flip_kind_and_bound_margin():
    t = pd.DataFrame({"run": [0, 1, 2], "first_flip": [-1, 5, 50], "loss_p4_at_flip": [math.nan, 0.9, 1e-3]})
    assert list(norms.flip_kind(t)) == ["kept its sign", "flipped near the origin", "flipped later"]
    loss = np.array([1e-2, 1e-3, 1e-4])
    b = norms.w11_lower_bound(loss)
    h = pd.DataFrame({"run": [0] * 3 + [2] * 3, "step": [10, 20, 60] * 2, "loss_p4": np.r_[loss, loss],
                      "abs_w11": np.r_[b + 1.0, b - 5.0]})
    m = norms.bound_margin(h, t.iloc[[0, 2]])
    assert m[0] == pytest.approx(1.0)
    assert m[2] == pytest.approx(-5.0)  # steps before its flip at 50 only: the first two


def test_p4_depth3_reaches_about_7_at_loss_1e2():
    # P4's setting, one random start, run until loss 1e-2 only (a few hundred thousand steps, compiled)
    p = norms.p4_problem()
    spec = mc.grid(p, depth=3, init="gaussian", seed=1, init_scale=norms.p4_init_scale("gaussian", 8e-3, 3),
                   det_sign=1, lr=norms.mse_lr(3e-3, 3), stop_loss=norms.mse_loss(1e-2, 3), max_steps=2_000_000,
                   dtype="float64")
    r = norms.train_p4(spec, loss_logs_per_decade=20)
    w = norms.w11_at_losses(r.histories, [1e-2]).iloc[0]["w11@0.01"]
    assert r.table.stop_reason.iloc[0] == "stop_loss" and 7 / 1.25 <= w <= 7 * 1.25


# --- P4: tensor completion -------------------------------------------------------------------------------------------

def test_tensor_completion_point():
    df = norms.tensor_completion(3, 2, 1, 5, [0, 1], init_scale=1e-2, max_steps=300, cache=False)
    assert list(df.columns) == norms.TENSOR_COLUMNS and len(df) == 4
    lin = df[df.method == "linear"]
    cp = df[df.method == "CP factorization"]
    assert (lin.steps == 0).all() and (lin.train_loss == 0.0).all()
    p = tensors.tensor_completion_problem(order=3, n=2, rank=1, n_observed=5, seed=0)
    # the linear fit's error is the relative norm of the unobserved entries
    expected = float(torch.linalg.vector_norm(p.target * (1 - p.mask())) / torch.linalg.vector_norm(p.target))
    assert lin.relative_residual.iloc[0] == pytest.approx(expected)
    assert set(cp.stop_reason) <= {"stop_loss", "max_steps"}
    assert (cp.budget_hit == (cp.stop_reason == "max_steps")).all()
    assert cp.tensor_rank.between(0, 4).all()
