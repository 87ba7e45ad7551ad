"""mcreg_lib.chapters.depth: P3's singular-value dynamics check (seconds)."""


import numpy as np
import pytest

import mcreg_lib as mc
from mcreg_lib.chapters import depth as chapter


@pytest.fixture(scope="module")
def small():
    return mc.completion_problem(n=12, rank=2, n_observed=90, seed=1)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_flow_formula_matches_small_steps(small, depth):
    """With a tiny step the one-step finite difference must match the gradient-flow formula closely."""
    check = chapter.flow_check(small, depth, lr=1e-3, steps=3000, init_scale=1e-1, top=2, n_checks=20)
    assert set(check["r"]) == {1, 2}
    assert len(check) == 2 * check["step"].nunique()
    assert chapter.flow_agreement(check, lr=1e-3) < 1e-2


def test_flow_formula_fails_for_a_wrong_depth(small):
    """The check can fail: predictions with the wrong exponent (depth 1 formula on a depth-3 run) disagree."""
    check = chapter.flow_check(small, 3, lr=1e-3, steps=3000, init_scale=1e-1, top=2, n_checks=20)
    wrong = check.assign(predicted=check["predicted"] / (3 * check["sigma"] ** (4 / 3)))
    assert chapter.flow_agreement(wrong, lr=1e-3) > 0.5


def test_flow_check_follows_the_training_loop(small):
    """The dedicated loop is plain gradient descent: its loss matches mc.fit's history at the same steps."""
    check = chapter.flow_check(small, 2, lr=0.5, steps=200, init="identity", init_scale=1e-2, top=1, n_checks=201)
    run = mc.fit(small, depth=2, optimizer="gd", lr=0.5, init="identity", init_scale=1e-2, max_steps=200,
                 stop_loss=0.0, dtype="float64")
    merged = run.history.merge(check, on="step", suffixes=("_fit", "_check"))
    assert len(merged) > 10
    np.testing.assert_allclose(merged["train_loss_fit"], merged["train_loss_check"], rtol=1e-9)
    np.testing.assert_allclose(merged["sigma_1"], merged["sigma"], rtol=1e-9)


def test_balanced_init_stays_nearly_balanced(small):
    check = chapter.flow_check(small, 3, lr=1e-2, steps=500, init_scale=1e-1, top=1, n_checks=5)
    assert check["balancedness"].iloc[0] < 1e-12
    assert check["balancedness"].max() < 1e-3


def test_flow_check_rejects_bad_input(small):
    with pytest.raises(ValueError, match="depth=0"):
        chapter.flow_check(small, 0, lr=1e-2, steps=10)
    with pytest.raises(ValueError, match="lr=-1"):
        chapter.flow_check(small, 2, lr=-1, steps=10)
    with pytest.raises(ValueError, match="top=13"):
        chapter.flow_check(small, 2, lr=1e-2, steps=10, top=13)


def test_half_times():
    import pandas as pd

    h = pd.DataFrame({"step": [0, 10, 20, 30], "sigma_1": [0.0, 0.6, 1.0, 1.0], "sigma_2": [0.0, 0.0, 0.4, 0.8],
                      "sigma_3": [0.0, 0.0, 0.0, 0.0]})
    t = chapter.half_times(h, 3)
    assert t[:2] == [10.0, 20.0] and t[2] == 0.0  # a value that stays at 0 is at "half of 0" from the start
