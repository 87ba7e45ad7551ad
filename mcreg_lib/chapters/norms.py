"""Chapter "When norms fall short" (notebooks/norms.md): Arora et al. 2019; Razin & Cohen 2020.

* :func:`p4_problem`: Razin & Cohen's 2x2 completion problem (observed W12, W21, W22; W11 unknown).
* :func:`train_p4`: ``mcreg_lib.small.train_small`` (compiled plain gradient descent on tiny matrices, the iterates
  of ``mc.fit``) with P4's columns added: ``loss_p4`` and ``abs_w11``.
* Conversions to P4's convention (loss ``l`` = half the sum of squares over the observed entries):
  :func:`p4_loss`, :func:`mse_loss`, :func:`mse_lr`, :func:`p4_init_scale`.
* :func:`w11_lower_bound`: the smallest |w11| a completion with loss ``l`` can have if det W keeps its sign.
* :func:`min_norm_completion`: the completion of the 2x2 problem with the smallest norm, by a 1-D search over w11.
* :func:`nuclear_norm_comparison`: the minimum-nuclear-norm solution against gradient descent solutions (P3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import _validate as v
from .. import baselines, metrics, objective, small
from ..problems import Problem, problem_from_observations
from ..training import RunConfig

from ..book.parameters import Parameters, dtype, integer, integers, number, numbers, positive

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate).
COLD_SECONDS = {"protocol": 91, "preview": 80}

PARAMETERS = Parameters(
    "norms",
    integer("n", 100, "the hidden matrix of the first experiment is n x n", minimum=2, preview=16),
    integer("rank", 5, "its rank", minimum=1, maximum="n", preview=2),
    integers("n_observed", [2000, 5000], "numbers of observed entries to compare", minimum=1, maximum="n * n",
             preview=[90, 200]),
    integers("depths", [2, 3], "depths for the first experiment", minimum=1, preview=[2]),
    numbers("init_scales", [1e-3, 1e-4, 1e-5, 1e-6], "init scales for the first experiment (P3's grid)",
            minimum=0.0, strict=True, preview=[1e-2, 1e-3]),
    integers("seeds", [0, 1, 2], "initialization seeds (first experiment and the 2x2 random inits)", minimum=0,
             preview=[0]),
    positive("lr", 3.0, "gradient-descent step on the mean squared error (first experiment)"),
    integer("max_steps", 100_000, "step budget per run (first experiment)", minimum=1, preview=1500),
    number("stop_loss", 1e-6, "stop when the training MSE reaches this (first experiment)", minimum=0.0),
    dtype("float32", "dtype of the first experiment (the 2x2 runs are always float64)"),
    integer("problem_seed", 0, "seeds the hidden matrix and the observed entries", minimum=0),
    integers("depths_2x2", [2, 3, 4], "depths for the 2x2 problems", minimum=2, preview=[2, 3]),
    positive("p4_lr", 3e-3, "step on P4's loss (half the sum of squares), converted below"),
    positive("p4_init_std", 8e-3, "P4's init: per-layer std (random) or end-to-end std (balanced)"),
    positive("p4_stop_loss", 1e-4, "stop the 2x2 runs at this P4 loss"),
    integer("p4_max_steps", 10_000_000, "step budget per 2x2 run", minimum=1, preview=20_000),
    numbers("depth2_lrs", [1e-2, 3e-3, 1e-3, 3e-4, 1e-4], "P4 step sizes for the depth-2 experiment", minimum=0.0,
            strict=True, preview=[3e-3, 1e-3]),
    numbers("epsilons", [0.01, 0.05, 0.1, 0.5], "W22 of the perturbed problems", minimum=0.0, strict=True,
            preview=[0.1, 0.5]),
    positive("perturbed_stop_loss", 1e-6, "stop the perturbed runs at this P4 loss"),
)


NORMS = metrics.NORMS


# --- P4's problem and conventions ----------------------------------------------------------------------------------

def p4_problem(w12: float = 1.0, w21: float = 1.0, w22: float = 0.0) -> Problem:
    """The 2x2 completion problem of Razin & Cohen (2020): W12, W21, W22 observed, W11 unknown.

    The defaults are the paper's problem (every solution ``[[w, 1], [1, 0]]`` has det -1); ``(-2, 0.5, eps)`` are
    its perturbed variants. Indices are 0-based internally: W12 is entry (0, 1).
    """
    vals = [v.real("w12", w12), v.real("w21", w21), v.real("w22", w22)]
    return problem_from_observations([0, 1, 1], [1, 0, 1], vals, (2, 2),
                                     info={"maker": "p4_problem", "w12": vals[0], "w21": vals[1], "w22": vals[2]})


def p4_loss(mse: Any, n_observed: int) -> Any:
    """P4's loss ``l = 1/2 sum_obs (W_ij - y_ij)^2`` from the mean squared error over ``n_observed`` entries."""
    return mse * (n_observed / 2.0)


def mse_loss(p4: Any, n_observed: int) -> Any:
    """The mean squared error over ``n_observed`` entries that equals P4's loss ``p4``."""
    return p4 * (2.0 / n_observed)


def mse_lr(p4_lr: float, n_observed: int) -> float:
    """The step on the mean squared error that gives the same gradient-descent iterates as ``p4_lr`` on P4's loss.

    ``grad(MSE) = (2 / m) grad(l)``, so ``lr_mse = lr_p4 * m / 2`` (P4's lr 3e-3 with m = 3 is 4.5e-3 here).
    """
    return v.positive("p4_lr", p4_lr) * v.integer("n_observed", n_observed, 1) / 2.0


def p4_init_scale(init: str, std: float, depth: int, n: int = 2) -> float:
    """The ``init_scale`` of ``mc.models.init_layers`` that reproduces P4's initialization with std ``std``.

    P4's "normal" init draws every layer N(0, std^2); ours draws N(0, init_scale^(2/N) / n), so
    ``init_scale = (std sqrt(n))^N``. P4's balanced init draws the end-to-end matrix N(0, std^2) and splits it; ours
    draws it N(0, init_scale^2 / n), so ``init_scale = std sqrt(n)``.
    """
    init = v.choice("init", init, ("gaussian", "balanced"))
    std, depth = v.positive("std", std), v.integer("depth", depth, 1)
    root = std * math.sqrt(v.integer("n", n, 1))
    return root**depth if init == "gaussian" else root


def w11_lower_bound(loss: Any, w12: float = 1.0, w21: float = 1.0, w22: float = 0.0) -> np.ndarray:
    """Lower bound on |W11| for any W with P4's loss ``loss`` on the 2x2 problem whose det W has the sign of w12*w21.

    With ``delta = sqrt(2 l)`` every observed entry is within delta of its value, and ``s det W > 0`` with
    ``s = sign(w12 w21)`` gives ``|W11| |W22| > |W12 W21|``, hence
    ``|W11| >= (|w12| - delta)(|w21| - delta) / (|w22| + delta)``: P4's ``(1 - sqrt(2l))^2 / sqrt(2l)`` for the
    original problem. Zero where the bound is vacuous (delta >= min(|w12|, |w21|)).
    """
    delta = np.sqrt(2.0 * np.asarray(loss, dtype=np.float64))
    a, b, c = abs(float(w12)), abs(float(w21)), abs(float(w22))
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = (a - delta) * (b - delta) / (c + delta)
    return np.where((delta < min(a, b)) & np.isfinite(bound), bound, 0.0)


def min_norm_completion(w12: float = 1.0, w21: float = 1.0, w22: float = 0.0, norm: str = "nuclear_norm",
                        *, sign: int | None = None) -> tuple[float, float]:
    """(w11, norm) of the completion ``[[w11, w12], [w21, w22]]`` with the smallest ``norm`` (one of NORMS).

    sign: +1 or -1 restricts to completions whose det has that sign (the infimum is then approached, not attained,
    when the restriction forces |w11| to infinity). A grid over w11 in [-R, R] then a bounded 1-D refinement.
    """
    from scipy.optimize import minimize_scalar

    norm = v.choice("norm", norm, NORMS)
    if sign is not None and sign not in (1, -1):
        v.fail("sign", sign, "+1, -1 or None")
    a, b, c = float(w12), float(w21), float(w22)

    def value(w: np.ndarray) -> np.ndarray:
        w = np.atleast_1d(np.asarray(w, dtype=np.float64))
        mats = torch.zeros(w.size, 2, 2, dtype=torch.float64)
        mats[:, 0, 0] = torch.as_tensor(w)
        mats[:, 0, 1], mats[:, 1, 0], mats[:, 1, 1] = a, b, c
        out = metrics.norms(mats)[norm].numpy()
        if sign is not None:
            det = w * c - a * b
            out = np.where(sign * det > 0, out, np.inf)
        return out

    radius = 10.0 * (abs(a) + abs(b) + abs(c) + 1.0)
    if sign is not None and c != 0 and sign * (-a * b) <= 0:
        radius = max(radius, 10.0 * abs(a * b / c))
    grid = np.linspace(-radius, radius, 20_001)
    vals = value(grid)
    i = int(np.argmin(vals))
    if not np.isfinite(vals[i]):
        raise ValueError(f"no completion with det of sign {sign} within |w11| <= {radius:g}")
    step = grid[1] - grid[0]
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(lambda x: float(value(x)[0]), bounds=(lo, hi), method="bounded",
                          options={"xatol": step * 1e-6})
    best_w, best = (float(res.x), float(res.fun)) if res.fun <= vals[i] else (float(grid[i]), float(vals[i]))
    return best_w, best


# --- gradient descent on the 2x2 problem -----------------------------------------------------------------------------

def train_p4(spec: Sequence[tuple[Problem, RunConfig]], *, loss_logs_per_decade: int = 0) -> small.SmallResult:
    """``mcreg_lib.small.train_small(spec)`` with P4's columns added to the table and the histories: ``loss_p4`` (P4's
    loss, half the sum of squares over the observed entries), ``abs_w11`` and ``loss_p4_at_flip``."""
    result = small.train_small(spec, loss_logs_per_decade=loss_logs_per_decade)
    m = {i: p.n_observed for i, (p, _) in enumerate(spec)}
    for frame in (result.table, result.histories):
        n_obs = frame["run"].map(m)
        frame["loss_p4"] = p4_loss(frame["train_loss"], n_obs)
        frame["abs_w11"] = frame["w11"].abs()
    result.table["loss_p4_at_flip"] = p4_loss(result.table["train_loss_at_flip"], result.table["run"].map(m))
    return result


# --- P3: the minimum-nuclear-norm solution against gradient descent --------------------------------------------------

def nuclear_norm_comparison(problems: Sequence[Problem], *, depths: Sequence[int], init_scales: Sequence[float],
                            seeds: Sequence[int], optimizer: str = "gd", lr: float = 3.0, max_steps: int = 100_000,
                            stop_loss: float = 1e-6, dtype: str = "float32",
                            device: str | torch.device | None = None) -> pd.DataFrame:
    """One row per solution: the minimum-nuclear-norm completion (cvxpy + SCS), the ground truth and every gradient
    descent run (``mc.sweep`` over depths x init_scales x seeds), on each problem.

    Columns: n_observed, method ("min nuclear norm", "ground truth", "GD"), depth, init_scale, seed, nuclear_norm,
    error_all, effective_rank, train_loss, steps, stop_reason, diverged, seconds.
    """
    from ..sweeps import grid, sweep

    rows: list[dict[str, Any]] = []
    for p in problems:
        if p.target is None:
            v.fail("problems", p, "synthetic problems with a known target (mc.completion_problem)")
        m = p.n_observed
        truth = objective.evaluate(p, p.target)
        rows.append({**truth, "n_observed": m, "method": "ground truth", "diverged": False})
        nnm = baselines.nuclear_norm_minimization(p)
        rows.append({**nnm.summary, "n_observed": m, "method": "min nuclear norm", "diverged": False})
        spec = grid(p, depth=list(depths), init_scale=list(init_scales), seed=list(seeds), optimizer=optimizer,
                    lr=lr, max_steps=max_steps, stop_loss=stop_loss, dtype=dtype)
        table = sweep(spec, device=device).table
        table["method"] = "GD"
        table["n_observed"] = m
        rows.extend(table.to_dict("records"))
    cols = ["n_observed", "method", "depth", "init_scale", "seed", "nuclear_norm", "error_all", "effective_rank",
            "train_loss", "steps", "stop_reason", "diverged", "seconds"]
    out = pd.DataFrame(rows)
    out["diverged"] = out["diverged"].astype(bool)
    return out[[c for c in cols if c in out.columns]]

