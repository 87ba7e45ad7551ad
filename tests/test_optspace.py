import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import optspace as osp
from mcreg_lib.optspace import estimate_rank, optspace, trim_entries
from mcreg_lib.problems import problem_from_observations


@pytest.fixture(scope="module")
def recoverable():
    # 60 x 60, rank 3: r (2n - r) = 351 degrees of freedom, 1200 entries (3.4 times as many)
    return mc.completion_problem(n=60, rank=3, n_observed=1200, seed=0)


@pytest.fixture(scope="module")
def recovered(recoverable):
    return optspace(recoverable, rank=3, tol=1e-12)


def test_exact_recovery(recoverable, recovered):
    s = recovered.summary
    assert s["method"] == "optspace" and recovered.method == "optspace"
    assert s["stop_reason"] == "tol" and s["relative_residual"] <= 1e-12
    # error_all is a squared relative error. The fit matches the observed entries to 1e-12 (relative), so the
    # recovered matrix is within (conditioning of the sampling on rank-3 matrices) x 1e-12 of the truth, i.e.
    # error_all ~ 1e-24 times that factor squared (measured: 8e-24). 1e-16 leaves a factor 1e4 for the
    # conditioning, and no fit that has not found the truth comes near it.
    assert s["error_all"] < 1e-16
    assert s["error_unobserved"] < 1e-16
    assert s["rank"] == 3 and not s["rank_estimated"]
    assert s["effective_rank"] == pytest.approx(mc.effective_rank(recoverable.target).item(), rel=1e-6)
    # the spectral start alone is far from the truth: the cleaning step does the work
    assert s["projection_error_all"] > 1e-2


def test_regularizer_on_keeps_exact_recovery(recoverable):
    s = optspace(recoverable, rank=3, tol=1e-12, rho=100.0).summary
    assert s["stop_reason"] == "tol" and s["error_all"] < 1e-16


def test_no_recovery_below_the_degrees_of_freedom():
    # 300 entries < r (2n - r) = 351: infinitely many rank-3 matrices fit them, so the truth cannot be singled out
    p = mc.completion_problem(n=60, rank=3, n_observed=300, seed=0)
    s = optspace(p, rank=3, max_iters=200).summary
    assert s["error_all"] > 0.1 and s["error_unobserved"] > 0.1


def _cyclic_sample(n=60, per_row=5):
    """Row 0 fully observed (60 entries); row i >= 1 observes columns i .. i+per_row-1 (mod n)."""
    rows = [0] * n + [i for i in range(1, n) for _ in range(per_row)]
    cols = list(range(n)) + [(i + k) % n for i in range(1, n) for k in range(per_row)]
    return torch.tensor(rows), torch.tensor(cols)


def test_trimming_zeroes_an_overrepresented_row_only():
    rows, cols = _cyclic_sample()
    # average per row = (60 + 59 * 5) / 60 = 5.92, limit 11.8: row 0 (60) is over it; columns hold at most 6
    assert torch.bincount(cols).max() <= 6
    keep = trim_entries((60, 60), rows, cols, True)
    assert torch.equal(keep, rows != 0)
    # the same rule for columns (the transposed sample)
    assert torch.equal(trim_entries((60, 60), cols, rows, True), rows != 0)
    assert bool(trim_entries((60, 60), rows, cols, False).all())
    # the reference code's rule: row 0 keeps ceil(2 * 5.92) - 1 = 11 random entries, the rest is untouched
    sub = trim_entries((60, 60), rows, cols, "subsample", torch.Generator().manual_seed(0))
    assert int(sub[rows == 0].sum()) == 11 and bool(sub[rows != 0].all())
    other = trim_entries((60, 60), rows, cols, "subsample", torch.Generator().manual_seed(1))
    assert not torch.equal(sub, other)


def test_trimming_inside_optspace():
    rows, cols = _cyclic_sample()
    target = torch.outer(torch.linspace(1, 2, 60, dtype=torch.float64), torch.linspace(-1, 1, 60, dtype=torch.float64))
    p = problem_from_observations(rows, cols, target[rows, cols], (60, 60), target)
    s = optspace(p, rank=1, max_iters=0).summary
    assert (s["trimmed_entries"], s["overrepresented_rows"], s["overrepresented_cols"]) == (60, 1, 0)
    s = optspace(p, rank=1, max_iters=0, trim=False).summary
    assert (s["trimmed_entries"], s["overrepresented_rows"]) == (0, 1)


def test_rank_estimate_on_clean_problems():
    # dense enough for the paper's rule (eps = |E| / n = 50): the true rank
    p = mc.completion_problem(n=60, rank=3, n_observed=3000, seed=0)
    s = optspace(p, max_iters=0).summary
    assert s["rank_estimated"] and s["rank"] == 3
    # ROptSpace's rule at 100 x 100, rank 5, 5000 entries: the true rank
    p = mc.completion_problem(n=100, rank=5, n_observed=5000, seed=0)
    assert estimate_rank(torch.linalg.svdvals(p.observed_matrix()), 5000, p.shape, "roptspace") == 5
    # ... and the paper's rule with 8000
    p = mc.completion_problem(n=100, rank=5, n_observed=8000, seed=0)
    assert estimate_rank(torch.linalg.svdvals(p.observed_matrix()), 8000, p.shape, "paper") == 5


def test_paper_rank_rule_underestimates_in_the_books_regime():
    # the module docstring's warning: at eps = 20 the rule's noise term swamps the spectrum
    p = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    assert optspace(p, max_iters=0).summary["rank"] == 1
    assert optspace(p, max_iters=0, max_rank=3, rank_rule="roptspace").summary["rank"] <= 3


def _roptspace_rule_by_loop(s, n_observed, shape):
    """ROptSpace's rank guess as its documentation-level description, lam tried one value at a time."""
    eps = n_observed / np.sqrt(shape[0] * shape[1])
    gaps = s[:-1] - s[1:]
    gaps = gaps / gaps[-11:].mean()
    lam = 0.05
    for _ in range(10_000):
        cost = np.array([lam * gaps[j:].max() + j + 1 for j in range(gaps.size)])
        r1 = np.flatnonzero(cost == cost.min())[-1]
        if r1 > 0:
            break
        lam += 0.05
    else:
        return min(max(min(shape), 2), shape[1] - 1)
    cost = np.array([(s[i] + np.sqrt(i / eps) * s[0]) / s[i - 1] for i in range(1, s.size)])
    r2 = np.flatnonzero(cost == cost.min())[-1] + 1
    return int(min(max(r1, r2, 2), shape[1] - 1))


def test_roptspace_rule_closed_form_matches_the_loop():
    rng = np.random.default_rng(0)
    for _ in range(60):
        s = np.sort(rng.exponential(size=rng.integers(3, 40)))[::-1]
        assert estimate_rank(s, 50, (40, 40), "roptspace") == _roptspace_rule_by_loop(s, 50, (40, 40))


def test_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    n, m, r, k = 12, 9, 2, 60
    flat = torch.randperm(n * m, generator=g)[:k]
    rows, cols = flat // m, flat % m
    vals = torch.randn(k, generator=g, dtype=torch.float64)
    x = torch.randn(n, r, generator=g, dtype=torch.float64)
    y = torch.randn(m, r, generator=g, dtype=torch.float64)
    s = torch.randn(r, r, generator=g, dtype=torch.float64)
    c, rho = 1.5, 0.7  # rows with ||x_i||^2 > 1.5 are penalised: some are, some are not
    assert 0 < int((x.square().sum(1) > c).sum()) < n
    e = ((x @ s)[rows] * y[cols]).sum(1) - vals
    gx, gy = osp._fixed_s_grad(x, y, s, rows, cols, e, rho, c)
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    f = 0.5 * (((xa @ s)[rows] * ya[cols]).sum(1) - vals).square().sum() + rho * (osp._reg(xa, c) + osp._reg(ya, c))
    f.backward()
    torch.testing.assert_close(gx, xa.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gy, ya.grad, rtol=1e-12, atol=1e-12)


def test_batched_line_search_matches_direct_evaluation():
    g = torch.Generator().manual_seed(1)
    n, m, r, k = 15, 11, 3, 90
    flat = torch.randperm(n * m, generator=g)[:k]
    rows, cols = flat // m, flat % m
    vals = torch.randn(k, generator=g, dtype=torch.float64)
    x, w = (torch.randn(n, r, generator=g, dtype=torch.float64) for _ in range(2))
    y, z = (torch.randn(m, r, generator=g, dtype=torch.float64) for _ in range(2))
    s = torch.randn(r, r, generator=g, dtype=torch.float64)

    def f(a):
        return 0.5 * ((((x - a * w) @ s)[rows] * (y - a * z)[cols]).sum(1) - vals).square().sum()

    alphas = osp.FIRST_STEP * 0.5 ** torch.arange(20, dtype=torch.float64)
    e = ((x @ s)[rows] * y[cols]).sum(1) - vals
    b = ((w @ s)[rows] * y[cols]).sum(1) + ((x @ s)[rows] * z[cols]).sum(1)
    c2 = ((w @ s)[rows] * z[cols]).sum(1)
    direct = torch.stack([f(a) - f(0.0) for a in alphas.tolist()])
    torch.testing.assert_close(osp._line_changes(e, b, c2, alphas), direct, rtol=1e-10, atol=1e-12)


def test_scale_invariance(recoverable):
    # the values are rescaled before the fixed trial steps, so 1000 M gives 1000 times the same fit
    p = recoverable
    big = problem_from_observations(p.rows, p.cols, p.values * 1000, p.shape, p.target * 1000)
    a, b = optspace(p, rank=3, max_iters=30), optspace(big, rank=3, max_iters=30)
    assert a.summary["iterations"] == b.summary["iterations"] == 30
    torch.testing.assert_close(b.matrix, a.matrix * 1000, rtol=1e-8, atol=1e-8)


def test_same_seed_same_numbers():
    rows, cols = _cyclic_sample()
    g = torch.Generator().manual_seed(3)
    target = torch.randn(60, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 60, generator=g, dtype=torch.float64)
    p = problem_from_observations(rows, cols, target[rows, cols], (60, 60), target)
    a = optspace(p, rank=2, trim="subsample", seed=5, max_iters=20)
    b = optspace(p, rank=2, trim="subsample", seed=5, max_iters=20)
    assert torch.equal(a.matrix, b.matrix)
    a.summary.pop("seconds"), b.summary.pop("seconds")
    assert a.summary == b.summary


def test_degenerate_inputs():
    # more unknowns in S (r^2 = 25) than entries: least squares instead of the singular normal equations
    p = mc.completion_problem(n=10, rank=5, n_observed=20, seed=0)
    res = optspace(p, rank=5, max_iters=5)
    assert torch.isfinite(res.matrix).all()
    # only zeros observed: the zero matrix
    z = problem_from_observations([0, 1], [1, 0], [0.0, 0.0], (3, 3))
    res = optspace(z, rank=1)
    assert torch.equal(res.matrix, torch.zeros(3, 3, dtype=torch.float64))
    assert res.summary["stop_reason"] == "tol"


@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, "rank=0"),
    ({"rank": 61}, "rank=61"),
    ({"rank": 2.5}, "rank=2.5"),
    ({"max_rank": 60}, "max_rank=60"),
    ({"rank_rule": "gap"}, "rank_rule='gap'"),
    ({"trim": "yes"}, "trim='yes'"),
    ({"trim": 1}, "trim=1"),
    ({"max_iters": -1}, "max_iters=-1"),
    ({"tol": -1e-3}, "tol=-0.001"),
    ({"rho": float("nan")}, "rho=nan"),
    ({"mu0": 0.0}, "mu0=0.0"),
    ({"line_search_steps": 0}, "line_search_steps=0"),
    ({"seed": -1}, "seed=-1"),
])
def test_bad_arguments(recoverable, kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("+", r"\+")):
        optspace(recoverable, **kwargs)


def test_refuses_non_completion_problems():
    sensing = mc.sensing_problem(n=4, rank=1, n_measurements=5, seed=0)
    with pytest.raises(ValueError, match="problem.kind='sensing'.*completion"):
        optspace(sensing, rank=1)
    with pytest.raises(ValueError, match="rank_rule='x'"):
        estimate_rank(torch.ones(3), 5, (3, 3), "x")
    assert estimate_rank(torch.tensor([3.0, 2.0, 1.0]), 5, (3, 3)) == 1
