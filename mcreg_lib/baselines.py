"""Classic completion methods, reported with the same metrics as trained runs.

* ``nuclear_norm_minimization``: P1's and P3's program, minimize ``||Z||_*`` subject to ``|Z_ij - W*_ij| <= tol``
  (tol = 1e-3) on the observed entries (or ``|<A_i, Z> - y_i| <= tol`` for sensing), solved by our
  Douglas-Rachford solver (``mcreg_lib.nnm``) or, as in the papers' code, by cvxpy with SCS.
* ``soft_impute``: Mazumder, Hastie & Tibshirani (2010): ``Z <- SVT_lambda(P_obs(X) + P_unobs(Z))`` along a
  decreasing path of lambda with warm starts.
* ``optspace``: Keshavan, Montanari & Oh (2010), trimming, spectral start and gradient descent on the Grassmannian
  (``mcreg_lib.optspace``, a Python implementation substituting for the R package of Zhao 2022).
* ``table``: several methods on several problems, one row per (problem, method), with the metrics of trained runs
  (``mcreg_lib.objective.evaluate``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _validate as v
from .objective import evaluate  # one definition of every metric
from .problems import Problem
from .cache import memoize


METHODS = ("nuclear_norm_minimization", "soft_impute", "optspace")


@dataclass
class BaselineResult:
    method: str
    matrix: torch.Tensor
    summary: dict[str, Any] = field(default_factory=dict)
    problem_info: dict[str, Any] = field(default_factory=dict)


SOLVERS_NNM = ("douglas_rachford", "cvxpy")


@memoize
def nuclear_norm_minimization(problem: Problem, tol: float = 1e-3, *, solver: str = "douglas_rachford",
                              max_iters: int | None = None, eps: float = 1e-6, verbose: bool = False
                              ) -> BaselineResult:
    """Minimum-nuclear-norm matrix consistent with the observations to within ``tol``: the papers' program,
    ``min ||Z||_*`` s.t. ``|Z_ij - W*_ij| <= tol`` on the observed entries (``|<A_i, Z> - y_i| <= tol`` for sensing).

    solver: ``"douglas_rachford"`` (default; ``mcreg_lib.nnm``: stops when every constraint holds to 1e-6 and the
    certified relative duality gap is below 1e-5; tens of times faster than SCS at n = 100, tests hold it to
    cvxpy's objective) or ``"cvxpy"`` (cvxpy with SCS at accuracy ``eps``, as in the papers' code).
    """
    solver = v.choice("solver", solver, SOLVERS_NNM)
    tol = v.real("tol", tol, 0.0)
    if solver == "douglas_rachford":
        from . import nnm

        w, info = nnm.solve(problem, tol, **({} if max_iters is None else {"max_iters": max_iters}),
                            verbose=verbose)
        status, seconds = info["status"], info["seconds"]
        extra = {"iterations": info["iterations"], "violation": info["violation"], "gap": info["gap"]}
    else:
        w, status, seconds = _cvxpy_nnm(problem, tol, max_iters or 100_000, eps, verbose)
        extra = {}
    summary = {"method": "nuclear_norm_minimization", "solver": solver, "status": status, "seconds": seconds,
               "tol": tol, **extra, **evaluate(problem, w)}
    return BaselineResult("nuclear_norm_minimization", w, summary, dict(problem.info))


def _cvxpy_nnm(problem: Problem, tol: float, max_iters: int, eps: float, verbose: bool
               ) -> tuple[torch.Tensor, str, float]:
    import cvxpy as cp

    n_rows, n_cols = problem.shape
    z = cp.Variable((n_rows, n_cols))
    if problem.kind == "completion":
        r, c = problem.rows.numpy(), problem.cols.numpy()
        lhs = cp.vec(z, order="C")[r * n_cols + c]
    else:
        a = problem.measurements.numpy().reshape(problem.n_observed, -1)
        lhs = a @ cp.vec(z, order="C")
    prob = cp.Problem(cp.Minimize(cp.normNuc(z)), [cp.abs(lhs - problem.values.numpy()) <= tol])
    start = time.perf_counter()
    prob.solve(solver=cp.SCS, max_iters=max_iters, eps=eps, verbose=verbose)
    seconds = time.perf_counter() - start
    if z.value is None:
        raise RuntimeError(f"SCS found no solution (status {prob.status!r})")
    return torch.as_tensor(np.asarray(z.value), dtype=torch.float64), prob.status, seconds


@memoize
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


@memoize
def optspace(problem: Problem, rank: int | None = None, **options: Any) -> BaselineResult:
    """OptSpace (Keshavan, Montanari & Oh 2010), in our Python implementation standing in for the R package Zhao
    (2022) used: ``mcreg_lib.optspace.optspace`` (its options, its tests and how it differs from the reference)."""
    from .optspace import optspace as solve

    return solve(problem, rank, **options)


SOLVERS = {"nuclear_norm_minimization": nuclear_norm_minimization, "soft_impute": soft_impute, "optspace": optspace}


def table(problems: Sequence[Problem], methods: Sequence[str] = METHODS,
          options: dict[str, dict[str, Any]] | None = None, *, keep_matrices: bool = False) -> pd.DataFrame:
    """Run each classic method of ``methods`` on each problem; one row per (problem, method) with the problem's
    parameters (``problem_*``), the method, and the same metrics as trained runs (error_unobserved, ...).
    ``keep_matrices`` adds a column ``matrix`` with each completed (n_rows, n_cols) float64 tensor."""
    if isinstance(methods, (str, dict)):
        v.fail("methods", methods, f"a list of method names from {METHODS} (pass options by keyword)")
    methods = [v.choice("methods", m, METHODS) for m in methods]
    if not methods:
        v.fail("methods", methods, f"a non-empty list of {METHODS}")
    options = options or {}
    rows = []
    for problem in problems:
        if not isinstance(problem, Problem):
            v.fail("problems", problem, "a list of mcreg_lib Problems")
        for method in methods:
            result = SOLVERS[method](problem, **options.get(method, {}))
            row = {f"problem_{k}": val for k, val in problem.info.items()}
            row.update(result.summary)
            row["method"] = method
            if keep_matrices:
                row["matrix"] = result.matrix
            rows.append(row)
    return pd.DataFrame(rows)
