"""mcreg_lib.objective: the loss and its gradient, the one divergence rule, the logged metrics and evaluate()."""

import math

import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import metrics, objective


def test_loss_and_gradient_match_autograd_for_completion_and_sensing():
    for problem in (mc.completion_problem(n=7, rank=2, n_observed=20, seed=0),
                    mc.sensing_problem(n=5, rank=1, n_measurements=12, seed=1)):
        obs = objective.Observations([problem], torch.float64, torch.device("cpu"))
        w = torch.randn(1, *problem.shape, dtype=torch.float64, requires_grad=True)
        if problem.kind == "completion":
            ref = (w[0, problem.rows, problem.cols] - problem.values).square().mean()
        else:
            ref = (torch.einsum("mij,ij->m", problem.measurements, w[0]) - problem.values).square().mean()
        (grad_ref,) = torch.autograd.grad(ref, w)
        loss, grad = obs.loss_and_gradient(w.detach())
        assert float(loss[0]) == pytest.approx(float(ref.detach()), rel=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_a_sensing_batch_holds_one_problem():
    """One operator per batch: runs on several sensing problems are several batches (mcreg_lib.train groups them)."""
    p, q = (mc.sensing_problem(n=4, rank=1, n_measurements=10, seed=s) for s in (0, 1))
    obs = objective.Observations([p, p], torch.float32, torch.device("cpu"))
    assert obs.a.shape == (10, 16) and obs.y.shape == (1, 10)
    with pytest.raises(ValueError, match="one problem object"):
        objective.Observations([p, q], torch.float32, torch.device("cpu"))


def test_shared_operator_takes_narrow_chunks_only_where_they_agree(monkeypatch):
    """The last chunk is as narrow as a multiple of RUN_ALIGN allows where narrow_chunks_agree says a column comes
    out the same in it (measured once per shape on this machine), else a full RUN_CHUNK; each run's rows are the
    same bit for bit whatever the batch's size or chunking."""
    torch.manual_seed(0)
    a, y = torch.randn(600, 144), torch.randn(600)  # three blocks of operator rows, the last one short
    flat = torch.randn(objective.RUN_CHUNK + 5, 144) * 0.1
    widths = []
    chunk_products = objective._chunk_products

    def seen(a_, y_, cols, rows):
        widths.append([c.shape[1] for c in cols])
        return chunk_products(a_, y_, cols, rows)

    monkeypatch.setattr(objective, "_chunk_products", seen)
    agree = objective.narrow_chunks_agree(a)
    assert isinstance(agree, bool)
    widths.clear()
    res, r = objective.shared_operator(flat, a, y)
    full = objective.RUN_CHUNK
    assert widths == [[full, objective.RUN_ALIGN if agree else full]]
    for b in (1, 3, objective.RUN_ALIGN + 1):
        res_b, r_b = objective.shared_operator(flat[:b], a, y)
        assert torch.equal(res_b, res[:b]) and torch.equal(r_b, r[:b])
    monkeypatch.setattr(objective, "narrow_chunks_agree", lambda a_, rows=0: False)
    widths.clear()
    res_full, r_full = objective.shared_operator(flat[:3], a, y)
    assert widths == [[full]] and torch.equal(res_full, res[:3]) and torch.equal(r_full, r[:3])


def test_divergence_rule():
    loss0 = torch.tensor([0.5, 10.0])
    limit = objective.divergence_limit(loss0, 100.0)
    assert limit.tolist() == [100.0, 1000.0]  # max(L(0), 1) times the factor
    loss = torch.tensor([100.0, math.nan])
    assert objective.is_diverged(loss, limit).tolist() == [False, True]
    assert objective.is_diverged(torch.tensor([100.1, math.inf]), limit).tolist() == [True, True]


def test_every_logged_metric_is_named_and_evaluate_uses_the_same_definitions():
    p = mc.completion_problem(n=8, rank=2, n_observed=30, seed=0)
    run = mc.fit(p, depth=2, lr=1.0, max_steps=50, dtype="float64", progress=False)
    logged = set(run.history.columns) - {"step"}
    named = {k for k in objective.METRICS if not k.endswith("_j") and not k.endswith("_i")}
    assert logged <= named | {f"sigma_{i}" for i in range(1, 11)} | {"balancedness_gap_1"}
    ev = objective.evaluate(p, run.matrix)
    last = run.history.iloc[-1]
    for key in ("train_loss", "error_all", "error_unobserved", "effective_rank", "nuclear_norm", "frobenius_norm"):
        assert ev[key] == pytest.approx(last[key], rel=1e-9), key
    assert ev["error_all"] == pytest.approx(float(metrics.reconstruction_error(run.matrix, p.target)), rel=1e-12)


def test_finite_or_zero_replaces_only_the_bad_runs():
    w = torch.ones(3, 2, 2)
    w[1, 0, 0] = math.nan
    out = objective.finite_or_zero(w)
    assert out[0].sum() == 4 and out[1].sum() == 0 and out[2].sum() == 4
