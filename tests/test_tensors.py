import math

import numpy as np
import pytest
import torch

from mcreg_lib import optimizers
from mcreg_lib import tensors as T

F64 = dict(dtype="float64")


def _problem(m=120, seed=0, order=3, n=6, rank=1):
    return T.tensor_completion_problem(order=order, n=n, rank=rank, n_observed=m, seed=seed)


# --- problems -------------------------------------------------------------------------------------------------------


def test_problem_target_observations_and_fingerprint():
    p = _problem(m=50, seed=3)
    assert p.shape == (6, 6, 6) and p.n_observed == 50
    assert math.isclose(float(torch.linalg.vector_norm(p.target)), 1.0, rel_tol=1e-12)
    assert torch.unique(p.indices).numel() == 50 and bool((p.indices.diff() > 0).all())
    assert torch.equal(p.values, p.target.reshape(-1)[p.indices])
    mi = p.multi_indices()
    assert torch.equal(p.target[tuple(mi.T)], p.values)
    assert torch.equal(p.observed_tensor()[tuple(mi.T)], p.values) and p.mask().sum() == 50
    # one seed: one target, nested observation sets
    q = _problem(m=80, seed=3)
    assert torch.equal(q.target, p.target) and bool(torch.isin(p.indices, q.indices).all())
    assert p.fingerprint() == _problem(m=50, seed=3).fingerprint()
    assert p.fingerprint() != q.fingerprint() != _problem(m=80, seed=4).fingerprint()
    # the target has CP rank 1: its unfoldings have matrix rank 1
    assert torch.linalg.matrix_rank(p.target.reshape(6, 36)) == 1


# --- the training loop ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order,n", [(3, 4), (4, 3), (5, 2)])
def test_manual_gradients_match_autograd(order, n):
    p = _problem(m=n**order // 2, order=order, n=n, seed=1)
    kw = dict(init_scale=0.5, lr=0.05, max_steps=5, stop_loss=0.0, seed=2, optimizer="gd", width=3, **F64)
    a = T.fit_cp(p, progress=False, **kw)
    b = T.fit_cp(p, progress=False, gradients="autograd", **kw)
    # and an independent reference: autograd on the full tensor, plain GD
    fs = [f.clone().requires_grad_() for f in T.init_factors(order, n, 3, 0.5, 2)]
    for _ in range(5):
        loss = (T.cp_tensor(fs).reshape(-1)[p.indices] - p.values).square().mean()
        gs = torch.autograd.grad(loss, fs)
        fs = [(f - 0.05 * g).detach().requires_grad_() for f, g in zip(fs, gs)]
    for x, y, z in zip(a.factors, b.factors, fs):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-14)
        assert torch.allclose(x, z.detach(), rtol=1e-12, atol=1e-14)


def test_autograd_path_matches_in_a_batch_whose_runs_stop_at_different_steps():
    ps = [_problem(m=40, order=3, n=4, seed=0), _problem(m=64, order=3, n=4, seed=1)]
    cs = [T.CPConfig(seed=0, max_steps=150, **F64), T.CPConfig(seed=1, max_steps=60, stop_every=1, **F64)]
    a = T.train_cp(ps, cs, progress=False)
    b = T.train_cp(ps, cs, progress=False, gradients="autograd")
    for x, y in zip(a, b):
        assert x.summary["steps"] == y.summary["steps"] == x.config.max_steps
        assert torch.allclose(x.tensor, y.tensor, rtol=1e-10, atol=1e-14)
    assert math.isnan(b[1].summary["error_unobserved"])  # every entry observed
    # all 64 entries observed: the loss is the mean squared error over the tensor, ||T - T*||^2 / 64
    assert a[1].summary["train_loss"] == pytest.approx(a[1].summary["error_all"] / 64, rel=1e-9)


def test_paper_optimizer_is_normalized_gd_with_paper_options():
    c = T.CPConfig().validated()
    assert c.optimizer == "normalized_gd" and dict(c.optimizer_options) == {"beta": 0.99, "eps": 1e-6}
    assert (c.lr, c.init_scale, c.stop_loss, c.stop_every, c.stop_patience) == (1e-2, 1e-3, 1e-6, 100, 2)
    assert T.CPConfig(optimizer="gd").validated().optimizer_options == ()
    # five steps of the loop = five steps of the library's optimizer on autograd gradients
    p = _problem(m=60, seed=0, order=3, n=4)
    run = T.fit_cp(p, progress=False, width=5, init_scale=0.3, max_steps=5, stop_loss=0.0, **F64)
    params = [f[None].clone() for f in T.init_factors(3, 4, 5, 0.3, 0)]
    opt = optimizers.make("normalized_gd", params, {"beta": 0.99, "eps": 1e-6})
    for _ in range(5):
        fs = [q[0].clone().requires_grad_() for q in params]
        loss = (T.cp_tensor(fs).reshape(-1)[p.indices] - p.values).square().mean()
        opt.step(params, [g[None] for g in torch.autograd.grad(loss, fs)], torch.full((1, 1, 1), 1e-2,
                                                                                       dtype=torch.float64))
    for mine, ref in zip(run.factors, params):
        assert torch.allclose(mine, ref[0], rtol=1e-10, atol=1e-14)


def test_small_init_recovers_rank_one_from_enough_observations():
    p = _problem(m=120)  # 120 of 216 entries
    run = T.fit_cp(p, progress=False, max_steps=3000, **F64)  # the paper's protocol, width 36
    s = run.summary
    assert s["stop_reason"] == "stop_loss" and not s["diverged"]
    assert s["steps"] % 100 == 99 and s["steps"] >= 299  # three checks in a row, one every 100 steps
    assert s["train_loss"] <= 1e-6 and s["relative_residual"] < 1e-3
    assert math.isclose(s["error_all"], s["relative_residual"] ** 2, rel_tol=1e-9)
    assert T.cp_rank(run.tensor) == 1
    h = run.history
    assert h["step"].iloc[0] == 0 and h["step"].iloc[-1] == s["steps"] and h["step"].is_monotonic_increasing
    assert set(h.columns) >= {"train_loss", "relative_residual", "error_all", "error_unobserved", "tensor_norm"}
    assert math.isclose(T.tensor_metrics(p, run.tensor)["relative_residual"], s["relative_residual"],
                        rel_tol=1e-9)


def test_plain_gd_from_small_init_heads_to_the_target():
    # constant-step GD closes in on the target far more slowly than the paper's adaptive step; 4 components
    p = _problem(m=120)
    run = T.fit_cp(p, progress=False, optimizer="gd", lr=100.0, init_scale=0.03, width=4, max_steps=1500,
                   stop_every=1, stop_patience=0, stop_loss=1e-12, **F64)
    assert run.summary["stop_reason"] == "max_steps" and run.summary["relative_residual"] < 0.05


def test_too_few_observations_do_not_determine_the_tensor():
    p = _problem(m=12)
    run = T.fit_cp(p, progress=False, max_steps=3000, **F64)
    assert run.summary["train_loss"] <= 1e-6  # it fits the observations ...
    assert run.summary["relative_residual"] > 0.3  # ... but not the tensor


def test_batch_equals_runs_alone():
    ps = [_problem(m=120, seed=0), _problem(m=90, seed=1), _problem(m=120, seed=0)]
    cs = [T.CPConfig(seed=0, max_steps=700, **F64), T.CPConfig(seed=1, lr=2e-2, init_scale=1e-2, max_steps=900, **F64),
          T.CPConfig(seed=2, stop_every=1, stop_patience=0, max_steps=400, logs_per_decade=5, **F64)]
    finished = []
    batch = T.train_cp(ps, cs, progress=False, on_finish=lambda b, r: finished.append((b, r.summary["steps"])))
    assert sorted(b for b, _ in finished) == [0, 1, 2]
    assert [r.summary["batch_size"] for r in batch] == [3, 3, 3]
    for p, c, got in zip(ps, cs, batch):
        alone = T.train_cp(p, [c], progress=False)[0]
        assert got.summary["steps"] == alone.summary["steps"]
        assert got.summary["stop_reason"] == alone.summary["stop_reason"]
        assert torch.allclose(got.tensor, alone.tensor, rtol=1e-9, atol=1e-12)
        assert list(got.history["step"]) == list(alone.history["step"])
        np.testing.assert_allclose(got.history["train_loss"], alone.history["train_loss"], rtol=1e-7, atol=1e-15)


def test_a_tensor_batch_reports_its_progress_as_a_sweep_does(tmp_path, monkeypatch):
    """Counted by ``sweeps.progress_counter`` (the norms chapter's P4 batches), a CP batch writes the build's progress
    file: the budget used up and the run-steps taken, which stop short of it for runs stopped by their rule."""
    from mcreg_lib import settings, sweeps

    monkeypatch.setenv("MCREG_PROGRESS_FILE", str(tmp_path / "progress.json"))
    ps = [_problem(m=120, seed=0), _problem(m=90, seed=1)]
    cs = [T.CPConfig(seed=0, max_steps=3_000, **F64), T.CPConfig(seed=1, max_steps=200, **F64)]
    seen = []
    with sweeps.progress_counter(cs, "CP order 3", progress=False) as counter:
        runs = T.train_cp(ps, cs, progress=False,
                          on_progress=lambda steps, n, taken: seen.append(taken) or counter(steps, n, taken))
    took = [r.summary["steps"] for r in runs]
    assert runs[0].summary["stop_reason"] != "max_steps" and took[0] < 3_000 and took[1] == 200
    state = settings.read_progress(tmp_path / "progress.json")
    assert state["label"] == "CP order 3" and state["runs"] == state["total_runs"] == 2
    assert state["steps"] == state["total"] == 3_200 and state["taken"] == sum(took) == sum(seen)
    assert all(t >= 0 for t in seen)


def test_diverging_run_is_marked_and_the_others_are_untouched():
    p = _problem(m=120)
    ok = T.CPConfig(seed=0, optimizer="gd", lr=20.0, init_scale=0.05, max_steps=300, **F64)
    bad = T.CPConfig(seed=1, optimizer="gd", lr=1e7, init_scale=0.05, max_steps=300, **F64)
    runs = T.train_cp(p, [ok, bad, ok], progress=False)
    s = runs[1].summary
    assert s["diverged"] and s["stop_reason"] == "diverged" and s["diverged_at"] == s["steps"] >= 1
    assert not math.isfinite(s["train_loss"]) or s["train_loss"] > 1e6
    assert math.isnan(s["relative_residual"])
    assert all(bool((f == 0).all()) for f in runs[1].factors)
    assert runs[1].history["step"].max() < s["diverged_at"]
    alone = T.train_cp(p, [ok], progress=False)[0]
    for b in (0, 2):
        assert not runs[b].summary["diverged"] and runs[b].summary["steps"] == 300
        assert torch.allclose(runs[b].tensor, alone.tensor, rtol=1e-9, atol=1e-12)


def test_same_seed_same_numbers():
    p = _problem(m=100)
    kw = dict(max_steps=400, progress=False)
    a, b = T.fit_cp(p, seed=5, **kw), T.fit_cp(p, seed=5, **kw)
    assert a.history.equals(b.history) and torch.equal(a.tensor, b.tensor)
    assert a.tensor.dtype == torch.float32
    c = T.fit_cp(p, seed=6, **kw)
    assert not torch.equal(a.tensor, c.tensor)
    assert T.cp_rank([a.tensor, c.tensor], seed=3) == T.cp_rank([a.tensor, c.tensor], seed=3)


# --- the linear baseline --------------------------------------------------------------------------------------------


def test_linear_baseline_is_the_minimal_norm_fit():
    p = _problem(m=70, seed=2, order=3, n=5)
    lin = T.linear_baseline(p)
    flat = lin.reshape(-1)
    assert torch.equal(flat[p.indices], p.values)
    unobserved = torch.ones(p.numel, dtype=torch.bool)
    unobserved[p.indices] = False
    assert bool((flat[unobserved] == 0).all())
    # the minimal-norm solution of "agree with the observations": pinv of the sampling operator times the values
    sampling = torch.zeros(p.n_observed, p.numel, dtype=torch.float64)
    sampling[torch.arange(p.n_observed), p.indices] = 1.0
    assert torch.allclose(torch.linalg.pinv(sampling) @ p.values, flat, atol=1e-12)
    # gradient descent on the entries themselves, from zero, converges to it
    x = torch.zeros(p.numel, dtype=torch.float64)
    for _ in range(200):
        x -= 0.3 * sampling.T @ (sampling @ x - p.values)  # a step on half the sum of squares
    assert torch.allclose(x, flat, atol=1e-10)
    m = T.tensor_metrics(p, lin)
    assert m["train_loss"] == 0.0 and math.isclose(m["error_unobserved"], 1.0)
    assert math.isclose(m["relative_residual"] ** 2, 1.0 - float(p.values.square().sum()), rel_tol=1e-9)


# --- tensor rank ----------------------------------------------------------------------------------------------------


def test_cp_rank_of_low_rank_random_and_zero_tensors():
    g = torch.Generator().manual_seed(0)
    rank1 = T.low_cp_rank_target(3, 4, 1, g)
    rank2 = T.low_cp_rank_target(3, 4, 2, g)
    noise = torch.randn(4, 4, 4, generator=g, dtype=torch.float64)
    noise = noise / torch.linalg.vector_norm(noise)
    got = T.cp_rank([rank1, rank2, noise, torch.zeros(4, 4, 4)], max_iter=300)
    assert got[0] == 1 and got[1] == 2 and got[2] > 3 and got[3] == 0
    assert T.cp_rank(rank2, max_iter=300) == 2  # alone as in a list
    assert T.cp_rank(7.0 * rank1.to(torch.float32)) == 1


def test_cp_als_fits_its_rank_and_stops_early():
    g = torch.Generator().manual_seed(1)
    x = torch.stack([T.low_cp_rank_target(3, 5, 3, g), T.low_cp_rank_target(3, 5, 3, g)])
    mse, ok = T.cp_als(x, [3, 1], max_iter=500)
    assert bool(ok[0]) and not bool(ok[1]) and mse[0] < 1e-6 < mse[1]


# --- validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("lr", -1.0), ("lr", 0.0), ("init_scale", 0.0), ("width", 0), ("max_steps", -1), ("stop_loss", -1e-3),
    ("stop_every", 0), ("stop_patience", -1), ("seed", -2), ("dtype", "float16"), ("optimizer", "lbfgs"),
    ("divergence_factor", 1.0), ("logs_per_decade", 0),
])
def test_bad_config_names_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        T.CPConfig(**{field: value}).validated()
    with pytest.raises(ValueError, match=field):
        T.train_cp(_problem(m=20, order=3, n=3), [T.CPConfig(**{field: value})], progress=False)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="n_observed"):
        T.tensor_completion_problem(order=3, n=3, n_observed=28)
    with pytest.raises(ValueError, match="n_observed"):
        T.tensor_completion_problem(order=3, n=3, n_observed=0)
    with pytest.raises(ValueError, match="order"):
        T.tensor_completion_problem(order=0)
    with pytest.raises(ValueError, match="rank"):
        T.tensor_completion_problem(order=3, n=3, rank=0)
    with pytest.raises(ValueError, match="target_norm"):
        T.tensor_completion_problem(order=3, n=3, n_observed=5, target_norm=0.0)
    with pytest.raises(ValueError, match="optimizer_options"):
        T.CPConfig(optimizer="gd", optimizer_options=(("eps", 1e-6),)).validated()
    p3, p4 = _problem(m=20, order=3, n=3), _problem(m=20, order=3, n=4)
    with pytest.raises(ValueError, match="order 3"):
        T.train_cp([p3, p4], [T.CPConfig(), T.CPConfig()], progress=False)
    with pytest.raises(ValueError, match="batch"):
        T.train_cp(p3, [T.CPConfig(), T.CPConfig(optimizer="gd")], progress=False)
    with pytest.raises(ValueError, match="gradients"):
        T.train_cp(p3, [T.CPConfig()], gradients="numeric", progress=False)
    with pytest.raises(ValueError, match="problems"):
        T.train_cp(["not a problem"], [T.CPConfig()], progress=False)
    with pytest.raises(ValueError, match="momentum"):
        T.fit_cp(p3, momentum=0.9)
    with pytest.raises(ValueError, match="tol"):
        T.cp_rank(torch.ones(2, 2, 2), tol=0.0)
    with pytest.raises(ValueError, match=r"tensors\[1\]"):
        T.cp_rank([torch.ones(2, 2, 2), torch.ones(2, 2)])
    with pytest.raises(ValueError, match="tensor"):
        T.tensor_metrics(p3, torch.zeros(3, 3))
