"""Balancedness (mcreg_lib.balance): the conserved quantities, the exact discrete identity, the small trainers."""

import math

import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import analysis, metrics
from mcreg_lib.chapters import balancedness as balance

EPS64 = torch.finfo(torch.float64).eps


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a busy 2-core machine two threads cost 100x more than they save (52 s against 0.6 s for
    300 steps of the small ReLU trainer, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _factors(seed, n1=7, n2=5, k=3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n1, k, generator=g, dtype=torch.float64) * scale
    v = torch.randn(n2, k, generator=g, dtype=torch.float64) * scale
    m = torch.randn(n1, n2, generator=g, dtype=torch.float64)
    return u, v, m


def _autograd_relu_loss(x, y, layers, slope):
    """The reference: the (leaky) ReLU net's loss by autograd, backward done; returns it and the layer copies."""
    ws = [w.clone().requires_grad_(True) for w in layers]
    h = x
    for j, w in enumerate(ws):
        h = h @ w.T
        if j < len(ws) - 1:
            h = torch.nn.functional.leaky_relu(h, slope)
    ref = 0.5 * (h - y).square().sum() / x.shape[0]
    ref.backward()
    return ref, ws


@pytest.mark.parametrize("seed", range(5))
def test_factorization_identity_holds_to_machine_precision(seed):
    u, v, m = _factors(seed)
    out = balance.factorization_identity(u, v, m, lr=0.05)
    assert out["error_over_scale"] < 20 * EPS64
    # the identity is not trivial: the first-order terms it cancels are much larger than the error
    assert out["first_order_term"] > 1e8 * out["error"]
    assert out["change"] == pytest.approx(out["predicted"], rel=1e-10)


def test_factorization_identity_is_the_general_step_identity():
    u, v, m = _factors(7)
    u2, v2, _ = balance.factorization_step(u, v, m, 0.05)
    table = balance.step_identity([v.T, u], [v2.T, u2])
    assert table.error_over_scale.iloc[0] < 20 * EPS64
    assert table.change.iloc[0] == pytest.approx(balance.factorization_identity(u, v, m, 0.05)["change"], rel=1e-12)


def test_step_identity_detects_a_step_that_is_not_a_gradient_step():
    u, v, m = _factors(3)
    g = torch.Generator().manual_seed(0)
    u2 = u - 0.05 * torch.randn(u.shape, generator=g, dtype=torch.float64)
    v2 = v - 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
    assert balance.step_identity([v.T, u], [v2.T, u2]).error_over_scale.iloc[0] > 1e-4


def test_library_gd_step_obeys_the_identity_at_depth_3():
    prob = mc.completion_problem(n=12, rank=2, n_observed=80, seed=1)
    kw = dict(depth=3, lr=0.5, init_scale=1.0, seed=2, dtype="float64", stop_loss=0.0)
    before = mc.fit(prob, max_steps=0, **kw).layers
    after = mc.fit(prob, max_steps=1, **kw).layers
    table = balance.step_identity(before, after)
    assert len(table) == 2
    assert (table.error_over_scale < 50 * EPS64).all()
    assert (table.first_order_term > 1e6 * table.error).all()


def test_balance_matrix_agrees_with_the_one_metric_and_its_diagonal_is_unit_balance():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)]
    c = metrics.balance_matrix(*layers)
    assert float(torch.linalg.matrix_norm(c)) == pytest.approx(float(mc.metrics.balancedness_gaps(layers)[0]))
    torch.testing.assert_close(torch.diagonal(c), balance.unit_balance(*layers))
    assert float(torch.trace(c)) == pytest.approx(float(layers[1].square().sum() - layers[0].square().sum()))
    rel = float(metrics.relative_balancedness_gaps(layers)[0])
    assert 0 < rel < 1
    with pytest.raises(ValueError, match="layers="):
        metrics.balance_matrix(layers[1], layers[0])


def test_relative_gap_is_zero_for_balanced_layers():
    prob = mc.completion_problem(n=10, rank=2, n_observed=50, seed=0)
    layers = mc.fit(prob, depth=3, init="balanced", max_steps=0, dtype="float64").layers
    assert max(float(r) for r in metrics.relative_balancedness_gaps(layers)) < 1e-12


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_gradients_match_autograd(slope):
    x, y = balance.relu_data(30, [8, 6, 5, 3], seed=0)
    layers = balance.relu_init([8, 6, 5, 3], "unbalanced", seed=1, entry_std=0.5)
    batched = [w.unsqueeze(0) for w in layers]
    loss, grads = balance.relu_loss_and_grads(x, y, batched, torch.tensor([slope], dtype=torch.float64))
    ref, ws = _autograd_relu_loss(x, y, layers, slope)
    assert float(loss[0]) == pytest.approx(ref.item(), rel=1e-12)
    for g, w in zip(grads, ws):
        torch.testing.assert_close(g[0], w.grad, rtol=1e-10, atol=1e-12)


def test_relu_step_keeps_the_per_unit_identity_but_not_the_matrix_one():
    x, y = balance.relu_data(40, [10, 8, 8, 3], seed=0)
    layers = [w.unsqueeze(0) for w in balance.relu_init([10, 8, 8, 3], "unbalanced", seed=1, entry_std=0.5)]
    _, grads = balance.relu_loss_and_grads(x, y, layers, torch.tensor([0.0]))
    after = [w - 0.01 * g for w, g in zip(layers, grads)]
    per_unit = balance.step_identity(layers, after, per_unit=True)
    assert (per_unit.error_over_scale < 50 * EPS64).all()
    assert (balance.step_identity(layers, after).error_over_scale > 1e-8).any()  # C_j off-diagonals are not conserved


def test_train_relu_nets_accounts_for_every_bit_of_drift_and_is_reproducible():
    x, y = balance.relu_data(50, [20, 10, 10, 3], seed=0, target_rms=3.0)
    sizes = [20, 10, 10, 3]
    inits = [balance.relu_init(sizes, init, seed=1, entry_std=0.1) for init in ("balanced", "unbalanced")]
    hist, finals, diverged = balance.train_relu_nets(x, y, inits, [0.0, 0.01], lr=0.02, steps=300)
    assert diverged == [None, None]
    for net in (0, 1):
        h = hist[hist.net == net]
        assert h.loss.iloc[-1] < 0.5 * h.loss.iloc[0]
        measured = h.diff_1.iloc[-1] - h.diff_1.iloc[0]
        assert measured == pytest.approx(h.predicted_drift_1.iloc[-1], rel=1e-8, abs=1e-12)
    start = hist[(hist.net == 0) & (hist.step == 0)]
    assert start.diff_1.iloc[0] == pytest.approx(0.0, abs=1e-12)  # balanced init
    hist2, _, _ = balance.train_relu_nets(x, y, inits, [0.0, 0.01], lr=0.02, steps=300)
    assert hist.equals(hist2)
    assert finals[0][0].shape == (10, 20)


def test_train_relu_nets_reports_divergence_and_rejects_bad_input():
    x, y = balance.relu_data(20, [6, 5, 2], seed=0, target_rms=5.0)
    inits = [balance.relu_init([6, 5, 2], "unbalanced", seed=0, entry_std=1.0)]
    hist, _, diverged = balance.train_relu_nets(x, y, inits, [0.0], lr=50.0, steps=200)
    assert diverged[0] is not None
    assert np.isfinite(hist.loss).all()
    with pytest.raises(ValueError, match="slopes"):
        balance.train_relu_nets(x, y, inits, [0.0, 0.1], lr=0.1, steps=5)
    with pytest.raises(ValueError, match="lr="):
        balance.train_relu_nets(x, y, inits, [0.0], lr=-1.0, steps=5)
    with pytest.raises(ValueError, match="init="):
        balance.relu_init([6, 5, 2], "xavier", seed=0)
    with pytest.raises(ValueError, match="sizes="):
        balance.relu_init([6, 2], "balanced", seed=0)


def test_relu_init_balanced_layers_have_equal_squared_norms():
    layers = balance.relu_init([1000, 100, 100, 10], "balanced", seed=0)
    norms = [float(w.square().sum()) for w in layers]
    assert norms == pytest.approx([norms[0]] * 3, rel=1e-12)
    unbalanced = [float(w.square().sum()) for w in balance.relu_init([1000, 100, 100, 10], "unbalanced", seed=0)]
    assert unbalanced == pytest.approx([10.0, 1.0, 0.1], rel=0.1)  # P2: all entries N(0, 1e-4)
    assert norms[0] == pytest.approx(1.0)  # geometric mean of 10, 1, 0.1


def test_factorization_converges_and_balances_with_decaying_steps():
    m = balance.factorization_target(8, 6, 2, seed=0)
    res = balance.train_factorization(m, width=2, init_scale=1e-3, lr0=0.5, steps=3000, seeds=[0, 1], delta=0.1)
    s = res.summary
    assert not s.diverged.any()
    assert (s.final_relative_residual < 1e-3).all()
    assert (s.final_relative_gap < 1e-3).all()
    nuclear = float(mc.nuclear_norm(m))
    assert s.u_sq_norm.to_numpy() == pytest.approx([nuclear] * 2, rel=1e-3)


def test_rank_one_constant_step_converges_linearly():
    m = balance.factorization_target(8, 6, 1, seed=0)
    res = balance.train_factorization(m, width=1, init_scale=1e-3, lr0=0.2, steps=300, seeds=[0],
                                      logs_per_decade=1000)
    h = res.history[(res.history.loss < 1e-4) & (res.history.loss > 1e-24)]
    fit = analysis.log_linear_rate(h.step.to_numpy(), h.loss.to_numpy())
    assert fit["r_squared"] > 0.99
    assert fit["rate"] < 0.9


def test_factorization_divergence_and_validation():
    m = balance.factorization_target(5, 4, 1, seed=0)
    res = balance.train_factorization(m, width=1, init_scale=1.0, lr0=20.0, steps=100, seeds=[0])
    assert bool(res.summary.diverged.iloc[0])
    assert np.isfinite(res.history.loss).all()
    with pytest.raises(ValueError, match="delta="):
        balance.train_factorization(m, 1, 1e-3, 0.1, 10, [0], delta=0.7)
    with pytest.raises(ValueError, match="width="):
        balance.train_factorization(m, 0, 1e-3, 0.1, 10, [0])
    with pytest.raises(ValueError, match=r"seeds\[0\]="):
        balance.train_factorization(m, 1, 1e-3, 0.1, 10, [-1])
    with pytest.raises(ValueError, match="lr="):
        balance.factorization_identity(torch.ones(3, 1), torch.ones(2, 1), torch.ones(3, 2), lr=0.0)


def test_schedules_and_fits():
    lrs = balance.lr_schedule(0.5, 0.1, 4)
    assert lrs == pytest.approx(0.5 * np.array([1, 2, 3, 4]) ** -0.6)
    assert balance.lr_schedule(0.5, None, 3) == pytest.approx([0.5] * 3)
    assert analysis.loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    fit = analysis.log_linear_rate(np.arange(10), 0.5 ** np.arange(10))
    assert fit["rate"] == pytest.approx(0.5) and fit["r_squared"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="losses="):
        analysis.log_linear_rate([0, 1, 2], [1.0, 0.0, 1.0])


def test_layer_checkpoints_follow_one_trajectory():
    prob = mc.completion_problem(n=10, rank=2, n_observed=60, seed=0)
    kw = dict(depth=3, lr=0.5, init_scale=0.1, dtype="float64")
    tab = balance.layer_checkpoints(prob, [0, 5, 20], seeds=[0], **kw)
    assert sorted(tab.step.unique()) == [0, 5, 20] and sorted(tab.pair.unique()) == [1, 2]
    start = mc.models.init_layers(prob.shape, 3, "gaussian", 0.1, 0)
    gap0 = float(mc.metrics.balancedness_gaps(start)[0])
    assert tab[(tab.step == 0) & (tab.pair == 1)].gap.iloc[0] == pytest.approx(gap0, rel=1e-12)
    run = mc.fit(prob, max_steps=20, stop_loss=0.0, seed=0, **kw)
    assert tab[(tab.step == 20) & (tab.pair == 2)].gap.iloc[0] == pytest.approx(
        float(mc.metrics.balancedness_gaps(run.layers)[1]), rel=1e-12)
    with pytest.raises(ValueError, match="config="):
        balance.layer_checkpoints(prob, [0, 5], max_steps=5, **kw)
    with pytest.raises(ValueError, match="config="):
        balance.layer_checkpoints(prob, [0, 5], seed=1, **kw)
    assert math.isfinite(tab.relative_gap.max())


def test_layer_checkpoints_batch_seeds():
    prob = mc.completion_problem(n=8, rank=2, n_observed=40, seed=0)
    tab = balance.layer_checkpoints(prob, [0, 3], seeds=[0, 1], depth=2, lr=0.5, init_scale=0.1, dtype="float64")
    assert sorted(tab.seed.unique()) == [0, 1] and len(tab) == 4
    one = balance.layer_checkpoints(prob, [0, 3], seeds=[1], depth=2, lr=0.5, init_scale=0.1, dtype="float64")
    assert one.gap.to_numpy() == pytest.approx(tab[tab.seed == 1].gap.to_numpy(), rel=1e-12)


def test_relu_data_comes_from_a_teacher_of_the_students_shape_at_unit_scale():
    x, y = balance.relu_data(200, [30, 12, 12, 4], seed=3)
    assert x.shape == (200, 30) and y.shape == (200, 4)
    assert float(y.square().mean().sqrt()) == pytest.approx(1.0, rel=1e-12)
    x2, y2 = balance.relu_data(200, [30, 12, 12, 4], seed=3, target_rms=2.0)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(y2, 2 * y)
    with pytest.raises(ValueError, match="sizes="):
        balance.relu_data(10, [5], seed=0)


def test_batched_relu_gradients_match_autograd_net_by_net():
    x, y = balance.relu_data(25, [7, 5, 4, 3], seed=1)
    nets = [balance.relu_init([7, 5, 4, 3], "unbalanced", seed=s, entry_std=0.6) for s in range(3)]
    slopes = [0.0, 0.2, 0.05]
    batched = [torch.stack([net[j] for net in nets]) for j in range(3)]
    loss, grads = balance.relu_loss_and_grads(x, y, batched, torch.tensor(slopes, dtype=torch.float64))
    for b, (net, slope) in enumerate(zip(nets, slopes)):
        ref, ws = _autograd_relu_loss(x, y, net, slope)
        assert float(loss[b]) == pytest.approx(ref.item(), rel=1e-12)
        for g, w in zip(grads, ws):
            torch.testing.assert_close(g[b], w.grad, rtol=1e-10, atol=1e-12)


def test_relu_drift_stays_inside_its_bounds_in_the_descent_regime():
    sizes = [20, 10, 10, 3]
    x, y = balance.relu_data(60, sizes, seed=0)
    inits = [balance.relu_init(sizes, init, seed=2, entry_std=0.2) for init in ("balanced", "unbalanced")]
    lr = 0.05
    hist, _, diverged = balance.train_relu_nets(x, y, inits, [0.0, 0.0], lr=lr, steps=400)
    assert diverged == [None, None]
    for net in (0, 1):
        h = hist[hist.net == net]
        first, last = h.iloc[0], h.iloc[-1]
        drift = max(abs(last[f"diff_{j}"] - first[f"diff_{j}"]) for j in (1, 2))
        unit = max(last[f"unit_drift_{j}"] for j in (1, 2))
        assert 0 < drift <= last.grad_sq_sum and unit <= last.grad_sq_sum
        assert last.min_descent >= 1.0  # a small step: every step is a sufficient descent ...
        assert last.grad_sq_sum <= 2 * lr * (first.loss - last.loss)  # ... so the bound from the losses holds


def test_factorization_drift_bounds():
    m = balance.factorization_target(8, 6, 2, seed=1)
    res = balance.train_factorization(m, width=2, init_scale=1e-2, lr0=0.3, steps=2000, seeds=[0, 1], delta=0.1)
    for _, row in res.summary.iterrows():
        assert 0 < row.gap_change <= row.grad_sq_sum * (1 + 1e-9)
        assert row.min_descent >= 1.0 and row.grad_sq_sum <= row.descent_bound * (1 + 1e-9)
    first = res.history.groupby("seed").head(1)
    assert (first.gap_change == 0).all() and (first.grad_sq_sum == 0).all()


def test_layer_checkpoints_measure_the_change_of_the_balance_matrix():
    prob = mc.completion_problem(n=10, rank=2, n_observed=60, seed=0)
    kw = dict(depth=3, lr=0.5, init_scale=0.1, dtype="float64")
    tab = balance.layer_checkpoints(prob, [0, 30], seeds=[0], **kw)
    assert (tab[tab.step == 0].gap_change == 0).all()
    start = mc.models.init_layers(prob.shape, 3, "gaussian", 0.1, 0)
    run = mc.fit(prob, max_steps=30, stop_loss=0.0, seed=0, **kw)
    want = float(torch.linalg.matrix_norm(mc.metrics.balance_matrix(*run.layers[:2])
                                          - mc.metrics.balance_matrix(*start[:2])))
    assert tab[(tab.step == 30) & (tab.pair == 1)].gap_change.iloc[0] == pytest.approx(want, rel=1e-10)
    assert math.isnan(balance.layer_checkpoints(prob, [5], seeds=[0], **kw).gap_change.iloc[0])


def test_relu_first_layer_paths_give_the_same_iterates():
    sizes = [30, 8, 6, 3]
    x, y = balance.relu_data(25, sizes, seed=4)  # n < 2 d: the gram path is the default
    inits = [balance.relu_init(sizes, init, seed=5, entry_std=0.3) for init in ("balanced", "unbalanced")]
    runs = {gram: balance.train_relu_nets(x, y, inits, [0.0, 0.1], lr=0.05, steps=150, gram=gram, cache=False)
            for gram in (True, False)}
    auto = balance.train_relu_nets(x, y, inits, [0.0, 0.1], lr=0.05, steps=150, cache=False)
    assert auto[0].equals(runs[True][0])
    (h_gram, f_gram, _), (h_direct, f_direct, _) = runs[True], runs[False]
    assert h_gram.loss.iloc[-1] < 0.9 * h_gram.loss.iloc[0]
    for col in ("loss", "sq_norm_1", "diff_1", "predicted_drift_1", "grad_sq_sum", "unit_drift_1"):
        np.testing.assert_allclose(h_gram[col], h_direct[col], rtol=1e-9, atol=1e-13)
    for a, b in zip(f_gram, f_direct):
        for wa, wb in zip(a, b):
            torch.testing.assert_close(wa, wb, rtol=1e-9, atol=1e-12)
    for net in (0, 1):  # the gram path's bookkeeping still accounts for every bit of drift
        h = h_gram[h_gram.net == net]
        assert h.diff_1.iloc[-1] - h.diff_1.iloc[0] == pytest.approx(h.predicted_drift_1.iloc[-1], rel=1e-8, abs=1e-13)


def test_drift_bound_rates_and_words():
    assert balance.drift_bound(0.01, 5.0, 1.0) == pytest.approx(0.08)
    assert balance.drift_bound(0.01, 1.0, 2.0) == 0.0  # a loss that rose sheds nothing
    with pytest.raises(ValueError, match="lr="):
        balance.drift_bound(0.0, 1.0, 0.0)
    fast, slow = balance.rank_one_rates(0.2)
    assert (fast, slow) == pytest.approx((0.36, 0.64))
    assert "every step met" in balance.descent_words(1.5, 0.5)
    assert "holds on the sum" in balance.descent_words(0.5, 0.9)
    assert "increased the loss" in balance.descent_words(-0.1, 0.9)
    assert "fails even on the sum" in balance.descent_words(0.5, 1.1)


def test_balance_change_of_a_gd_step_is_within_the_middle_term():
    u, v, m = _factors(2)
    u2, v2, r = balance.factorization_step(u, v, m, 0.01)
    change = balance.balance_change([v.T, u], [v2.T, u2])[0]
    g_sq = float((r @ v).square().sum() + (r.T @ u).square().sum())
    assert 0 < change <= 0.01**2 * g_sq
    with pytest.raises(ValueError, match="after="):
        balance.balance_change([v.T, u], [v2.T])
