"""Nuclear-norm minimization, the papers' baseline program, solved without cvxpy.

The program (P1's and P3's code solve it with cvxpy + SCS; ``mcreg_lib.baselines.nuclear_norm_minimization``)::

    minimize ||Z||_*   subject to   |A(Z)_i - y_i| <= tol,  i = 1..m,

with ``A(Z)_i = Z[rows_i, cols_i]`` for completion and ``A(Z)_i = <A_i, Z>`` for sensing, tol = 1e-3. Its dual::

    maximize  D(mu) = <mu, y> - tol ||mu||_1   subject to   ||A*(mu)||_2 <= 1

(``A*`` the adjoint, ``||.||_2`` the spectral norm). Weak duality ``D(mu) <= ||Z||_*`` holds for every feasible Z
and every dual-feasible mu; any mu becomes dual feasible when divided by ``max(1, ||A*(mu)||_2)``.

Method: Douglas-Rachford splitting (= ADMM), accelerated by restarted Halpern iteration
-----------------------------------------------------------------------------------------

Write the program as ``min f + g`` with two functions whose proximal maps are cheap:

* completion: ``f(Z) = ||Z||_*`` (prox: singular value thresholding, SVT, at ``1/rho``) and ``g`` the indicator of
  the box ``|Z_ij - y_ij| <= tol`` on the observed entries (prox: clip those entries, leave the rest). The state
  ``t`` is one n1 x n2 matrix.
* sensing: variables ``(Z, w)`` with ``w`` in R^m; ``f(Z, w) = ||Z||_* + [|w - y| <= tol]`` (prox: SVT and a clip)
  and ``g`` the indicator of the graph ``w = A(Z)`` (prox: the projection ``Z <- Z - A*((I + A A*)^{-1}
  (A(Z) - w))``, one Cholesky factor of the m x m matrix ``I + A A*`` computed once).

The Douglas-Rachford operator ``T(t) = t + prox_f(2 X - t) - X`` with ``X = prox_g(t)`` is firmly nonexpansive and
its fixed points give the solution ``X = prox_f(2X - t)``; the scaled dual is ``U = t - X`` and ``-rho U`` is a
subgradient of ``||.||_*`` at the solution, so ``mu = -rho U`` (completion: on the observed entries; sensing:
``rho U_w``) is the dual variable. Plain DR (as ADMM, or SCS itself) takes thousands of iterations on these
problems; we run the reflected, restarted Halpern iteration of Lu & Yang (r2HPDHG, 2024)::

    t_{k+1} = (k+1)/(k+2) * ((1 + gamma) T(t_k) - gamma t_k) + 1/(k+2) * t_anchor,

restarting (anchor <- T(t_k), k <- 0) when the fixed-point residual ``r = ||T(t) - t||`` has fallen below
``0.3 r_anchor``, or below ``0.8 r_anchor`` and stopped falling, or after 36% of all iterations so far (checked every
``check_every`` iterations); gamma = 1. At each restart the penalty ``rho`` is set to the ratio of the dual and
primal movement since the last restart, ``|d mu| / |d X|`` (PDLP's primal weight, unsmoothed: smoothing it in log
space with weight 0.5 or 0.2 took 1.26x and 2.1x the iterations on ten problems at n = 100), which rescales ``U`` and keeps
``X``; it starts at ``1 / rms(y)``. Restarts with the weight update are what make it fast: at n = 100, rank 5,
m = 5000 (1000), plain ADMM with residual balancing took 8,990 (5,620) iterations to reach violation and gap 1e-6,
this 2,650 (420), and 950 (420) at the default rel_gap = 1e-5.

One iteration costs one SVT: ``eigh`` of the Gram matrix ``V^T V`` (the smaller side) in float64 and two products,
half the time of ``torch.linalg.svd`` at 100 x 100. Its singular values carry an absolute error about
``eps64 * sigma_1^2 / sigma``, below 1e-10 for the kept ones (sigma > 1/rho) at the book's sizes. The solver runs
its torch ops on one thread (a 100 x 100 decomposition cannot use two cores); solve two problems at once to use two.

Stopping rule (checked every ``check_every`` iterations)
---------------------------------------------------------

The returned Z is the SVT output (exactly low rank). We stop when both hold:

* primal feasibility: ``violation = max_i max(|A(Z)_i - y_i| - tol, 0) <= feas_slack`` (default 1e-6, 0.1% of
  tol = 1e-3);
* certified relative gap: ``gap = (||Z||_* - dual_bound) / ||Z||_* <= rel_gap`` (default 1e-5), with
  ``dual_bound = D(mu) / max(1, ||A*(mu)||_2)``.

What this guarantees: ``dual_bound <= OPT`` (weak duality), so ``||Z||_* <= OPT (1 + rel_gap)`` to first order; and
(completion) clipping Z's observed entries into the box gives a feasible ``Z_f`` with ``OPT <= ||Z_f||_*``:
``info["objective_bounds"] = (dual_bound, ||Z_f||_*)`` is an interval that contains OPT (one SVD at the end; for
sensing the upper end is None). The certificate is pessimistic: the dual iterate's spectral norm exceeds 1 by about
``gap`` and dividing it out costs the whole gap, while the primal objective is typically right to 1e-8 relative.
Measured (tests/test_nnm.py, bench/nnm_bench.py): the objective agrees with cvxpy (Clarabel, an interior-point
solver, or SCS at eps <= 1e-7) to 4e-8 relative, and error_all to 1% relative where the minimizer is unique
(0.25% at most); at n = 100 against SCS at eps = 1e-6: objective 3e-7, error_all 4e-7 to 0.3% (SCS's own
violations there reach 1.5% of tol, ours stay below 1e-6). Below the recovery threshold the minimizer need not be unique: at n = 20, rank 2, m = 60, our
Z, SCS's and Clarabel's have the same objective to 1e-8 and error_all 0.72, 0.70 and 0.61, i.e. error_all is
then a property of the solver, not of the program.

Warm start: ``warm_start=(Z, dual)`` or ``(Z, dual, rho)`` from a previous solve (``info["dual"]``, ``info["rho"]``):
for completion ``dual`` is the n1 x n2 multiplier matrix (zero off the observed entries; entries not observed in the
new problem are dropped, new ones start at 0); for sensing it is the vector mu of length m. The start is
``t_0 = Z - dual / rho``, the DR state whose fixed point is (Z, dual), and the Halpern anchor. Re-solving a problem
from its own solution stops at the first check; a nearby problem (tol 1e-3 -> 1.2e-3, or 1% more observations)
takes 2x to 4x fewer iterations; along the book's grid (m -> m + 500) the active constraints change too much: over the
54 solves it saved 4% of the time (median 400 instead of 450 iterations, some solves took longer;
bench/nnm_results.md).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from . import _threads
from . import _validate as v
from .problems import Problem

# Halpern restarts (Lu & Yang 2024's defaults) and the penalty update.
BETA_SUFFICIENT, BETA_NECESSARY, BETA_ARTIFICIAL = 0.3, 0.8, 0.36
REFLECTION = 1.0  # gamma: 1 is the fully reflected Halpern iteration (2T - I)
THETA = 1.0  # weight of the new estimate of log rho at restarts (1: no smoothing)


def _svt(v_: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular value thresholding ``U diag((s - tau)_+) V^T`` via eigh of the smaller Gram matrix (float64).
    Returns (Z, kept singular values minus tau)."""
    wide = v_.shape[0] < v_.shape[1]
    a = v_.T if wide else v_  # tall: Gram a^T a is (n2 x n2), the smaller side
    evals, evecs = torch.linalg.eigh(a.T @ a)
    s = evals.clamp_min(0.0).sqrt()
    keep = s > tau
    s_k, v_k = s[keep], evecs[:, keep]
    shrunk = s_k - tau
    z = (a @ (v_k * (shrunk / s_k))) @ v_k.T
    return (z.T if wide else z), shrunk


class _Completion:
    def __init__(self, problem: Problem, tol: float):
        self.shape = problem.shape
        self.rows, self.cols = problem.rows, problem.cols
        self.y = problem.values.to(torch.float64)
        self.mask = problem.mask().bool()
        b = problem.observed_matrix()
        self.b = b
        self.lo = torch.where(self.mask, b - tol, torch.full_like(b, -math.inf))
        self.hi = torch.where(self.mask, b + tol, torch.full_like(b, math.inf))
        self.tol = tol

    def start(self, z0: torch.Tensor | None, dual: torch.Tensor | None, rho: float) -> torch.Tensor:
        t = self.b.clone() if z0 is None else z0.clone()
        if dual is not None:
            t = t - torch.where(self.mask, dual, torch.zeros_like(dual)) / rho
        return t

    def prox_g(self, t):
        return torch.maximum(torch.minimum(t, self.hi), self.lo)

    def prox_f(self, v_, rho):
        z, shrunk = _svt(v_, 1.0 / rho)
        return z, z, shrunk

    def matrix(self, x):
        return x

    def rescale(self, t, x, factor):  # U <- factor * U, X kept
        return x + factor * (t - x)

    def residuals(self, z):
        return z[self.rows, self.cols] - self.y

    def dual(self, t, x, rho):
        """(dual matrix Y = A*(mu), mu) from the state."""
        y_mat = -rho * (t - x)  # zero off the mask: there the prox is the identity
        return y_mat, y_mat[self.rows, self.cols]

    def dual_out(self, y_mat, mu):
        return y_mat


class _Sensing:
    def __init__(self, problem: Problem, tol: float):
        n1, n2 = problem.shape
        self.shape = (n1, n2)
        self.a = problem.measurements.reshape(problem.n_observed, n1 * n2).to(torch.float64)
        self.y = problem.values.to(torch.float64)
        self.m = problem.n_observed
        self.lo, self.hi = self.y - tol, self.y + tol
        gram = self.a @ self.a.T
        gram.diagonal().add_(1.0)
        self.chol = torch.linalg.cholesky(gram)
        self.gram = gram  # I + A A*
        self.tol = tol
        self.nz = n1 * n2

    def split(self, t):
        return t[: self.nz].reshape(self.shape), t[self.nz:]

    def start(self, z0, dual, rho):
        z = torch.zeros(self.shape, dtype=torch.float64) if z0 is None else z0
        w = self.a @ z.reshape(-1)
        t = torch.cat([z.reshape(-1), w])
        if dual is not None:  # U_w = mu / rho, U_Z = -A* U_w
            uw = dual / rho
            t = t + torch.cat([-(self.a.T @ uw), uw])
        return t

    def prox_g(self, t):
        """Projection onto the graph {(Z, w): w = A vec Z}."""
        z, w = t[: self.nz], t[self.nz:]
        r = self.a @ z - w
        c = torch.cholesky_solve(r.unsqueeze(1), self.chol).squeeze(1)
        z_new = z - self.a.T @ c
        w_new = w + r - (self.gram @ c - c)  # A z_new = A z - A A* c
        return torch.cat([z_new, w_new])

    def prox_f(self, v_, rho):
        z, w = self.split(v_)
        zs, shrunk = _svt(z, 1.0 / rho)
        out = torch.cat([zs.reshape(-1), torch.maximum(torch.minimum(w, self.hi), self.lo)])
        return out, zs, shrunk

    def matrix(self, x):
        return x[: self.nz].reshape(self.shape)

    def rescale(self, t, x, factor):
        return x + factor * (t - x)

    def residuals(self, z):
        return self.a @ z.reshape(-1) - self.y

    def dual(self, t, x, rho):
        mu = rho * (t[self.nz:] - x[self.nz:])
        return (self.a.T @ mu).reshape(self.shape), mu

    def dual_out(self, y_mat, mu):
        return mu


def _spectral_norm(y: torch.Tensor) -> float:
    a = y if y.shape[0] >= y.shape[1] else y.T
    return float(torch.linalg.eigvalsh(a.T @ a)[-1].clamp_min(0.0).sqrt())


def _warm(warm_start: Any, problem: Problem) -> tuple[torch.Tensor | None, torch.Tensor | None, float | None]:
    if warm_start is None:
        return None, None, None
    if not isinstance(warm_start, (tuple, list)) or len(warm_start) not in (2, 3):
        v.fail("warm_start", type(warm_start).__name__, "None or a tuple (Z, dual) or (Z, dual, rho)")
    z0 = torch.as_tensor(warm_start[0], dtype=torch.float64)
    if tuple(z0.shape) != tuple(problem.shape) or not torch.isfinite(z0).all():
        v.fail("warm_start[0]", f"array of shape {tuple(z0.shape)}", f"a finite matrix of shape {problem.shape}")
    dual = None
    if warm_start[1] is not None:
        dual = torch.as_tensor(warm_start[1], dtype=torch.float64)
        want = tuple(problem.shape) if problem.kind == "completion" else (problem.n_observed,)
        if tuple(dual.shape) != want or not torch.isfinite(dual).all():
            v.fail("warm_start[1]", f"array of shape {tuple(dual.shape)}", f"a finite array of shape {want} (the "
                   "dual: the multiplier matrix for completion, the vector mu for sensing)")
    rho = v.positive("warm_start[2]", warm_start[2]) if len(warm_start) == 3 and warm_start[2] is not None else None
    return z0, dual, rho


def solve(problem: Problem, tol: float = 1e-3, *, feas_slack: float = 1e-6, rel_gap: float = 1e-5,
          max_iters: int = 20_000, check_every: int = 10, warm_start: Any = None, rho: float | None = None,
          verbose: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Minimum-nuclear-norm Z with ``|A(Z)_i - y_i| <= tol`` (module docstring: method and stopping rule).

    Returns ``(Z, info)``: Z float64 (n1, n2); info has ``status`` ("optimal" when the stopping rule held, else
    "max_iters"), ``iterations``, ``seconds``, ``objective`` (``||Z||_*``), ``violation`` (max over i of
    ``|A(Z)_i - y_i| - tol``, floored at 0), ``gap`` (certified relative gap), ``dual_bound``,
    ``objective_bounds`` (an interval containing the optimum), ``rank``, ``restarts``, ``rho``, and ``dual``
    (for warm starts: ``solve(next_problem, warm_start=(Z, info["dual"], info["rho"]))``).
    """
    if not isinstance(problem, Problem):
        v.fail("problem", type(problem).__name__, "a mcreg_lib Problem")
    kind = v.choice("problem.kind", problem.kind, ("completion", "sensing"))
    tol = v.real("tol", tol, 0.0)
    feas_slack = v.real("feas_slack", feas_slack, 0.0)
    rel_gap = v.positive("rel_gap", rel_gap)
    max_iters = v.integer("max_iters", max_iters, 1)
    check_every = v.integer("check_every", check_every, 1)
    if rho is not None:
        rho = v.positive("rho", rho)
    z0, dual0, rho0 = _warm(warm_start, problem)
    with _threads.caller_on_one_thread():
        return _solve(problem, kind, tol, feas_slack, rel_gap, max_iters, check_every, z0, dual0,
                      rho if rho is not None else rho0, verbose)


def _solve(problem, kind, tol, feas_slack, rel_gap, max_iters, check_every, z0, dual0, rho, verbose):
    start_time = time.perf_counter()
    op = _Completion(problem, tol) if kind == "completion" else _Sensing(problem, tol)
    y = op.y
    if rho is None:
        rms = float(y.norm()) / math.sqrt(max(1, y.numel()))
        rho = 1.0 / rms if rms > 0 else 1.0
    t = op.start(z0, dual0, rho)

    def apply_t(t):
        x = op.prox_g(t)
        out, z, shrunk = op.prox_f(2 * x - t, rho)
        return t + (out - x), x, z, shrunk

    tt, x, z, shrunk = apply_t(t)
    anchor, k_in = t, 0
    r_anchor = r_prev = float((tt - t).norm())
    x_last, mu_last = x, op.dual(t, x, rho)[1]
    restarts, status, it = 0, "max_iters", 0
    stats: dict[str, float] = {}

    def check(t, x, z, shrunk):
        res = op.residuals(z)
        viol = float(((res.abs() - tol).clamp_min(0.0)).max()) if res.numel() else 0.0
        obj = float(shrunk.sum())
        y_mat, mu = op.dual(t, x, rho)
        scale = max(1.0, _spectral_norm(y_mat))
        dual_bound = float((mu @ y) - tol * mu.abs().sum()) / scale
        gap = (obj - dual_bound) / max(obj, 1e-300)
        return {"violation": viol, "objective": obj, "dual_bound": dual_bound, "gap": gap,
                "dual_scale": scale}, y_mat, mu

    for it in range(1, max_iters + 1):
        t = (k_in + 1) / (k_in + 2) * ((1 + REFLECTION) * tt - REFLECTION * t) + anchor / (k_in + 2)
        k_in += 1
        tt, x, z, shrunk = apply_t(t)
        if it % check_every and it != max_iters:
            continue
        stats, _, _ = check(t, x, z, shrunk)
        r = float((tt - t).norm())
        if verbose:
            print(f"{it:6d} viol {stats['violation']:.2e} gap {stats['gap']:.2e} obj {stats['objective']:.9f} "
                  f"rank {int(shrunk.numel())} res {r:.2e} rho {rho:.3g} restarts {restarts}", flush=True)
        if stats["violation"] <= feas_slack and stats["gap"] <= rel_gap:
            status = "optimal"
            break
        if r <= BETA_SUFFICIENT * r_anchor or (r <= BETA_NECESSARY * r_anchor and r > r_prev) \
                or k_in >= BETA_ARTIFICIAL * it:
            t = tt
            x = op.prox_g(t)
            mu = op.dual(t, x, rho)[1]
            dx, dmu = float((x - x_last).norm()), float((mu - mu_last).norm())
            if dx > 0 and dmu > 0:
                new = math.exp(THETA * math.log(dmu / dx) + (1 - THETA) * math.log(rho))
                t = op.rescale(t, x, rho / new)
                rho = new
            x_last, mu_last = x, op.dual(t, x, rho)[1]
            anchor, k_in, restarts = t, 0, restarts + 1
            tt, x, z, shrunk = apply_t(t)
            r_anchor = r_prev = float((tt - t).norm())
        else:
            r_prev = r

    stats, y_mat, mu = check(t, x, z, shrunk)
    upper = None
    if kind == "completion":
        zf = z.clone()
        zf[op.rows, op.cols] = torch.maximum(torch.minimum(z[op.rows, op.cols], op.y + tol), op.y - tol)
        upper = float(torch.linalg.svdvals(zf).sum())
    info = {"status": status, "iterations": it, "seconds": time.perf_counter() - start_time, **stats,
            "objective_bounds": (stats["dual_bound"], upper), "rank": int(shrunk.numel()), "restarts": restarts,
            "rho": rho, "dual": op.dual_out(y_mat, mu) / stats["dual_scale"], "tol": tol}
    return z, info
