"""mcreg_lib.depth: P3's singular-value dynamics check, recovery thresholds, spreads (seconds)."""

import math

import numpy as np
import pandas as pd
import pytest

import mcreg_lib as mc


@pytest.fixture(scope="module")
def small():
    return mc.completion_problem(n=12, rank=2, n_observed=90, seed=1)


def test_degrees_of_freedom():
    assert mc.depth.degrees_of_freedom(100, 100, 5) == 975
    assert mc.depth.degrees_of_freedom(100, 100, 10) == 1900
    assert mc.depth.degrees_of_freedom(3, 7, 1) == 9


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_flow_formula_matches_small_steps(small, depth):
    """With a tiny step the one-step finite difference must match the gradient-flow formula closely."""
    check = mc.depth.flow_check(small, depth, lr=1e-3, steps=3000, init_scale=1e-1, top=2, n_checks=20)
    assert set(check["r"]) == {1, 2}
    assert len(check) == 2 * check["step"].nunique()
    assert mc.depth.flow_agreement(check, lr=1e-3) < 1e-2


def test_flow_formula_fails_for_a_wrong_depth(small):
    """The check can fail: predictions with the wrong exponent (depth 1 formula on a depth-3 run) disagree."""
    check = mc.depth.flow_check(small, 3, lr=1e-3, steps=3000, init_scale=1e-1, top=2, n_checks=20)
    wrong = check.assign(predicted=check["predicted"] / (3 * check["sigma"] ** (4 / 3)))
    assert mc.depth.flow_agreement(wrong, lr=1e-3) > 0.5


def test_flow_check_follows_the_training_loop(small):
    """The dedicated loop is plain gradient descent: its loss matches mc.fit's history at the same steps."""
    check = mc.depth.flow_check(small, 2, lr=0.5, steps=200, init="identity", init_scale=1e-2, top=1, n_checks=201)
    run = mc.fit(small, depth=2, optimizer="gd", lr=0.5, init="identity", init_scale=1e-2, max_steps=200,
                 stop_loss=0.0, dtype="float64")
    merged = run.history.merge(check, on="step", suffixes=("_fit", "_check"))
    assert len(merged) > 10
    np.testing.assert_allclose(merged["train_loss_fit"], merged["train_loss_check"], rtol=1e-9)
    np.testing.assert_allclose(merged["sigma_1"], merged["sigma"], rtol=1e-9)


def test_balanced_init_stays_nearly_balanced(small):
    check = mc.depth.flow_check(small, 3, lr=1e-2, steps=500, init_scale=1e-1, top=1, n_checks=5)
    assert check["balancedness"].iloc[0] < 1e-12
    assert check["balancedness"].max() < 1e-3


def test_flow_check_rejects_bad_input(small):
    with pytest.raises(ValueError, match="depth=0"):
        mc.depth.flow_check(small, 0, lr=1e-2, steps=10)
    with pytest.raises(ValueError, match="lr=-1"):
        mc.depth.flow_check(small, 2, lr=-1, steps=10)
    with pytest.raises(ValueError, match="top=13"):
        mc.depth.flow_check(small, 2, lr=1e-2, steps=10, top=13)


def test_recovery_threshold():
    table = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4,
        "n_observed": [100, 200, 300, 400] * 2,
        "error_all": [0.5, 1e-3, 0.2, 1e-4, 0.9, 0.8, 0.7, 0.6],
    })
    out = mc.depth.recovery_threshold(table, ["method"], tol=1e-2).set_index("method")
    assert out.loc["a", "threshold"] == 400  # 200 recovers, but 300 does not: recovery must persist
    assert math.isnan(out.loc["b", "threshold"])
    with pytest.raises(ValueError, match="tol"):
        mc.depth.recovery_threshold(table, ["method"], tol=0)


def test_spread():
    table = pd.DataFrame({"depth": [2, 2, 3, 3], "error_all": [1e-2, 1e-4, 1.0, 1.0]})
    out = mc.depth.spread(table, ["depth"]).set_index("depth")
    assert out.loc[2, "geomean"] == pytest.approx(1e-3)
    assert out.loc[2, "min"] == 1e-4 and out.loc[2, "max"] == 1e-2 and out.loc[2, "n"] == 2
    assert out.loc[3, "mean"] == 1.0
