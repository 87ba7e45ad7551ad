import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import baselines


@pytest.fixture(scope="module")
def easy():
    return mc.completion_problem(n=15, rank=1, n_observed=120, seed=0)


def test_nuclear_norm_minimization_recovers_easy_problem(easy):
    res = baselines.nuclear_norm_minimization(easy)
    s = res.summary
    assert s["status"].startswith("optimal")
    assert s["error_all"] < 1e-4
    # feasibility: every observed entry within tol (SCS tolerance on top)
    assert (res.matrix[easy.rows, easy.cols] - easy.values).abs().max().item() < 1.1e-3
    # its nuclear norm cannot exceed the truth's (the truth is feasible)
    assert s["nuclear_norm"] <= mc.nuclear_norm(easy.target).item() + 1e-2


def test_soft_impute_recovers_easy_problem(easy):
    s = baselines.soft_impute(easy).summary
    assert s["error_all"] < 1e-3 and s["train_loss"] < 1e-4


def test_evaluate_uses_training_definitions(easy):
    found = baselines.evaluate(easy, easy.target)
    assert found["error_all"] == 0.0 and found["train_loss"] == 0.0
    assert found["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    zeros = baselines.evaluate(easy, torch.zeros(easy.shape, dtype=torch.float64))
    assert zeros["error_unobserved"] == pytest.approx(1.0)


def test_soft_impute_bad_input(easy):
    with pytest.raises(ValueError, match="lambda_min_ratio=2.0"):
        baselines.soft_impute(easy, lambda_min_ratio=2.0)
    sensing = mc.sensing_problem(n=4, rank=1, n_measurements=5, seed=0)
    with pytest.raises(ValueError, match="problem.kind='sensing'"):
        baselines.soft_impute(sensing)


def test_baselines_table_recovers_an_easy_problem():
    probs = [mc.completion_problem(n=20, rank=1, n_observed=200, seed=s) for s in (0, 1)]
    t = baselines.table(probs, methods=["soft_impute"])
    assert list(t["method"]) == ["soft_impute"] * 2
    assert list(t["problem_seed"]) == [0, 1]
    assert (t["error_unobserved"] < 0.1).all()  # zero-filling would give 1
    with pytest.raises(ValueError, match="methods='svt'"):
        baselines.table(probs, methods=["svt"])
    with pytest.raises(ValueError, match="pass options by keyword"):
        baselines.table(probs, {"soft_impute": {}})
