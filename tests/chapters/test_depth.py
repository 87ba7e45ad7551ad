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


def test_half_time_ratio():
    import pandas as pd

    h = pd.DataFrame({"step": [0, 10, 20, 30, 40], "sigma_1": [0.0, 0.6, 1.0, 1.0, 1.0],
                      "sigma_2": [0.0, 0.0, 0.0, 0.9, 1.0]})
    assert chapter.half_time_ratio(h, 2) == 3.0
    assert chapter.half_time_ratio(h, 1) == 1.0
    flat = h.assign(sigma_1=0.0)  # sigma_1 at "half of 0" from step 0: t_1 = 0, no ratio
    assert np.isnan(chapter.half_time_ratio(flat, 2))


def test_compare_is_the_one_rule():
    tol = 1e-2
    assert chapter.compare(1e-5, 0.05, tol) == "better"        # recovers, the other does not
    assert chapter.compare(0.05, 1e-5, tol) == "worse"
    assert chapter.compare(1e-5, 5e-3, tol) == "both recovered"  # 500x apart, but both recovered: not ordered
    assert chapter.compare(0.02, 0.5, tol) == "better"         # neither recovers, 25x apart
    assert chapter.compare(0.05, 0.2, tol) == "within factor"
    assert chapter.compare(float("nan"), 0.2, tol) == "undecided"
    with pytest.raises(ValueError, match="tol=0"):
        chapter.compare(1.0, 1.0, 0.0)


def test_deeper_is_better():
    ok, out = chapter.deeper_is_better({2: 0.06, 3: 2e-5, 4: 3e-5}, 1e-2)
    assert ok and out == {"2 vs 3": "better", "2 vs 4": "better", "3 vs 4": "both recovered"}
    ok, out = chapter.deeper_is_better({2: 9e-3, 3: 2e-5, 4: 3e-5}, 1e-2)  # depth 2 recovered too: nothing decides
    assert not ok and out["2 vs 4"] == "both recovered"
    ok, _ = chapter.deeper_is_better({2: 0.06, 3: 0.9, 4: 3e-5}, 1e-2)  # depth 3 worse than depth 2
    assert not ok
    ok, out = chapter.deeper_is_better({2: 0.06, 3: float("nan"), 4: 3e-5}, 1e-2)  # a budget hit never decides
    assert not ok and out["2 vs 3"] == "undecided"
    assert chapter.deeper_is_better({2: 0.06}, 1e-2)[0] is False


def test_configurations_counts_budget_and_worse_than_zero():
    import pandas as pd

    t = pd.DataFrame({"depth": [2, 2, 2, 3, 3, 3], "error_all": [0.1, 0.2, 3.0, 1e-5, 2e-5, 0.5],
                      "stop_reason": ["stop_loss", "stop_loss", "stop_loss", "stop_loss", "stop_loss", "max_steps"],
                      "diverged": [False] * 6})
    c = chapter.configurations(t, ["depth"]).set_index("depth")
    assert c.loc[2, "n"] == 3 and c.loc[2, "worse_than_zero"] == 1 and c.loc[2, "budget_hits"] == 0
    assert c.loc[2, "mean"] == pytest.approx(1.1) and c.loc[2, "decided_mean"] == pytest.approx(1.1)
    assert c.loc[3, "n"] == 2 and c.loc[3, "budget_hits"] == 1 and np.isnan(c.loc[3, "decided_mean"])
    assert c.loc[3, "mean"] == pytest.approx(1.5e-5) and c.loc[3, "max"] == pytest.approx(2e-5)
    assert chapter.budget(t) == (1, 6)


def test_thresholds_say_when_worse_than_zero_runs_decide():
    import pandas as pd

    rows = []
    for m, errs in [(100, [0.5, 0.6]), (200, [5.0, 1e-5]), (300, [1e-5, 1e-5])]:
        rows += [{"method": "depth 3", "m": m, "error_all": e, "stop_reason": "stop_loss", "diverged": False}
                 for e in errs]
    rows += [{"method": "depth 2", "m": 300, "error_all": 1e-5, "stop_reason": "max_steps", "diverged": False},
             {"method": "depth 2", "m": 200, "error_all": 1e-5, "stop_reason": "stop_loss", "diverged": False}]
    thr = chapter.thresholds(pd.DataFrame(rows), ["method"], 1e-2).set_index("method")
    assert thr.loc["depth 3", "threshold"] == 300  # the run ending at 5.0 keeps m = 200 from counting
    assert thr.loc["depth 3", "threshold_without_worse_than_zero"] == 200
    assert thr.loc["depth 2", "threshold"] == 200 and thr.loc["depth 2", "tested_max"] == 200  # budget hit left out


def test_published_numbers_and_bars():
    assert chapter.half_ratio_threshold(2) == pytest.approx(1.2)
    assert chapter.half_ratio_threshold(3) == pytest.approx(1.35)
    with pytest.raises(ValueError, match="depth=4"):
        chapter.half_ratio_threshold(4)
    assert chapter.within_factor(0.066, 0.0592) and chapter.within_factor(2.2e-5, 2.58e-5)
    assert not chapter.within_factor(0.01, 0.0592) and not chapter.within_factor(float("nan"), 1.0)


def test_dynamics_summary_window_and_plot(small):
    spec = mc.grid(small, depth=[1, 2], optimizer="gd", lr=[1.0, 5.0], init="identity", init_scale=1e-3,
                   max_steps=800, stop_loss=1e-6, seed=0, logs_per_decade=50)
    res = mc.sweep(spec, cache=None, progress=False)
    dyn = chapter.dynamics_summary(res.histories, res.table, 2)
    assert set(dyn.index) == {(1.0, 1), (1.0, 2), (5.0, 1), (5.0, 2)}
    assert dyn.loc[(1.0, 1), "half_time_ratio"] == pytest.approx(1.0, abs=0.05)  # depth 1: together
    assert dyn.loc[(1.0, 2), "half_time_ratio"] > 1.2  # depth 2: one after the other
    assert (dyn["best_error"] <= dyn["final_error"] + 1e-12).all()
    h = res.histories[(res.histories["lr"] == 1.0) & (res.histories["depth"] == 2)]
    assert 0 < chapter.dynamics_window(h, 2) <= h["step"].max()
    fig = chapter.plot_dynamics(res.histories[res.histories["lr"] == 1.0], [1, 2], [1.0, 2.0], published={2: "P3"})
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_yscale() == "linear"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_solution_distances(small):
    a = mc.sweep(mc.grid(small, depth=2, optimizer="normalized_gd", lr=1e-2, init_scale=1e-2, seed=[0, 1],
                         max_steps=100), cache=None, progress=False).runs
    b = mc.sweep(mc.grid(small, depth=2, optimizer="normalized_gd", lr=5e-3, init_scale=1e-2, seed=[0, 1],
                         max_steps=100), cache=None, progress=False).runs
    d = chapter.solution_distances(b, a, small)
    assert list(d["seed"]) == [0, 1] and (d["lr"] == 5e-3).all() and (d["reference_lr"] == 1e-2).all()
    assert (d["distance"] >= 0).all()
    same = chapter.solution_distances(a, a, small)
    assert (same["distance"] == 0).all()
    with pytest.raises(ValueError, match="reference"):
        chapter.solution_distances(a, a[:1], small)
    other = mc.completion_problem(n=small.shape[0], rank=1, n_observed=small.n_observed + 10, seed=0)
    c = mc.sweep(mc.grid(other, depth=2, optimizer="normalized_gd", lr=1e-2, init_scale=1e-2, seed=[0, 1],
                         max_steps=100), cache=None, progress=False).runs
    both = chapter.solution_distances(a + c, c + a, [small, other])  # each run matched on its own problem
    assert list(both["m"]) == [small.n_observed] * 2 + [other.n_observed] * 2 and (both["distance"] == 0).all()
    with pytest.raises(ValueError, match="problems"):
        chapter.solution_distances(c, c, small)


def test_plots_of_sweeps():
    import matplotlib.pyplot as plt
    import pandas as pd

    conf = pd.DataFrame({"m": [100, 100, 200, 200], "depth": [2, 3, 2, 3], "init_scale": [1e-3] * 4,
                         "mean": [0.1, 1e-5, 1e-5, 1e-5], "min": [0.05, 1e-6, 1e-6, 1e-6], "max": [0.2, 2e-5, 2e-5, 2e-5]})
    fig = chapter.plot_error_vs_init(conf, [100, 200], 1e-2, second=conf)
    assert len(fig.axes) == 2
    plt.close(fig)
    runs = pd.DataFrame({"rank": [1, 1], "method": ["depth 2", "depth 2"], "m": [100, 200], "error_all": [3.0, 1e-5]})
    mconf = pd.DataFrame({"rank": [1, 1], "method": ["depth 2", "depth 2"], "m": [100, 200], "mean": [0.5, 1e-5]})
    fig = chapter.plot_error_vs_m(mconf, runs, [1], 12, 1e-2)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_second_step_runs_on_the_grid_seeds_only():
    params = chapter.PARAMETERS
    assert params.resolve()["second_lr_seeds"] == params.resolve()["seeds"]  # P3: every setting at both steps
    assert params.resolve(preview=True)["second_lr_seeds"] == [0]
    assert params.resolve(second_lr_seeds=[])["second_lr_seeds"] == []
    with pytest.raises(ValueError, match=r"second_lr_seeds.*each one of seeds"):
        params.resolve(seeds=[0, 1], second_lr_seeds=[2])
