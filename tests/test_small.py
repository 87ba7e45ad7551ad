"""mcreg_lib.small: the compiled small-matrix trainer against mc.fit (iterates, stop rules, divergence, det flips)."""

import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib.small import train_small
from mcreg_lib.chapters import norms

P4_LR = norms.mse_lr(3e-3, 3)


def _spec(problem, **axes):
    base = dict(lr=P4_LR, max_steps=2000, stop_loss=0.0, dtype="float64")
    base.update(axes)
    return mc.grid(problem, **base)


@pytest.mark.parametrize("depth,init,det_sign", [(1, "gaussian", None), (2, "balanced", 1), (3, "gaussian", -1),
                                                  (4, "balanced", 1)])
def test_train_small_matches_fit(depth, init, det_sign):
    p = norms.p4_problem()
    kw = dict(depth=depth, init=init, init_scale=0.05, det_sign=det_sign, seed=3)
    run = mc.fit(p, optimizer="gd", lr=P4_LR * 20, max_steps=2000, stop_loss=0.0, dtype="float64", **kw)
    small = train_small(_spec(p, lr=P4_LR * 20, **kw))
    assert torch.allclose(small.matrices[0], run.matrix, rtol=0, atol=1e-12)
    for a, b in zip(small.layers[0], run.layers):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    h = small.histories
    assert h["step"].tolist() == run.history["step"].tolist()
    np.testing.assert_allclose(h["train_loss"], run.history["train_loss"], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(h["nuclear_norm"], run.history["nuclear_norm"], rtol=1e-10)
    np.testing.assert_allclose(h["effective_rank"], run.history["effective_rank"], rtol=1e-10)
    
    w = torch.tensor(h[["w11", "w12", "w21", "w22"]].to_numpy()).view(-1, 2, 2)
    np.testing.assert_allclose(h["det"], torch.linalg.det(w).numpy(), rtol=1e-9, atol=1e-15)


def test_train_small_3x3_and_stop_rules_match_fit():
    p = mc.completion_problem(n=3, rank=1, n_observed=6, seed=1)
    kw = dict(depth=3, init="gaussian", init_scale=0.1, seed=0, lr=0.5)
    run = mc.fit(p, optimizer="gd", max_steps=20_000, stop_loss=1e-8, dtype="float64", **kw)
    small = train_small(_spec(p, max_steps=20_000, stop_loss=1e-8, **kw))
    row = small.table.iloc[0]
    assert row["stop_reason"] == run.summary["stop_reason"] == "stop_loss"
    assert row["steps"] == run.summary["steps"]
    assert torch.allclose(small.matrices[0], run.matrix, atol=1e-10)
    w = torch.tensor(small.histories.iloc[-1][[f"w{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)]].to_numpy(float))
    assert small.histories["det"].iloc[-1] == pytest.approx(float(torch.linalg.det(w.view(3, 3))), abs=1e-12)
    # divergence is detected at the same step as mc.fit
    run = mc.fit(p, optimizer="gd", depth=2, lr=50.0, init_scale=1.0, max_steps=500, dtype="float64")
    small = train_small(_spec(p, depth=2, lr=50.0, init_scale=1.0, max_steps=500))
    assert run.summary["diverged"] and small.table.loc[0, "diverged"]
    assert small.table.loc[0, "diverged_at"] == run.summary["diverged_at"]


def _reference_flips(p, depth, steps, **kw):
    """A plain torch loop: GD on P4's 2x2 problem, det W checked every step."""
    layers = mc.models.init_layers(p.shape, depth, kw["init"], kw["init_scale"], kw["seed"], None, kw["det_sign"])
    mask, obs = p.mask(), p.observed_matrix()
    signs = []
    for _ in range(steps + 1):
        for x in layers:
            x.requires_grad_(True)
        w = mc.end_to_end(layers)
        loss = ((w - obs) * mask).square().sum() / 3
        grads = torch.autograd.grad(loss, layers)
        signs.append(float(torch.sign(torch.linalg.det(w.detach()))))
        layers = [(x - P4_LR * g).detach() for x, g in zip(layers, grads)]
    changes = [t for t in range(1, len(signs)) if signs[t] != signs[t - 1]]
    return (changes[0] if changes else -1), len(changes)


def test_det_flip_detection_matches_a_reference_loop():
    p = norms.p4_problem()
    kw = dict(init="balanced", init_scale=8e-3 * 2**0.5, seed=0, det_sign=1)
    small = train_small(_spec(p, depth=2, max_steps=6000, **kw))
    first, count = _reference_flips(p, 2, 6000, **kw)
    assert first > 0, "the reference loop flips det at depth 2 (Razin & Cohen 2020, the 2x2 example)"
    assert small.table.loc[0, "first_flip"] == first and small.table.loc[0, "n_flips"] == count
    h = small.histories
    assert first in h["step"].tolist(), "the step of the first flip is logged"


def test_batch_of_mixed_depths_is_deterministic_and_serial_equals_parallel():
    p = norms.p4_problem()
    spec = _spec(p, depth=[2, 3, 4], init="gaussian", init_scale=1e-3, seed=[0, 1], det_sign=1, max_steps=3000)
    a = train_small(spec)
    b = train_small(spec, parallel=False)
    assert torch.equal(a.matrices, b.matrices)
    assert a.table["depth"].tolist() == [2, 2, 3, 3, 4, 4]
    assert set(a.histories["run"]) == set(range(6))


def test_train_small_rejects_what_it_does_not_do():
    p = norms.p4_problem()
    with pytest.raises(ValueError, match="dtype='float32' is not allowed"):
        train_small(mc.grid(p, depth=2, dtype="float32"))
    with pytest.raises(ValueError, match="optimizer='adam'"):
        train_small(mc.grid(p, depth=2, optimizer="adam", dtype="float64"))
    with pytest.raises(ValueError, match="square completion problem of size at most 8"):
        train_small(mc.grid(mc.completion_problem(n=10, rank=1, n_observed=20), dtype="float64"))
    with pytest.raises(ValueError, match="depth=0"):
        train_small(mc.grid(p, depth=0, dtype="float64"))
    with pytest.raises(ValueError, match="spec is empty"):
        train_small([])


def test_loss_based_logging_adds_rows_where_the_loss_falls():
    p = norms.p4_problem()
    spec = _spec(p, depth=3, init="balanced", init_scale=1e-2, det_sign=1, max_steps=5000)
    plain = train_small(spec).histories
    dense = train_small(spec, loss_logs_per_decade=20).histories
    assert set(plain["step"]) <= set(dense["step"]) and len(dense) > len(plain)
    np.testing.assert_allclose(dense.set_index("step").loc[plain["step"], "train_loss"], plain["train_loss"])
    # a row is logged as soon as the loss is 10^(-1/20) times the last logged one; one step of this smooth run
    # lowers the loss by far less than that, so no two consecutive rows differ by more than 10^(-2/20)
    loss = dense["train_loss"].to_numpy()
    assert loss[-1] < 0.1 * loss[0]
    assert np.all(loss[1:] >= loss[:-1] * 10 ** (-2 / 20))
    assert not np.all(plain["train_loss"].to_numpy()[1:] >= plain["train_loss"].to_numpy()[:-1] * 10 ** (-2 / 20))
    with pytest.raises(ValueError, match="loss_logs_per_decade=-1"):
        train_small(spec, loss_logs_per_decade=-1)


def test_metrics_norms_spell_each_norm_once():
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = mc.metrics.norms(w)
    assert float(out["frobenius_norm"]) == pytest.approx(5.0)
    assert float(out["nuclear_norm"]) == pytest.approx(7.0)
    assert float(out["spectral_norm"]) == pytest.approx(4.0)
    assert float(out["schatten_half_norm"]) == pytest.approx((3**0.5 + 2.0) ** 2)
