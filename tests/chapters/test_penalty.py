"""mcreg_lib.chapters.penalty: the scale invariance of the ratio penalty, the penalty-step trace, the blow-up
direction, outcomes and counts, the stop-rule replay and comparison, the headline verdicts, the run book and the
MovieLens protocol on a generated file."""


import math
from pathlib import Path

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


# --- outcomes, counts and the stop rules --------------------------------------------------------------------------

def _table(**cols):
    n = len(next(iter(cols.values())))
    base = {"diverged": [False] * n, "scale_ratio": [1.0] * n, "error_unobserved": [0.5] * n,
            "budget_hit": [False] * n}
    base.update(cols)
    return pd.DataFrame(base)


def test_classify_orders_diverged_blown_up_recovered():
    t = _table(diverged=[True, False, False, False], scale_ratio=[50.0, 50.0, 1.0, 1.0],
               error_unobserved=[float("nan"), 1e-9, 1e-4, 0.3])
    assert list(explicit.classify(t, tol=1e-2, blowup=10.0)) == ["diverged", "blown up", "recovered", "not recovered"]
    with pytest.raises(ValueError, match="table="):
        explicit.classify(pd.DataFrame({"x": [1]}), tol=1e-2, blowup=10.0)


def test_counts_per_cell():
    t = _table(cell=["a", "a", "a", "b"], error_unobserved=[1e-4, 1e-5, 0.7, 1e-4], scale_ratio=[1, 1, 1, 30.0],
               budget_hit=[False, True, False, False])
    t["outcome"] = explicit.classify(t, tol=1e-2, blowup=10.0)
    c = explicit.counts(t, by=["cell"]).set_index("cell")
    assert c.loc["a", "runs"] == 3 and c.loc["a", "recovered"] == 2 and c.loc["a", "not recovered"] == 1
    assert c.loc["a", "budget_hit"] == 1 and c.loc["a", "text"] == "2/3 recovered"
    assert c.loc["b", "text"] == "0/1 recovered, 1 blown up" and math.isnan(c.loc["b", "median_error_unobserved"])
    assert c.loc["a", "median_error_unobserved"] == pytest.approx(1e-4)


def test_outcome_reports_divergence_and_blow_up_with_their_step():
    t = pd.DataFrame({"error_unobserved": [0.123, float("nan"), 900.0], "diverged": [False, True, False],
                      "diverged_at": [None, 17, None], "outcome": ["not recovered", "diverged", "blown up"],
                      "steps": [100, 17, 2500]})
    assert list(explicit.outcome(t)) == ["0.12", "diverged @ step 17", "blown up @ step 2500"]


def test_replay_stop_is_where_the_training_loop_stops():
    """The replay on a full run's history gives the step at which the same run with the stop rules ends."""
    p = mc.completion_problem(n=12, rank=2, n_observed=80, seed=0)
    kw = dict(depth=1, optimizer="adam", lr=3e-2, penalty="ratio", penalty_weight=1e-2, max_steps=9000,
              stop_loss=0.0, progress=False, cache=False)
    full = mc.fit(p, **kw)
    early = mc.fit(p, stop_plateau=1e-3, **kw)
    replay = explicit.replay_stop(full.history, plateau=1e-3, scale_limit=math.inf)
    assert early.summary["stop_reason"] == "plateau" == replay["reason"]
    assert replay["step"] == early.summary["steps"]
    assert replay["error_unobserved"] == pytest.approx(early.summary["error_unobserved"], rel=1e-4)
    scale = explicit.replay_stop(full.history, plateau=0.0, scale_limit=0.5 * full.history["frobenius_norm"].max())
    assert scale["reason"] == "scale"
    assert explicit.replay_stop(full.history, plateau=0.0, scale_limit=math.inf)["reason"] == "max_steps"


def test_same_outcome_compares_classes_and_errors_only_where_neither_recovered():
    keys = {"depth": [1, 2, 3, 4], "lr": [0.1] * 4}
    full = pd.DataFrame({**keys, "steps": [1000] * 4, "stop_reason": ["max_steps"] * 4,
                         "outcome": ["recovered", "not recovered", "not recovered", "blown up"],
                         "error_unobserved": [1e-9, 0.5, 0.5, 1e3]})
    stopped = pd.DataFrame({**keys, "steps": [100, 200, 300, 50], "stop_reason": ["plateau"] * 3 + ["scale"],
                            "outcome": ["recovered", "not recovered", "not recovered", "blown up"],
                            "error_unobserved": [1e-4, 0.9, 0.01, 20.0]})
    out = explicit.same_outcome(full, stopped, on=["depth", "lr"])
    assert list(out["same"]) == [True, True, False, True]  # 0.5 vs 0.01 is 50x apart
    assert out["steps_saved"].iloc[0] == pytest.approx(0.9)
    stopped.loc[0, "outcome"] = "not recovered"
    assert not explicit.same_outcome(full, stopped, on=["depth", "lr"])["same"].iloc[0]
    with pytest.raises(ValueError, match="stopped="):
        explicit.same_outcome(full, stopped.iloc[:2], on=["depth", "lr"])


def test_comparable_and_better_than():
    thr = pd.Series({"pen": 1500.0, "deep": 1000.0, "gd": 2000.0, "nnm": 3000.0, "si": float("nan")})
    assert explicit.comparable(thr, "pen", ["deep", "gd"], 500.0)["holds"]
    assert explicit.comparable(thr, "pen", ["deep", "gd"], 500.0)["best_other"] == "deep"
    assert not explicit.comparable(thr.replace({1500.0: 2500.0}), "pen", ["deep", "gd"], 500.0)["holds"]
    assert not explicit.comparable(thr.replace({1500.0: float("nan")}), "pen", ["deep"], 500.0)["holds"]
    assert not explicit.comparable(pd.Series({"a": float("nan"), "b": float("nan")}), "a", ["b"], 500.0)["holds"]
    assert explicit.better_than(thr, "pen", ["nnm", "si"])["holds"]  # NaN: no threshold in the grid
    assert not explicit.better_than(thr, "pen", ["nnm", "deep"])["holds"]
    assert not explicit.better_than(thr.replace({1500.0: 3000.0}), "pen", ["nnm"])["holds"]  # a tie is not better
    with pytest.raises(ValueError, match="others="):
        explicit.comparable(thr, "pen", ["nope"], 500.0)


# --- the blow-up direction ----------------------------------------------------------------------------------------

def test_an_unobserved_block_lowers_the_penalty_for_free():
    p = mc.completion_problem(n=30, rank=2, n_observed=180, seed=1)
    rows, cols = explicit.unobserved_block(p, n_rows=3)
    assert len(rows) == 3 and cols
    mask = p.mask().bool()
    assert not mask[np.ix_(rows, cols)].any()  # the block holds no observed entry
    path = explicit.blowup_path(p, [0.0, 10.0, 1000.0])
    assert (path["train_loss"] < 1e-25).all()
    assert path["penalty"].iloc[-1] < 1.01 < path["penalty"].iloc[0]
    assert path["sigma_1_ratio"].iloc[-1] > 100


# --- the run book and MovieLens -----------------------------------------------------------------------------------

def test_run_book_trains_a_repeated_run_once():
    prob = mc.completion_problem(n=8, rank=1, n_observed=30, seed=0)
    book = explicit.RunBook()
    a = book.sweep(mc.grid(prob, depth=[1, 2], lr=0.5, max_steps=20, seed=0))
    b = book.sweep(mc.grid(prob, depth=[2, 3], lr=0.5, max_steps=20, seed=0)
                   + mc.grid(prob, depth=3, lr=0.5, max_steps=20, seed=0))  # a repeat inside one spec, too
    assert (a.computed, b.computed, b.cached) == (2, 1, 2)
    assert b.runs[0] is a.runs[1] and b.runs[1] is b.runs[2]
    assert list(b.table["depth"]) == [2, 3, 3]


def test_movielens_protocol_on_a_generated_file():
    path = Path(__file__).resolve().parents[1] / "data" / "u_small.data"
    problem, table = explicit.movielens(str(path), lr=5e-2, penalty_weight=1e-2, max_steps=60, plateau=1e-3,
                                        blowup=10.0, init_scale=1e-3, seed=0)
    assert problem.info["test_fraction"] == 0.2
    assert problem.n_observed == 192 and problem.test_values.numel() == 48  # 240 ratings, 80/20
    assert list(table["arm"]) == ["adam, no penalty", "adam + penalty"]
    assert np.isfinite(table["test_mse"]).all() and (table["seconds_per_step"] > 0).all()
    assert (table["steps"] <= 60).all()


def test_gram_penalty_on_a_wide_matrix_is_what_movielens_trains():
    """MovieLens is wide (943 x 1682): the penalty decomposes W W^T, the smaller Gram matrix (mcreg_lib.penalties)."""
    w = torch.randn(1, 9, 20, generator=torch.Generator().manual_seed(0))
    val, grad = mc.penalties.value_and_grad(w, "ratio", {})
    exact_val, exact = mc.penalties.value_and_grad(w.double(), "ratio", {}, method="svd")
    assert torch.allclose(grad.double(), exact, atol=1e-6) and torch.allclose(val.double(), exact_val, rtol=1e-6)
