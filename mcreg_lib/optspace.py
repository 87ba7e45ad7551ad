"""OptSpace (Keshavan, Montanari & Oh 2010), in Python, standing in for the R package used by Zhao (2022).

Zhao (2022) compares against OptSpace through the R package ROptSpace. This module is **not** that package: it is
a torch (float64, CPU) implementation of the algorithm of Keshavan, Montanari & Oh, "Matrix completion from a few
entries" (IEEE Trans. Inf. Theory 56(6), 2010) and "Matrix completion from noisy entries" (JMLR 11, 2010), written
from the papers, with the details the papers leave open taken from the authors' MATLAB code (``OptSpace.m``, 2009)
and ROptSpace's R code, which follows it. Every place where it departs from those codes is listed below.

Notation: the unknown ``M`` is ``n x m`` (rows x columns), ``E`` the observed entries, ``P_E`` zeroes the others.

1. **Trimming** (``trim=True``, the paper's rule). A column is over-represented when it holds more than twice the
   average number of observed entries per column, ``2|E|/m``; a row likewise with ``2|E|/n``. Both counts are taken
   on the untrimmed set, and every entry of an over-represented row or column is set to zero in the matrix used for
   the next step (only there: the cleaning step fits all of ``E``). ``trim="subsample"`` is the reference code's
   rule instead: such a line keeps a random ``ceil(2 d) - 1`` of its entries (``d`` the average count; columns
   first, then rows, a row drawing among the entries the columns left; drawn with ``seed``). ``trim=False`` skips
   the step. Under uniform sampling it rarely fires (on the book's 100 x 100 problems with 2000 entries it drops
   nothing); it matters for skewed samples.
2. **Projection.** With ``Mt`` the trimmed ``P_E(M)`` and ``U_r S_r V_r^T`` its rank-r truncated SVD, the estimate is
   ``(n m / |E|) U_r S_r V_r^T`` (``(n m / |E|) P_E(M)`` has mean ``M`` under uniform sampling). Its error is
   reported as ``projection_error_all``; ``X0 = sqrt(n) U_r`` and ``Y0 = sqrt(m) V_r`` (so ``X^T X = n I``,
   ``Y^T Y = m I``) start the cleaning.
3. **Rank** (only when ``rank=None``), from singular values ``s_1 >= s_2 >= ...``; ``eps = |E| / sqrt(n m)``:

   * ``rank_rule="paper"`` (default): ``argmin_i R(i)``, ``R(i) = (s_{i+1} + s_1 sqrt(i / eps)) / s_i`` over
     ``i = 1 .. K - 1``, with ``s`` the singular values of the trimmed matrix ``Mt``. The formula is the second of
     the two rules in the authors' MATLAB ``guessRank``; the papers that present it are Keshavan & Oh, "A gradient
     descent algorithm on the Grassman manifold for matrix completion" (arXiv:0910.5260, 2009, rank estimation
     from the trimmed matrix) and Keshavan, Montanari & Oh, "Low-rank matrix completion with noisy observations: a
     quantitative comparison" (Allerton 2009, Sec. III-C, as cited by another port); we could not check their text
     here, only the code. The term ``s_1 sqrt(i/eps)`` stands for the sampling noise in the spectrum, so the rule
     is conservative: it needs ``eps`` well above ``r``. Measured over seeds 0-9 (the tests check all three on
     seed 0): 100 x 100, rank 5, 2000 entries (``eps`` = 20, the book's setting): it returns 1 every time; with
     8000 entries: 5 every time; 60 x 60, rank 3, 3000 entries: 3 every time. **In the book's regime give the
     rank.**
   * ``rank_rule="roptspace"``: ROptSpace's ``guess_rank`` (the whole MATLAB ``guessRank``): the larger of the rule
     above and a gap rule (gaps ``s_i - s_{i+1}`` divided by the mean of the last 11, ``r1`` = the last minimiser of
     ``lam max_{j>=i} gap_j + i`` minus one, ``lam = 0.05, 0.10, ...`` until ``r1 > 0``), on the singular values of
     the untrimmed ``P_E(M)``, clamped to ``[2, m - 1]`` as ROptSpace does. On the same problems it returns 2 to 6
     for rank 5 with 2000 entries, 5 every time with 5000, and overshoots (4 of 10 seeds give 4) at 60 x 60, rank
     3, 3000 entries.

   ``max_rank`` limits both rules to the top ``max_rank + 1`` singular values (default: all of them, which is what
   ROptSpace does; MATLAB takes 100).
4. **Cleaning.** Minimise ``F(X, Y) = min_S 1/2 ||P_E(M - X S Y^T)||_F^2 + rho G(X, Y)`` over pairs of column spaces
   (two Grassmann manifolds) by gradient descent with a backtracking line search, as in the reference code:

   * the values are first multiplied by ``sqrt(|E| r) / ||P_E(M)||_F`` (the reference code's normalisation: observed
     entries of RMS ``sqrt(r)``), so that the fixed trial steps below mean the same at any scale; the result is
     scaled back;
   * ``S`` solves the ``r^2 x r^2`` least-squares problem ``min_S ||P_E(M - X S Y^T)||`` (normal equations by Cholesky;
     ``torch.linalg.lstsq`` where they are singular), after every step;
   * the gradient ``(G_X, G_Y)`` of ``F_S(X, Y) = 1/2 ||P_E(M - X S Y^T)||^2 + rho G`` at fixed ``S`` is projected on
     the tangent space, ``W = G_X - X X^T G_X / n`` (``Z`` likewise);
   * trial steps ``alpha = 0.1, 0.05, ..., 0.1 * 2^-(line_search_steps-1)``; the first with
     ``F_S(X - alpha W, Y - alpha Z) <= F_S(X, Y) - alpha (||W||^2 + ||Z||^2) / 2`` is taken. At fixed ``S`` the
     residual at each entry is ``e - alpha b + alpha^2 c``, so ``F_S(alpha) - F_S(0)`` is a quartic whose four
     coefficients are sums over the entries: every trial step is evaluated at once, exactly, and the step taken is
     the one the reference's one-at-a-time loop would take;
   * ``G(X) = sum_i G1(||X_i||^2 / (3 mu0 r))`` over rows, ``G1(z) = exp((z - 1)^2) - 1`` for ``z > 1``, else 0 (the
     paper's regulariser; ``G(X, Y) = G(X) + G(Y)``). It is off by default (``rho=0``), as in both reference codes.
     ``mu0`` (the incoherence of ``M`` in the paper) defaults to that of the start, ``max_i ||X0_i||^2 / r`` (the
     larger of X0's and Y0's), so ``G`` starts at zero and only acts on rows that grow past three times the
     start's largest;
   * it stops when ``||P_E(M - X S Y^T)||_F / ||P_E(M)||_F <= tol`` (``stop_reason="tol"``), after ``max_iters``
     steps, or when no trial step passes the test (``"line_search"``).

Differences from the reference code (MATLAB ``OptSpace.m`` and ROptSpace, which agree on all of these):

* after each step ``X`` and ``Y`` are re-orthonormalised (QR, ``X <- sqrt(n) Q``); the reference takes
  ``X + t W`` with no retraction, so ``X^T X`` drifts from ``n I`` while its tangent projection still divides by
  ``n``. ``F(X, Y)`` depends only on the column spaces, so the fixed points are the same; the iterates are not;
* trimming and rank estimation default to the paper's rules; the reference's are ``trim="subsample"`` (except that
  ROptSpace zeroes a contiguous index range ``listed[p[k]]:n`` of the line rather than the sampled entries, which we
  do not copy) and ``rank_rule="roptspace"`` (which applies it to the untrimmed matrix);
* the reference's regulariser (never on: ``rho = 0``) divides by ``2 m0 r`` with ``m0 = 10^4`` instead of the
  paper's ``3 mu0 r`` and adds its gradient after the tangent projection; here the whole gradient is projected;
* when no trial step passes, the reference still steps by ``0.1 * 2^-20``; we stop there;
* the stopping rule. The reference stops when ``||P_E(M - X S Y^T)||_F / sqrt(|E|) < tol`` in its rescaled units,
  which is ``sqrt(r)`` times our relative residual, with defaults ``niter = 50``, ``tol = 1e-6``; to mimic it pass
  ``max_iters=50, tol=1e-6 / sqrt(r)``. Our defaults (``max_iters=1000``, ``tol=1e-10``) are larger because 50
  steps are far from converged on the book's problems (next paragraph).

Measured (not by the tests; CPU, float64, the machine shared with other work) on the book's setting, 100 x 100,
rank 5 (given), 2000 entries, seeds 0-9. Trimming drops nothing. With the defaults, 5 of 10 seeds reach
``tol`` (in 606 to 992 steps; ``error_all`` about 3e-19), seeds 3 and 6 end at ``error_all`` 7e-17 and 4e-13, seed
1 at 4e-7 and seed 8 at 3e-4 (still descending slowly), and seed 2 is stuck (``error_all`` 8 after 1000 steps,
growing after more; a dense transcription of the reference code's iteration does the same, so this is OptSpace's
behaviour here, not ours; with ``rho=100, mu0=1`` it reaches 8e-5 before the line search fails). After 50 steps
(the R defaults) ``error_all`` is between 2e-4 and 0.24. A step costs about 1 ms of CPU (one thread): a run of
650 to 1000 steps took 0.8 to 1.0 s of CPU, 1.9 to 2.5 s of wall time with the two cores loaded about 3.5 times
over. At 2000 entries the spectral start alone has ``error_all`` of about 1.

tests/test_optspace.py checks: exact recovery (60 x 60, rank 3, 1200 entries, ``error_all < 1e-16``), no recovery
below the ``r (2n - r)`` degrees of freedom, the trimming rule on a constructed sample, both rank rules on clean
problems and the paper rule's underestimate in the book's regime, the gradient against autograd (with the
regulariser active), the batched line search against direct evaluation, argument checks, and repeatability.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from . import _threads
from . import _validate as v
from .baselines import BaselineResult, evaluate
from .problems import Problem

RANK_RULES = ("paper", "roptspace")
FIRST_STEP = 0.1  # the reference code's first trial step, in its rescaled units (module docstring, step 4)


def trim_entries(shape: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor, how: bool | str = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Which observed entries ``(rows[k], cols[k])`` survive trimming: a bool tensor of the entries' length.

    how: True (the paper's rule: drop every entry of a row or column holding more than twice the average count),
    "subsample" (the reference code's: such a line keeps a random ``ceil(2 d) - 1`` of its entries, using
    ``generator``) or False (keep all). Details in the module docstring, step 1.
    """
    if not (how is True or how is False or how == "subsample"):
        v.fail("trim", how, "True (the paper's rule), 'subsample' (the reference code's rule) or False")
    n_entries = int(rows.numel())
    keep = torch.ones(n_entries, dtype=torch.bool)
    if how is False or n_entries == 0:
        return keep
    for index, size in ((cols, shape[1]), (rows, shape[0])):
        limit = 2.0 * n_entries / size
        over = torch.nonzero(torch.bincount(index, minlength=size) > limit).flatten()
        if how is True:
            keep &= ~torch.isin(index, over)
            continue
        n_keep = math.ceil(limit) - 1
        for line in over.tolist():
            entries = torch.nonzero((index == line) & keep).flatten()
            if entries.numel() > n_keep:
                dropped = torch.randperm(entries.numel(), generator=generator)[n_keep:]
                keep[entries[dropped]] = False
    return keep


def estimate_rank(sigma: torch.Tensor | np.ndarray, n_observed: int, shape: tuple[int, int],
                  rule: str = "paper") -> int:
    """OptSpace's rank estimate from singular values ``sigma`` (descending); rules in the module docstring, step 3.

    ``sigma`` should be those of the trimmed matrix for ``rule="paper"`` and of the untrimmed one for
    ``"roptspace"``; ``shape`` is (n_rows, n_cols) of the matrix, ``n_observed`` the number of observed entries.
    """
    rule = v.choice("rank_rule", rule, RANK_RULES)
    s = np.asarray(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else sigma, dtype=np.float64).ravel()
    if s.size < 2:
        return 1
    eps = n_observed / math.sqrt(shape[0] * shape[1])
    i = np.arange(1, s.size)  # 1-based candidate ranks
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (s[1:] + np.sqrt(i / eps) * s[0]) / s[:-1]
    cost = np.where(np.isfinite(cost), cost, np.inf)
    if rule == "paper":
        return int(i[np.argmin(cost)])
    r2 = int(i[np.flatnonzero(cost == cost.min())[-1]])  # ROptSpace breaks ties towards the larger rank
    gaps = s[:-1] - s[1:]
    gaps = gaps / max(float(gaps[-11:].mean()), np.finfo(np.float64).tiny)
    tail = np.maximum.accumulate(gaps[::-1])[::-1]  # tail[j] = max(gaps[j:])
    # ROptSpace tries lam = 0.05, 0.10, ... (at most 10^4 values) until the last minimiser j of
    # lam * tail[j] + j is not j = 0, i.e. until lam (tail[0] - tail[j]) >= j for some j >= 1. Start at the
    # first lam that can pass, then check with the cost itself (rounding).
    drop = tail[0] - tail[1:]
    with np.errstate(divide="ignore"):
        need = np.where(drop > 0, np.arange(1, gaps.size) / drop, np.inf).min(initial=np.inf)
    r1 = min(shape)  # what ROptSpace returns when lam runs out
    if need <= 0.05 * 10_000:
        for k in range(max(1, math.floor(need / 0.05) - 1), 10_001):
            c = 0.05 * k * tail + np.arange(gaps.size)
            j = int(np.flatnonzero(c == c.min())[-1])
            if j > 0:
                r1 = j
                break
    return int(min(max(r1, r2, 2), shape[1] - 1))


def optspace(problem: Problem, rank: int | None = None, *, max_rank: int | None = None, rank_rule: str = "paper",
             trim: bool | str = True, max_iters: int = 1000, tol: float = 1e-10, rho: float = 0.0,
             mu0: float | None = None, line_search_steps: int = 20, seed: int = 0) -> BaselineResult:
    """OptSpace: trim, project on rank ``rank``, then clean by gradient descent on the Grassmann manifolds.

    rank: the rank of the fit; None estimates it by ``rank_rule`` ("paper" or "roptspace") among the ranks up to
        ``max_rank`` (default: all).
    trim: True (paper's rule), "subsample" (the reference code's, random with ``seed``) or False.
    max_iters, tol: stop after ``max_iters`` steps or when the relative residual on the observed entries
        ``||P_E(M - W)||_F / ||P_E(M)||_F <= tol`` (``max_iters=0`` returns the first least-squares fit on the
        projection's column spaces).
    rho, mu0: weight and scale of the paper's row-norm regulariser (off at ``rho=0``; ``mu0=None`` takes it from
        the start). line_search_steps: trial steps ``0.1 * 2^-k`` of the backtracking line search.
    seed: for ``trim="subsample"`` only; everything else is deterministic.

    Everything is described in the module docstring; the summary holds the library's metrics (``evaluate``) plus
    rank, rank_estimated, iterations, stop_reason, relative_residual, trimmed_entries, overrepresented_rows/cols,
    projection_error_all (when the target is known) and seconds.
    """
    if problem.kind != "completion":
        v.fail("problem.kind", problem.kind, "'completion' (OptSpace fills in missing entries)")
    n, m = problem.shape
    if rank is not None:
        rank = v.integer("rank", rank, 1, min(n, m))
    if max_rank is not None:
        max_rank = v.integer("max_rank", max_rank, 1, max(min(n, m) - 1, 1))
    rank_rule = v.choice("rank_rule", rank_rule, RANK_RULES)
    if not (trim is True or trim is False or trim == "subsample"):
        v.fail("trim", trim, "True (the paper's rule), 'subsample' (the reference code's rule) or False")
    max_iters = v.integer("max_iters", max_iters, 0)
    tol = v.real("tol", tol, 0.0)
    rho = v.real("rho", rho, 0.0)
    if mu0 is not None:
        mu0 = v.positive("mu0", mu0)
    line_search_steps = v.integer("line_search_steps", line_search_steps, 1)
    seed = v.integer("seed", seed, 0)

    # small tensors in a long loop of small ops: one thread is fastest, and spares a loaded machine (_threads)
    with _threads.caller_on_one_thread():
        return _optspace(problem, rank, max_rank, rank_rule, trim, max_iters, tol, rho, mu0, line_search_steps, seed)


def _optspace(problem, rank, max_rank, rank_rule, trim, max_iters, tol, rho, mu0, line_search_steps, seed):
    n, m = problem.shape
    start = time.perf_counter()
    rows, cols = problem.rows, problem.cols
    vals = problem.values.to(torch.float64)
    n_obs = int(vals.numel())
    keep = trim_entries(problem.shape, rows, cols, trim, torch.Generator().manual_seed(seed))
    trimmed = torch.zeros(problem.shape, dtype=torch.float64)
    trimmed[rows[keep], cols[keep]] = vals[keep]
    u, sigma, vh = torch.linalg.svd(trimmed, full_matrices=False)
    if rank is None:
        k = min(n, m) if max_rank is None else max_rank + 1
        spectrum = sigma if rank_rule == "paper" else torch.linalg.svdvals(problem.observed_matrix())
        r = min(estimate_rank(spectrum[:k], n_obs, problem.shape, rank_rule), k - 1 if k > 1 else 1)
    else:
        r = rank
    summary: dict[str, Any] = {
        "method": "optspace", "rank": r, "rank_estimated": rank is None, "rank_rule": rank_rule, "trim": trim,
        "trimmed_entries": int((~keep).sum()),
        "overrepresented_rows": int((torch.bincount(rows, minlength=n) > 2.0 * n_obs / n).sum()),
        "overrepresented_cols": int((torch.bincount(cols, minlength=m) > 2.0 * n_obs / m).sum()),
    }
    if problem.target is not None:
        projection = (u[:, :r] * sigma[:r]) @ vh[:r] * (n * m / n_obs)
        summary["projection_error_all"] = evaluate(problem, projection)["error_all"]
    norm = float(torch.linalg.vector_norm(vals))
    if norm == 0.0:  # nothing but zeros observed: the zero matrix fits them exactly
        w, iters, stop, resid = torch.zeros(problem.shape, dtype=torch.float64), 0, "tol", 0.0
    else:
        scale = math.sqrt(n_obs * r) / norm
        x, s, y, iters, stop, resid = _clean(u[:, :r] * math.sqrt(n), vh[:r].T * math.sqrt(m), rows, cols,
                                             vals * scale, max_iters, tol, rho, mu0, line_search_steps)
        w = (x @ s @ y.T) / scale
    summary.update({"iterations": iters, "stop_reason": stop, "relative_residual": resid,
                    "seconds": time.perf_counter() - start})
    summary.update(evaluate(problem, w))
    return BaselineResult("optspace", w, summary, dict(problem.info))


def _design(xr: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """(|E|, r*r): row k is vec(x_{i_k} y_{j_k}^T), so ``design @ S.reshape(-1)`` is ``X S Y^T`` at the entries."""
    return (xr[:, :, None] * yc[:, None, :]).reshape(xr.shape[0], -1)


def _optimal_s(design: torch.Tensor, vals: torch.Tensor, r: int) -> torch.Tensor:
    """argmin_S ||P_E(M - X S Y^T)||_F by the normal equations, or least squares where they are singular."""
    chol, info = torch.linalg.cholesky_ex(design.T @ design)
    if int(info) == 0:
        sol = torch.cholesky_solve((design.T @ vals)[:, None], chol)
    else:
        sol = torch.linalg.lstsq(design, vals[:, None], driver="gelsd").solution
    return sol.reshape(r, r)


def _reg(x: torch.Tensor, c: float) -> torch.Tensor:
    """G(X) = sum over rows of G1(||X_i||^2 / c), for X of shape (..., rows, r)."""
    z = x.square().sum(-1) / c
    return torch.where(z > 1.0, torch.expm1((z - 1.0).square()), torch.zeros_like(z)).sum(-1)


def _reg_grad(x: torch.Tensor, c: float) -> torch.Tensor:
    z = x.square().sum(-1, keepdim=True) / c
    d = torch.where(z > 1.0, 2.0 * (z - 1.0) * torch.exp((z - 1.0).square()), torch.zeros_like(z))
    return d * (2.0 / c) * x


def _fixed_s_grad(x, y, s, rows, cols, e, rho, c, xsr=None, yc=None):
    """Euclidean gradient of F_S(X, Y) = 1/2 ||e||^2 + rho (G(X) + G(Y)) at fixed S; ``e = (X S Y^T - M)`` at E.

    xsr, yc: ``(X S)[rows]`` and ``Y[cols]`` when the caller has them already."""
    xsr = x[rows] @ s if xsr is None else xsr
    yc = y[cols] if yc is None else yc
    gx = torch.zeros_like(x).index_add_(0, rows, e[:, None] * (yc @ s.T))
    gy = torch.zeros_like(y).index_add_(0, cols, e[:, None] * xsr)
    if rho > 0:
        gx += rho * _reg_grad(x, c)
        gy += rho * _reg_grad(y, c)
    return gx, gy


def _line_changes(e, b, c2, alphas):
    """F_S(alpha) - F_S(0) of the data term for each trial step: the residual is ``e - alpha b + alpha^2 c2``."""
    p1 = -2.0 * torch.dot(e, b)
    p2 = torch.dot(b, b) + 2.0 * torch.dot(e, c2)
    p3 = -2.0 * torch.dot(b, c2)
    p4 = torch.dot(c2, c2)
    return 0.5 * alphas * (p1 + alphas * (p2 + alphas * (p3 + alphas * p4)))


def _clean(x, y, rows, cols, vals, max_iters, tol, rho, mu0, steps):
    """The cleaning step (module docstring, step 4) from X0, Y0 on rescaled values; returns X, S, Y and the stop."""
    n, r = x.shape
    m = y.shape[0]
    vnorm = float(torch.linalg.vector_norm(vals))
    if mu0 is None:
        mu0 = max(float(x.square().sum(1).max()), float(y.square().sum(1).max())) / r
    c = 3.0 * mu0 * r
    alphas = FIRST_STEP * 0.5 ** torch.arange(steps, dtype=torch.float64)

    def fit(x, y):
        xr, yc = x[rows], y[cols]
        design = _design(xr, yc)
        s = _optimal_s(design, vals, r)
        return xr, yc, s, design @ s.reshape(-1) - vals

    xr, yc, s, e = fit(x, y)
    resid = float(torch.linalg.vector_norm(e)) / vnorm
    it, stop = 0, "max_iters"
    while resid > tol and it < max_iters:
        xsr = xr @ s
        gx, gy = _fixed_s_grad(x, y, s, rows, cols, e, rho, c, xsr, yc)
        gx -= x @ (x.T @ gx) / n  # onto the tangent space at X (X^T X = n I)
        gy -= y @ (y.T @ gy) / m
        g2 = gx.square().sum() + gy.square().sum()
        wsr, gyc = gx[rows] @ s, gy[cols]
        b = (wsr * yc).sum(1) + (xsr * gyc).sum(1)
        change = _line_changes(e, b, (wsr * gyc).sum(1), alphas)
        if rho > 0:
            change = change + rho * (_reg(x - alphas[:, None, None] * gx, c) + _reg(y - alphas[:, None, None] * gy, c)
                                     - _reg(x, c) - _reg(y, c))
        ok = torch.nonzero(change <= -0.5 * alphas * g2).flatten()
        if ok.numel() == 0:
            stop = "line_search"
            break
        alpha = float(alphas[ok[0]])
        x = torch.linalg.qr(x - alpha * gx).Q * math.sqrt(n)
        y = torch.linalg.qr(y - alpha * gy).Q * math.sqrt(m)
        xr, yc, s, e = fit(x, y)
        resid = float(torch.linalg.vector_norm(e)) / vnorm
        it += 1
    if resid <= tol:
        stop = "tol"
    return x, s, y, it, stop, resid
