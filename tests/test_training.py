import dataclasses
import math

import pandas as pd

import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import objective, penalties, training
from mcreg_lib.models import init_layers


def _autograd_loss(layers, problem, penalty=None, weight=0.0):
    w = mc.end_to_end(layers)
    if problem.kind == "completion":
        loss = (w[problem.rows, problem.cols] - problem.values).square().mean()
    else:
        loss = (torch.einsum("mij,ij->m", problem.measurements, w) - problem.values).square().mean()
    if penalty:
        loss = loss + weight * penalties.value(w, penalty)
    return loss


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["completion", "sensing"])
def test_one_gd_step_matches_autograd(depth, kind):
    if kind == "completion":
        p = mc.completion_problem(n_rows=6, n_cols=5, rank=2, n_observed=12, seed=0)
    else:
        p = mc.sensing_problem(n_rows=6, n_cols=5, rank=2, n_measurements=20, seed=0)
    kw = dict(depth=depth, lr=0.3, init_scale=0.5, seed=3, dtype="float64", max_steps=1, stop_loss=0.0,
              progress=False)
    run = mc.fit(p, **kw)
    ref = [x.clone().requires_grad_() for x in init_layers(p.shape, depth, "gaussian", 0.5, 3)]
    grads = torch.autograd.grad(_autograd_loss(ref, p), ref)
    for mine, x, g in zip(run.layers, ref, grads):
        assert torch.allclose(mine, x.detach() - 0.3 * g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["adam", "normalized_gd", "rmsprop"])
@pytest.mark.parametrize("penalty", [None, "ratio"])
def test_steps_with_materialized_gradients_match_autograd(optimizer, penalty):
    """Non-fused path (and the penalty's gradient) against autograd + a plain reference update, 5 steps."""
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=1)
    weight = 0.05 if penalty else 0.0
    run = mc.fit(p, depth=2, optimizer=optimizer, lr=0.01, init_scale=0.5, seed=0, dtype="float64", max_steps=5,
                 stop_loss=0.0, penalty=penalty, penalty_weight=weight, progress=False)
    ref = [x.clone().requires_grad_() for x in init_layers(p.shape, 2, "gaussian", 0.5, 0)]
    if optimizer == "normalized_gd":
        from mcreg_lib import optimizers
        params = [x.detach().clone()[None] for x in ref]
        opt = optimizers.make(optimizer, params, optimizers.options(optimizer, None))
        for _ in range(5):
            xs = [q[0].clone().requires_grad_() for q in params]
            g = torch.autograd.grad(_autograd_loss(xs, p, penalty, weight), xs)
            opt.step(params, [x[None] for x in g], torch.full((1, 1, 1), 0.01, dtype=torch.float64))
        expected = [q[0] for q in params]
    else:
        cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[optimizer]
        opt = cls(ref, lr=0.01)
        for _ in range(5):
            opt.zero_grad()
            _autograd_loss(ref, p, penalty, weight).backward()
            opt.step()
        expected = [x.detach() for x in ref]
    for mine, x in zip(run.layers, expected):
        assert torch.allclose(mine, x, rtol=1e-9, atol=1e-12)


def test_same_seed_same_numbers():
    p = mc.completion_problem(n=15, rank=2, n_observed=100, seed=0)
    a, b = (mc.fit(p, depth=3, lr=2.0, init_scale=1e-2, max_steps=300, seed=7, progress=False) for _ in range(2))
    assert a.history.equals(b.history)
    assert torch.equal(a.matrix, b.matrix)
    c = mc.fit(p, depth=3, lr=2.0, init_scale=1e-2, max_steps=300, seed=8, progress=False)
    assert not torch.equal(a.matrix, c.matrix)


def test_batch_equals_alone():
    p = mc.completion_problem(n=15, rank=2, n_observed=100, seed=0)
    q = mc.completion_problem(n=15, rank=2, n_observed=120, seed=1)
    configs = [mc.RunConfig(depth=2, lr=lr, init_scale=s, seed=seed, max_steps=400, dtype="float64")
               for lr, s, seed in [(1.0, 1e-2, 0), (2.0, 1e-3, 1), (0.5, 1e-2, 2)]]
    problems = [p, q, p]
    batch = mc.train(problems, configs, progress=False)
    for prob, cfg, run in zip(problems, configs, batch):
        alone = mc.train(prob, [cfg], progress=False)[0]
        assert run.summary["steps"] == alone.summary["steps"]
        assert torch.allclose(run.matrix, alone.matrix, rtol=1e-9, atol=1e-12)
        assert run.summary["batch_size"] == 3


def test_stop_rules_and_history_schedule():
    p = mc.completion_problem(n=20, rank=2, n_observed=200, seed=0)
    run = mc.fit(p, depth=2, lr=3.0, init_scale=1e-2, max_steps=20_000, stop_loss=1e-4, progress=False)
    s = run.summary
    assert s["stop_reason"] == "stop_loss" and s["train_loss"] <= 1e-4 and s["steps"] < 20_000
    h = run.history
    assert h["step"].iloc[0] == 0 and h["step"].iloc[-1] == s["steps"]
    assert h["step"].is_monotonic_increasing and h["step"].is_unique
    assert set(h["step"].iloc[:-1]) <= set(mc.log_steps(20_000, 20).tolist())
    assert h["train_loss"].iloc[-2] > 1e-4  # it stopped at the first step below the threshold that it logged
    short = mc.fit(p, depth=2, lr=3.0, init_scale=1e-2, max_steps=10, progress=False)
    assert short.summary["stop_reason"] == "max_steps" and short.summary["steps"] == 10


def test_history_columns():
    p = mc.completion_problem(n=12, rank=2, n_observed=80, seed=0)
    run = mc.fit(p, depth=3, lr=1.0, max_steps=50, progress=False)
    for col in ("step", "train_loss", "error_all", "error_unobserved", "effective_rank", "nuclear_norm",
                "frobenius_norm", "sigma_1", "sigma_10", "balancedness_gap_1", "balancedness_gap_2"):
        assert col in run.history.columns
    assert torch.allclose(run.matrix, mc.end_to_end(run.layers))


def test_divergence_is_detected_and_contained():
    p = mc.completion_problem(n=20, rank=2, n_observed=150, seed=0)
    configs = [mc.RunConfig(depth=3, lr=lr, max_steps=200, seed=0) for lr in (1e4, 1.0)]
    bad, good = mc.train(p, configs, progress=False)
    assert bad.summary["diverged"] and bad.summary["stop_reason"] == "diverged"
    assert bad.summary["diverged_at"] == bad.summary["steps"] > 0
    assert math.isnan(bad.summary["error_all"])
    assert bad.history[["train_loss", "error_all"]].map(math.isfinite).all().all()  # never a NaN row
    assert not good.summary["diverged"] and math.isfinite(good.summary["error_all"])
    alone = mc.fit(p, depth=3, lr=1.0, max_steps=200, seed=0, progress=False)
    assert torch.allclose(good.matrix, alone.matrix, rtol=1e-5, atol=1e-7)


def test_held_out_entries_give_test_mse():
    p = mc.problem_from_observations([0, 1, 2, 3], [0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0], (4, 4),
                                     test_rows=[0], test_cols=[1], test_values=[2.0])
    run = mc.fit(p, depth=1, lr=0.5, max_steps=5, progress=False)
    assert "test_mse" in run.summary and "error_all" not in run.summary


def test_penalized_run_logs_penalty_and_objective():
    p = mc.completion_problem(n=10, rank=1, n_observed=40, seed=0)
    run = mc.fit(p, depth=1, optimizer="adam", lr=1e-2, penalty="ratio", penalty_weight=1e-2, max_steps=20,
                 progress=False)
    h = run.history
    assert ((h["objective"] - h["train_loss"] - 1e-2 * h["penalty"]).abs() < 1e-5).all()


def test_penalized_cpu_run_leaves_the_thread_count_as_it_was():
    p = mc.completion_problem(n=8, rank=1, n_observed=30, seed=0)
    threads = torch.get_num_threads()
    mc.fit(p, depth=2, optimizer="adam", lr=1e-2, penalty="ratio", penalty_weight=1e-2, max_steps=5, progress=False,
           device="cpu")
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError):
        mc.fit(p, depth=2, optimizer="adam", lr=-1.0, penalty="ratio", penalty_weight=1e-2, progress=False)
    assert torch.get_num_threads() == threads


def test_penalized_batch_with_early_stops_equals_alone():
    """Once a run stops, the penalty is computed for the running ones only; every run still matches itself alone."""
    p = mc.completion_problem(n=12, rank=2, n_observed=60, seed=0)
    configs = [mc.RunConfig(depth=2, optimizer="adam", lr=1e-2, init_scale=1e-2, seed=s, penalty="ratio",
                            penalty_weight=w, max_steps=m, stop_loss=0.0)
               for s, w, m in [(0, 1e-2, 40), (1, 1e-3, 120), (2, 1e-2, 80)]]
    batch = mc.train(p, configs, progress=False)
    for cfg, run in zip(configs, batch):
        alone = mc.train(p, [cfg], progress=False)[0]
        assert run.summary["steps"] == cfg.max_steps == alone.summary["steps"]
        assert torch.allclose(run.matrix, alone.matrix, rtol=1e-5, atol=1e-7)
        assert run.history["penalty"].iloc[-1] == pytest.approx(alone.history["penalty"].iloc[-1], rel=1e-5)


def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    return threads


_SPLIT_CASES = {
    "adam + ratio": dict(optimizer="adam", lr=1e-2, init_scale=1e-2, penalty="ratio", penalty_weight=1e-2,
                         stop_loss=0.0, stop_plateau=1e-3),
    "gd": dict(lr=0.5, init_scale=1e-2, stop_loss=1e-6),
    "normalized_gd": dict(optimizer="normalized_gd", lr=1e-2, init_scale=1e-2, stop_loss=1e-6),
    "adam": dict(optimizer="adam", lr=1e-2, init_scale=1e-2, stop_loss=0.0),
    "gd, one run diverges": dict(lr=60.0, init_scale=0.3, stop_loss=0.0),
}


@pytest.mark.parametrize("case", list(_SPLIT_CASES))
def test_batch_split_across_threads_matches_one_thread(case):
    """On two CPU threads a completion batch trains as two sub-batches, one per thread: every run (its matrix, its
    history, its stop) is the same run as in one batch on one thread, and callbacks name runs of the whole batch."""
    p = mc.completion_problem(n=12, rank=2, n_observed=60, seed=0)
    configs = [mc.RunConfig(depth=d, seed=s, max_steps=m, **_SPLIT_CASES[case])
               for d in (1, 3) for s, m in [(0, 60), (1, 150), (2, 90), (3, 30), (4, 120)]]
    for depth in (1, 3):
        cfgs = [c for c in configs if c.depth == depth]
        threads = _two_threads()
        try:
            assert training._chunks([p], cfgs, torch.device("cpu")) == [[0, 2, 4], [1, 3]]
            finished, progressed = {}, []
            split = mc.train(p, cfgs, progress=False, device="cpu",
                             on_finish=lambda b, run: finished.setdefault(b, run),
                             on_progress=lambda steps, runs: progressed.append((steps, runs)))
            torch.set_num_threads(1)
            assert training._chunks([p], cfgs, torch.device("cpu")) == [list(range(5))]
            whole = mc.train(p, cfgs, progress=False, device="cpu")
        finally:
            torch.set_num_threads(threads)
        assert sorted(finished) == list(range(5)) and all(finished[b] is split[b] for b in range(5))
        assert sum(r for _, r in progressed) == 5 and sum(s for s, _ in progressed) == sum(c.max_steps for c in cfgs)
        for cfg, a, b in zip(cfgs, split, whole):
            assert a.config == b.config == cfg.validated(p.shape)
            assert a.summary["steps"] == b.summary["steps"] and a.summary["stop_reason"] == b.summary["stop_reason"]
            assert a.summary["batch_size"] == b.summary["batch_size"] == 5
            assert torch.equal(a.matrix, b.matrix)
            pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    if case == "gd, one run diverges":
        assert {r.summary["stop_reason"] for r in split} >= {"diverged"}


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_counts_the_budget_used_up_and_the_steps_taken(threads):
    """A callback with three arguments also gets the run-steps actually taken: a run that stops early counts its
    whole budget in the first count (used up) and only the steps it took in the third (the work done)."""
    p = mc.completion_problem(n=12, rank=2, n_observed=60, seed=0)
    cfgs = [mc.RunConfig(depth=2, seed=s, max_steps=5_000, **_SPLIT_CASES["gd"]) for s in range(4)]
    cfgs.append(mc.RunConfig(depth=2, seed=9, max_steps=40, **_SPLIT_CASES["gd"]))  # stopped by its budget
    progressed = []
    before = _two_threads() if threads == 2 else torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        runs = mc.train(p, cfgs, progress=False, device="cpu",
                        on_progress=lambda steps, n, taken: progressed.append((steps, n, taken)))
    finally:
        torch.set_num_threads(before)
    took = [r.summary["steps"] for r in runs]
    assert [r.summary["stop_reason"] for r in runs] == ["stop_loss"] * 4 + ["max_steps"]
    assert max(took[:4]) < 5_000  # the early stops are real: their budgets are not work
    assert sum(s for s, _, _ in progressed) == sum(c.max_steps for c in cfgs)
    assert sum(n for _, n, _ in progressed) == 5
    assert sum(t for _, _, t in progressed) == sum(took)
    assert all(t >= 0 for _, _, t in progressed)


def test_sensing_and_cuda_batches_stay_whole():
    """Sensing runs share one measurement operator, read once per step for the whole batch: they are not split."""
    p = mc.sensing_problem(n=6, rank=1, n_measurements=20, seed=0)
    cfgs = [mc.RunConfig(depth=2, lr=0.1, seed=s, max_steps=5) for s in range(4)]
    threads = _two_threads()
    try:
        assert training._chunks([p], cfgs, torch.device("cpu")) == [[0, 1, 2, 3]]
        q = mc.completion_problem(n=6, rank=1, n_observed=20, seed=0)
        assert training._chunks([q], cfgs, torch.device("cuda")) == [[0, 1, 2, 3]]
    finally:
        torch.set_num_threads(threads)


def test_penalized_batch_split_across_threads_stops_every_part_on_an_error():
    p = mc.completion_problem(n=10, rank=1, n_observed=40, seed=0)
    cfgs = [mc.RunConfig(depth=1, optimizer="adam", lr=1e-2, seed=s, penalty="ratio", penalty_weight=1e-2,
                         max_steps=m, stop_loss=0.0) for s, m in [(0, 100_000), (1, 5)]]  # the second part fails

    def boom(b, run):
        raise KeyError("stop here")

    progressed = []
    threads = _two_threads()
    try:
        with pytest.raises(KeyError, match="stop here"):
            mc.train(p, cfgs, progress=False, device="cpu", on_finish=boom,
                     on_progress=lambda steps, runs: progressed.append(steps))
        assert torch.get_num_threads() == 2
        assert sum(progressed) < 50_000  # the 100,000-step part was cancelled, not run to its end
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=0), "depth=0"),
    (dict(depth="3"), "depth='3'.*got type str"),
    (dict(lr=-0.1), "lr=-0.1"),
    (dict(lr=0.0), "lr=0.0"),
    (dict(lr=float("nan")), "lr=nan"),
    (dict(init_scale=0), "init_scale=0"),
    (dict(optimizer="lbfgs"), "optimizer='lbfgs'"),
    (dict(init="zeros"), "init='zeros'"),
    (dict(penalty="l1", penalty_weight=0.1), "penalty='l1'"),
    (dict(penalty_weight=0.1), "penalty_weight=0.1.*penalty is None"),
    (dict(penalty="ratio", penalty_weight=-1.0), "penalty_weight=-1.0"),
    (dict(max_steps=-5), "max_steps=-5"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(seed=1.5), "seed=1.5"),
    (dict(optimizer_options={"beta1": 0.9}), r"optimizer_options\['beta1'\]"),
])
def test_bad_fit_input(kwargs, match):
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match=match):
        mc.fit(p, progress=False, **kwargs)


def test_fit_needs_a_problem():
    with pytest.raises(ValueError, match="problem="):
        mc.fit("not a problem")


def test_batch_must_share_shape_and_key():
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    q = mc.completion_problem(n=6, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match="cannot share a batch"):
        mc.train([p, q], [mc.RunConfig(), mc.RunConfig()], progress=False)
    with pytest.raises(ValueError, match="cannot share a batch"):
        mc.train(p, [mc.RunConfig(depth=2), mc.RunConfig(depth=3)], progress=False)


def test_float32_and_float64_agree():
    p = mc.completion_problem(n=20, rank=2, n_observed=200, seed=0)
    a = mc.fit(p, depth=2, lr=2.0, init_scale=1e-2, max_steps=500, dtype="float32", progress=False)
    b = mc.fit(p, depth=2, lr=2.0, init_scale=1e-2, max_steps=500, dtype="float64", progress=False)
    assert a.summary["error_all"] == pytest.approx(b.summary["error_all"], rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    p = mc.completion_problem(n=30, rank=2, n_observed=300, seed=0)
    kw = dict(depth=3, lr=2.0, init_scale=1e-2, max_steps=300, dtype="float64", progress=False)
    a, b = mc.fit(p, device="cpu", **kw), mc.fit(p, device="cuda", **kw)
    assert b.summary["device"].startswith("cuda")
    assert torch.allclose(a.matrix, b.matrix, rtol=1e-8, atol=1e-10)


def test_stop_plateau_stops_a_penalized_run_once_its_objective_settles():
    p = mc.completion_problem(n=12, rank=2, n_observed=80, seed=0)
    kw = dict(depth=1, optimizer="adam", lr=1e-2, penalty="ratio", penalty_weight=1e-2, max_steps=20_000,
              stop_loss=0.0, progress=False)
    full = mc.fit(p, **kw)
    early = mc.fit(p, stop_plateau=1e-3, **kw)
    s = early.summary
    assert full.summary["stop_reason"] == "max_steps" and s["stop_reason"] == "plateau"
    assert 100 <= s["steps"] < 20_000
    h = early.history.set_index("step")["objective"]
    t = s["steps"]
    now, then = h[h.index > t / 2].min(), h[(h.index > t / 4) & (h.index <= t / 2)].min()
    assert abs(now - then) <= 1e-3 * max(abs(now), abs(then))
    # up to the stop it is the same run, step for step
    f = full.history.set_index("step")["objective"]
    assert torch.allclose(torch.tensor(h.values), torch.tensor(f.loc[h.index].values), rtol=1e-6)
    # and the stop is decided on the rows alone: off by default, never before step 100
    assert mc.fit(p, **{**kw, "max_steps": 300}).summary["stop_reason"] == "max_steps"


def test_stop_plateau_is_validated_and_train_small_refuses_it():
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match="stop_plateau=-0.1"):
        mc.fit(p, stop_plateau=-0.1, progress=False)
    with pytest.raises(ValueError, match="stop_plateau=2"):
        mc.fit(p, stop_plateau=2, progress=False)
    from mcreg_lib import small

    q = mc.problem_from_observations([0, 1, 1], [1, 0, 1], [1.0, 1.0, 0.0], (2, 2))
    with pytest.raises(ValueError, match="stop_plateau"):
        small.train_small(mc.grid(q, depth=2, lr=0.1, max_steps=10, dtype="float64", stop_plateau=1e-3))


def test_plateau_takes_the_smallest_value_of_each_half():
    """A decreasing objective: the value at t against the last at or before t/2; an oscillating one: the floors."""
    cfg = mc.RunConfig(stop_plateau=0.01)

    def rows(values, loss=1e-9):
        return [{"step": 0, "objective": 10.0, "train_loss": 1.0}] + [
            {"step": s, "objective": v, "train_loss": loss} for s, v in values]

    assert training._plateau(rows([(50, 2.0), (100, 1.0), (200, 0.995)]), cfg)
    assert not training._plateau(rows([(50, 2.0), (100, 1.0), (200, 0.9)]), cfg)
    assert not training._plateau(rows([(20, 1.0), (50, 1.0)]), cfg)  # never before step 100
    # oscillating at a floor of 1.0: the values at t and t/2 differ by 50%, the floors of the two halves do not
    noisy = [(40, 3.0), (60, 1.0), (80, 1.2), (100, 1.5), (130, 1.0), (160, 1.3), (200, 1.5)]
    assert training._plateau(rows(noisy), cfg)
    assert not training._plateau(rows(noisy[:-1] + [(200, 0.5)]), cfg)  # still falling
    # sparse logging (nothing in (t/4, t/2]): the last value at or before t/2
    assert training._plateau(rows([(10, 1.0), (1000, 0.999)]), cfg)
    # a run whose training loss has not fallen a thousandfold is stalled, not done (a saddle near zero)
    assert not training._plateau(rows([(50, 2.0), (100, 1.0), (200, 0.995)], loss=0.5), cfg)


def test_stop_scale_stops_a_run_whose_matrix_outgrows_the_data():
    """A run that stays fitted on the observed entries while ||W||_F grows without bound is stopped with reason
    'scale' at the first logged step where ||W||_F exceeds stop_scale times the data's scale; the run is the same
    run up to there."""
    p = mc.completion_problem(n=10, rank=2, n_observed=40, seed=0)
    scale = training.data_scale(p)
    assert scale == pytest.approx(math.sqrt(100 * float(p.values.double().square().mean())))
    kw = dict(depth=1, optimizer="adam", lr=0.05, init_scale=1e-3, max_steps=400, stop_loss=0.0, seed=0,
              progress=False, cache=False)
    full = mc.fit(p, **kw)
    limit = 0.5 * float(full.history["frobenius_norm"].max()) / scale  # a limit the run crosses
    early = mc.fit(p, stop_scale=limit, **kw)
    s = early.summary
    assert s["stop_reason"] == "scale" and s["steps"] < 400
    h = full.history.set_index("step")["frobenius_norm"]
    first = h.index[h > limit * scale][0]  # the first logged step over the limit
    assert s["steps"] == first
    assert float(torch.linalg.matrix_norm(early.matrix.double())) == pytest.approx(h.loc[first], rel=1e-5)
    # off by default and a far limit never fires; the cache key of a config without it is unchanged
    assert mc.fit(p, stop_scale=1e6, **kw).summary["stop_reason"] == "max_steps"
    c = mc.RunConfig(depth=1).validated()
    assert "stop_scale" not in c.identity() and "stop_scale" in c.as_dict()
    assert "stop_scale" in mc.RunConfig(depth=1, stop_scale=5.0).validated().identity()


def test_stop_scale_is_validated_and_train_small_refuses_it():
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match="stop_scale=-1"):
        mc.fit(p, stop_scale=-1.0, progress=False)
    from mcreg_lib import small

    q = mc.problem_from_observations([0, 1, 1], [1, 0, 1], [1.0, 1.0, 0.0], (2, 2))
    with pytest.raises(ValueError, match="stop_scale"):
        small.train_small(mc.grid(q, depth=2, lr=0.1, max_steps=10, dtype="float64", stop_scale=10.0))


def test_progress_is_shared_by_the_parts_of_a_split_batch():
    """One progress object for a whole train call: each part reports its own runs; the run-steps and runs reach
    their totals once, a run that stops early counts its whole budget, and the bar follows the slowest part."""
    got = []
    shared = training._Progress([10, 30, 20], lambda steps, runs: got.append((steps, runs)), False, "x", threads=2)
    a, b = shared.part([0, 2]), shared.part([1])
    a(5, [False, False], 2, force=True)
    assert got == [(10, 0)]
    b(5, [False], 1, force=True)
    a(10, [True, False], 1, force=True)  # run 0 at its budget
    b(12, [True], 0, force=True)  # run 1 stops early: its whole budget counts
    a(20, [True, True], 0, force=True)
    assert sum(s for s, _ in got) == 60 and sum(r for _, r in got) == 3
    a(20, [True, True], 0, force=True)  # a repeated report adds nothing
    assert got[-1] == (0, 0)

    shown = training._Progress([10, 30, 20], None, True, "x", threads=2)
    try:
        a, b = shown.part([0, 2]), shown.part([1])
        a(5, [False, False], 2, force=True)
        assert shown.bar.n == 0  # the other part has not reported
        b(7, [False], 1, force=True)
        assert shown.bar.n == 5 and "2 threads" in shown.bar.desc
        b(12, [True], 0, force=True)  # a part with no active run has reached the horizon
        a(10, [True, False], 1, force=True)
        assert shown.bar.n == 10
        a(20, [True, True], 0, force=True)
        assert shown.bar.n == shown.horizon == 30
    finally:
        shown.close()


def test_a_sensing_run_does_not_depend_on_its_batch():
    """The shared operator's products are taken in fixed shapes, so a run trained alone (an audit), in a small batch
    (a resumed sweep) or in a wide one (more than one chunk of runs, batch-mates that stop early) gives the same
    numbers, bit for bit."""
    p = mc.sensing_problem(n=12, rank=1, n_measurements=300, seed=0)  # more than one block of operator rows
    per_scale = objective.RUN_CHUNK // 3 + 2
    cfgs = [mc.RunConfig(depth=2, optimizer="normalized_gd", lr=1e-2, init_scale=s, seed=k, max_steps=300,
                         stop_loss=1e-4 if k % 3 else 0.0)
            for s in (1e-2, 1e-3, 1e-4) for k in range(per_scale)]  # more runs than one chunk: two chunks
    assert objective.RUN_CHUNK < len(cfgs) <= 2 * objective.RUN_CHUNK
    batch = mc.train([p] * len(cfgs), cfgs, progress=False)
    for i in (0, 4, len(cfgs) - 1):
        alone = mc.train([p], [cfgs[i]], progress=False)[0]
        assert alone.summary["steps"] == batch[i].summary["steps"]
        assert torch.equal(alone.matrix, batch[i].matrix)
        pd.testing.assert_frame_equal(alone.history, batch[i].history, check_exact=True)
    small = mc.train([p] * 3, cfgs[-3:], progress=False)
    for a, b in zip(small, batch[-3:]):
        assert torch.equal(a.matrix, b.matrix)


def _same(a, b):
    assert a.summary["steps"] == b.summary["steps"] and a.summary["stop_reason"] == b.summary["stop_reason"]
    assert torch.equal(a.matrix, b.matrix)
    assert all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)


def test_sensing_runs_of_several_depths_train_in_lockstep_with_their_own_numbers():
    """Sensing runs on one problem but of different depths and optimizers train in one call, one batch per key
    stepped in lockstep over one pass of the shared operator; each run ends with the numbers it has in its own
    batch or alone, bit for bit, though the keys stop at different steps (stop rule, budgets)."""
    p = mc.sensing_problem(n=10, rank=1, n_measurements=300, seed=0)
    cfgs = [mc.RunConfig(depth=d, optimizer=o, lr=lr, init_scale=s, seed=k, max_steps=ms, stop_loss=1e-3,
                         logs_per_decade=5)
            for d, o, lr, ms in ((3, "normalized_gd", 5e-2, 400), (2, "gd", 0.5, 60), (4, "normalized_gd", 5e-2, 300))
            for s in (1e-1, 1e-2) for k in range(2)]
    together = mc.train(p, cfgs, progress=False)
    assert all(r.summary["batch_size"] == len(cfgs) for r in together)
    assert {r.summary["stop_reason"] for r in together} == {"stop_loss", "max_steps"}
    for key in ((3, "normalized_gd"), (2, "gd"), (4, "normalized_gd")):
        idx = [i for i, c in enumerate(cfgs) if (c.depth, c.optimizer) == key]
        for i, run in zip(idx, mc.train(p, [cfgs[i] for i in idx], progress=False)):
            _same(together[i], run)
    _same(together[5], mc.train(p, [cfgs[5]], progress=False)[0])


def test_a_batch_goes_on_smaller_once_half_of_it_stopped(monkeypatch):
    """Once half a batch has stopped, its running runs go on in a smaller batch: each run still ends with the numbers
    it has alone, bit for bit (history, steps, stop reason), completion and sensing alike."""
    calls = []
    running_only = training.Batch.running_only
    monkeypatch.setattr(training.Batch, "running_only",
                        lambda self, t: calls.append((self.size, self.n_active, t)) or running_only(self, t))
    for p in (mc.completion_problem(n=8, rank=1, n_observed=40, seed=0),
              mc.sensing_problem(n=8, rank=1, n_measurements=60, seed=0)):
        cfgs = [mc.RunConfig(depth=2, optimizer="gd", lr=0.2, init_scale=0.3, seed=k, max_steps=ms, stop_loss=0.0,
                             logs_per_decade=5) for k, ms in enumerate((10, 20, 30, 200, 15, 120))]
        calls.clear()
        together = mc.train(p, cfgs, progress=False, device="cpu")
        assert calls and all(2 * active <= size for size, active, _ in calls)
        for i in (1, 3, 5):
            _same(together[i], mc.train(p, [cfgs[i]], progress=False, device="cpu")[0])


def test_only_sensing_runs_in_one_dtype_mix_batch_keys():
    cfgs = [mc.RunConfig(depth=d, lr=0.1, max_steps=3) for d in (2, 3)]
    q = mc.completion_problem(n=6, rank=1, n_observed=20, seed=0)
    with pytest.raises(ValueError, match="cannot share a batch.*only sensing runs in one dtype"):
        mc.train(q, cfgs, progress=False)
    p = mc.sensing_problem(n=6, rank=1, n_measurements=20, seed=0)
    with pytest.raises(ValueError, match="cannot share a batch"):
        mc.train(p, [cfgs[0], dataclasses.replace(cfgs[1], dtype="float64")], progress=False)


def test_sensing_runs_on_several_problems_train_in_one_call_with_their_own_numbers():
    """Sensing runs on different problems (other operators, other numbers of measurements) and of different depths
    train in one call: one batch per problem and key, each problem's operator read once per step for its batches.
    Every run ends with the numbers it has alone, bit for bit (no run goes through products of another shape)."""
    p = mc.sensing_problem(n=8, rank=1, n_measurements=300, seed=0)
    q = mc.sensing_problem(n=8, rank=1, n_measurements=120, seed=1)
    cfgs = [mc.RunConfig(depth=d, optimizer="normalized_gd", lr=5e-2, init_scale=s, max_steps=200, stop_loss=1e-3,
                         logs_per_decade=5) for d in (2, 3) for s in (1e-1, 1e-2)]
    problems = [p, q, q, p, p, q, p, q]
    configs = cfgs + cfgs[::-1]
    together = mc.train(problems, configs, progress=False)
    assert all(r.summary["batch_size"] == len(configs) for r in together)
    assert [r.problem_info["n_measurements"] for r in together] == [x.n_observed for x in problems]
    for i in (0, 1, 6, 7):
        _same(together[i], mc.train(problems[i], [configs[i]], progress=False)[0])
