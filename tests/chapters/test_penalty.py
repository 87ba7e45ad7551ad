"""mcreg_lib.explicit: the scale invariance of the ratio penalty, the penalty-step trace, image problems, baselines
over many problems, recovery thresholds and divergence labels."""


import numpy as np
import pandas as pd
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib.chapters import penalty as explicit


def test_ratio_gradient_is_orthogonal_to_w_and_shrinks_like_one_over_its_norm():
    w = torch.randn(12, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = explicit.scale_check(w, [1e-3, 1.0, 1e3])
    assert np.allclose(t["penalty"], t["penalty"].iloc[0], rtol=1e-12)
    assert np.all(np.abs(t["cosine"]) < 1e-12)
    assert np.allclose(t["grad_norm_times_frobenius"], t["grad_norm_times_frobenius"].iloc[0], rtol=1e-10)
    assert t["grad_norm"].iloc[0] == pytest.approx(1e6 * t["grad_norm"].iloc[2], rel=1e-10)


def test_scale_check_rejects_bad_input():
    with pytest.raises(ValueError, match="w="):
        explicit.scale_check(torch.ones(3), [1.0])
    with pytest.raises(ValueError, match=r"scales\[0\]=0"):
        explicit.scale_check(torch.ones(3, 3), [0.0])


@pytest.mark.parametrize("optimizer,lr", [("gd", 5.0), ("adam", 1e-2)])
def test_trace_follows_fit_at_depth_one(optimizer, lr):
    prob = mc.completion_problem(n=10, rank=2, n_observed=40, seed=1)
    steps = 30
    trace = explicit.trace_penalty_step(prob, optimizer, lr=lr, penalty_weight=1e-2, max_steps=steps, seed=3)
    run = mc.fit(prob, depth=1, optimizer=optimizer, lr=lr, penalty="ratio", penalty_weight=1e-2,
                 max_steps=steps - 1, stop_loss=0.0, seed=3, dtype="float64", progress=False)
    last = trace.iloc[-1]
    assert last["step"] == steps - 1
    # the trace logs W_t before the step t -> t+1; mc.fit stopped at max_steps = steps - 1 ends at that W_t
    assert last["error_unobserved"] == pytest.approx(run.summary["error_unobserved"], rel=1e-9)
    assert (trace["unobserved_step"] > 0).all()  # the penalty does move the unobserved entries


def test_trace_gd_step_on_unobserved_is_the_penalty_step():
    prob = mc.completion_problem(n=10, rank=2, n_observed=40, seed=0)
    trace = explicit.trace_penalty_step(prob, "gd", lr=2.0, penalty_weight=0.1, max_steps=20)
    assert np.allclose(trace["unobserved_step"], trace["gd_penalty_step"], rtol=1e-9)
    no_pen = explicit.trace_penalty_step(prob, "adam", lr=1e-2, penalty_weight=0.0, max_steps=20)
    assert np.all(no_pen["unobserved_step"] == 0.0)  # without the penalty nothing moves the unobserved entries


def test_trace_rejects_bad_input():
    prob = mc.completion_problem(n=6, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        explicit.trace_penalty_step(prob, "sgd", lr=1.0, penalty_weight=0.1, max_steps=5)
    with pytest.raises(ValueError, match="lr=-1"):
        explicit.trace_penalty_step(prob, "gd", lr=-1.0, penalty_weight=0.1, max_steps=5)
    with pytest.raises(ValueError, match="problem="):
        explicit.trace_penalty_step("x", "gd", lr=1.0, penalty_weight=0.1, max_steps=5)


def test_outcome_reports_divergence_with_its_step():
    t = pd.DataFrame({"error_unobserved": [0.123, float("nan")], "diverged": [False, True], "diverged_at": [None, 17]})
    assert list(explicit.outcome(t)) == ["0.12", "diverged @ step 17"]


def test_penalty_grid_pairs_each_optimizer_with_its_lr_and_zero_weight_means_no_penalty():
    prob = mc.completion_problem(n=6, rank=1, n_observed=12, seed=0)
    spec = explicit.penalty_grid(prob, lrs={"adam": 1e-2, "gd": 2.0}, penalty_weights=[0.0, 1e-3], depth=[1, 2])
    got = [(c.optimizer, c.lr, c.penalty, c.penalty_weight, c.depth) for _, c in spec]
    assert len(got) == 8
    assert ("adam", 1e-2, None, 0.0, 2) in got and ("gd", 2.0, "ratio", 1e-3, 1) in got
    table = pd.DataFrame({"optimizer": ["adam", "gd"], "penalty": ["ratio", None]})
    assert list(explicit.arm(table)) == ["adam + penalty", "gd, no penalty"]
    with pytest.raises(ValueError, match=r"penalty_weights\[0\]=-1"):
        explicit.penalty_grid(prob, lrs={"adam": 1e-2}, penalty_weights=[-1.0])
    with pytest.raises(ValueError, match="lrs="):
        explicit.penalty_grid(prob, lrs={}, penalty_weights=[0.0])
