"""Classic completion methods, reported with the same metrics as trained runs.

* ``nuclear_norm_minimization``: as in P1's and P3's code, cvxpy with SCS, minimize ``||Z||_*`` subject to
  ``|Z_ij - W*_ij| <= tol`` (tol = 1e-3) on the observed entries (or ``|<A_i, Z> - y_i| <= tol`` for sensing).
* ``soft_impute``: Mazumder, Hastie & Tibshirani (2010): ``Z <- SVT_lambda(P_obs(X) + P_unobs(Z))`` along a
  decreasing path of lambda with warm starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _validate as v
from .problems import Problem


@dataclass
class BaselineResult:
    method: str
    matrix: torch.Tensor
    summary: dict[str, Any] = field(default_factory=dict)
    problem_info: dict[str, Any] = field(default_factory=dict)


def evaluate(problem: Problem, matrix: torch.Tensor) -> dict[str, float]:
    """The metrics of a trained run (train_loss, error_all, error_unobserved, test_mse, effective_rank,
    nuclear_norm, ...) for any matrix, by the same definitions the training loop uses."""
    from .training import _Data  # one definition of every metric

    w = torch.as_tensor(matrix, dtype=torch.float64).reshape(1, *problem.shape).contiguous()
    data = _Data([problem], torch.float64, torch.device("cpu"))
    loss, _ = data.residual(w.clone())
    found = data.metrics(w, [w])
    found["train_loss"] = loss
    return {k: float(x[0]) for k, x in found.items()}


def nuclear_norm_minimization(problem: Problem, tol: float = 1e-3, *, max_iters: int = 100_000,
                              eps: float = 1e-6, verbose: bool = False) -> BaselineResult:
    """Minimum-nuclear-norm matrix consistent with the observations to within ``tol`` (cvxpy, SCS)."""
    import cvxpy as cp

    tol = v.real("tol", tol, 0.0)
    n_rows, n_cols = problem.shape
    z = cp.Variable((n_rows, n_cols))
    if problem.kind == "completion":
        r, c = problem.rows.numpy(), problem.cols.numpy()
        flat_index = r * n_cols + c
        lhs = cp.vec(z, order="C")[flat_index]
    else:
        a = problem.measurements.numpy().reshape(problem.n_observed, -1)
        lhs = a @ cp.vec(z, order="C")
    cons = [cp.abs(lhs - problem.values.numpy()) <= tol]
    prob = cp.Problem(cp.Minimize(cp.normNuc(z)), cons)
    start = time.perf_counter()
    prob.solve(solver=cp.SCS, max_iters=max_iters, eps=eps, verbose=verbose)
    seconds = time.perf_counter() - start
    if z.value is None:
        raise RuntimeError(f"SCS found no solution (status {prob.status!r})")
    w = torch.as_tensor(np.asarray(z.value), dtype=torch.float64)
    summary = {"method": "nuclear_norm_minimization", "status": prob.status, "seconds": seconds, "tol": tol,
               **evaluate(problem, w)}
    return BaselineResult("nuclear_norm_minimization", w, summary, dict(problem.info))


def soft_impute(problem: Problem, *, n_lambdas: int = 30, lambda_min_ratio: float = 1e-4,
                max_iters: int = 1000, tol: float = 1e-6) -> BaselineResult:
    """SoftImpute along ``n_lambdas`` geometric values of lambda from ``sigma_1(P_obs X)`` down to
    ``lambda_min_ratio`` times that; returns the last solution (the one closest to interpolating the data)."""
    if problem.kind != "completion":
        v.fail("problem.kind", problem.kind, "'completion' (SoftImpute fills in missing entries)")
    n_lambdas = v.integer("n_lambdas", n_lambdas, 1)
    lambda_min_ratio = v.real("lambda_min_ratio", lambda_min_ratio, 0.0, 1.0, strict_minimum=True)
    max_iters = v.integer("max_iters", max_iters, 1)
    tol = v.positive("tol", tol)
    mask = problem.mask().bool()
    x = problem.observed_matrix()
    lam_max = float(torch.linalg.matrix_norm(x, ord=2))
    lambdas = lam_max * np.geomspace(1.0, lambda_min_ratio, n_lambdas)
    z = torch.zeros_like(x)
    start, iters = time.perf_counter(), 0
    for lam in lambdas:
        for _ in range(max_iters):
            filled = torch.where(mask, x, z)
            u, s, vh = torch.linalg.svd(filled, full_matrices=False)
            new = (u * (s - lam).clamp_min(0.0)) @ vh
            change = float(torch.linalg.matrix_norm(new - z) ** 2 / torch.linalg.matrix_norm(z).clamp_min(1e-30) ** 2)
            z, iters = new, iters + 1
            if change < tol:
                break
    summary = {"method": "soft_impute", "iterations": iters, "lambda_final": float(lambdas[-1]),
               "seconds": time.perf_counter() - start, **evaluate(problem, z)}
    return BaselineResult("soft_impute", z, summary, dict(problem.info))
