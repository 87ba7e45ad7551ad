"""Depth and the low-rank bias (Arora, Cohen, Hu & Luo 2019): the chapter's logic beyond training.

* :func:`flow_check` runs plain gradient descent on ``W = W_N ... W_1`` and, at chosen steps, measures both sides of
  P3's singular-value dynamics (their Theorem 3, balanced initialization)::

      d sigma_r / dt = -N (sigma_r^2)^(1 - 1/N) <grad l(W), u_r v_r^T>

  The left side is the one-step finite difference ``(sigma_r(t+1) - sigma_r(t)) / lr`` of the real run; the right
  side is evaluated at step t from W's SVD and the end-to-end gradient. It also records how far the gradient is
  from diagonal in W's singular basis.
* :func:`recovery_threshold`: the smallest number of observations from which a method recovers, read off a sweep.
* :func:`spread`: mean and spread over seeds of one metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from . import _validate as v
from . import metrics, models
from .problems import Problem


def degrees_of_freedom(n_rows: int, n_cols: int, rank: int) -> int:
    """``r (n_rows + n_cols - r)``: the dimension of the rank-r matrices; ``r (2n - r)`` for a square matrix."""
    return int(rank * (n_rows + n_cols - rank))


def _loss_gradient(problem: Problem):
    """``W -> (loss, dL/dW)`` for the mean squared error over the observations (float64, CPU, one matrix)."""
    from .training import _Data  # the one definition of the loss

    data = _Data([problem], torch.float64, torch.device("cpu"))

    def f(w: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, r = data.residual(w[None].clone())
        return float(loss[0]), (r * data.gscale)[0]

    return f


def flow_check(
    problem: Problem,
    depth: int,
    lr: float,
    steps: int,
    *,
    init: str = "balanced",
    init_scale: float = 1e-3,
    seed: int = 0,
    top: int = 5,
    n_checks: int = 100,
    stop_loss: float = 0.0,
) -> pd.DataFrame:
    """Both sides of P3's singular-value dynamics along one plain-GD run (float64, CPU).

    At ``n_checks`` steps spread evenly over ``[0, steps)`` it records, for each of the ``top`` largest singular
    values r: ``sigma`` (sigma_r(t)), ``measured`` (``(sigma_r(t+1) - sigma_r(t)) / lr``, the real step) and
    ``predicted`` (``-N sigma_r^(2-2/N) u_r^T G v_r`` with G = dL/dW at step t), ``separation`` (the distance
    from sigma_r to its nearest neighbour in the spectrum: the formula is first-order perturbation theory, valid
    when one step moves sigma_r by much less than that), plus, per step, ``offdiag``
    (``||M - diag M||_F / ||M||_F`` for ``M = U_k^T G V_k``, the top-k block of the gradient in W's singular basis),
    ``train_loss`` and ``balancedness`` (the largest gap ``||W_{j+1}^T W_{j+1} - W_j W_j^T||_F``).
    One row per (step, r); stops early when the loss falls to ``stop_loss``.
    """
    if not isinstance(problem, Problem):
        v.fail("problem", problem, "a mcreg_lib Problem")
    depth = v.integer("depth", depth, 1)
    lr = v.positive("lr", lr)
    steps = v.integer("steps", steps, 1)
    top = v.integer("top", top, 1, min(problem.shape))
    n_checks = v.integer("n_checks", n_checks, 1)
    stop_loss = v.real("stop_loss", stop_loss, 0.0)
    layers = models.init_layers(problem.shape, depth, init, init_scale, seed)
    grad = _loss_gradient(problem)
    checks = set(np.unique(np.linspace(0, steps - 1, n_checks).round().astype(int)).tolist())
    rows = []
    pending = None  # (step, sigma_t, predicted, offdiag, loss, gap) waiting for sigma(t+1)
    for t in range(steps + 1):
        w = metrics.end_to_end(layers)
        loss, g = grad(w)
        if pending is not None:
            s_next = torch.linalg.svdvals(w)[:top]
            step, s_t, sep, pred, off, loss_t, gap = pending
            meas = (s_next - s_t) / lr
            for r in range(top):
                rows.append({"step": step, "depth": depth, "r": r + 1, "sigma": float(s_t[r]),
                             "separation": float(sep[r]), "measured": float(meas[r]), "predicted": float(pred[r]),
                             "offdiag": off, "train_loss": loss_t, "balancedness": gap})
            pending = None
        if t == steps or not np.isfinite(loss) or loss <= stop_loss:
            break
        if t in checks:
            u, s, vh = torch.linalg.svd(w)
            m = u[:, :top].T @ g @ vh[:top].T  # (top, top): G in W's singular basis
            diag = torch.diagonal(m)
            pred = -depth * s[:top] ** (2.0 - 2.0 / depth) * diag
            off = float(torch.linalg.matrix_norm(m - torch.diag(diag)) / torch.linalg.matrix_norm(m).clamp_min(1e-300))
            gaps = metrics.balancedness_gaps(layers)
            gap = max((float(x) for x in gaps), default=0.0)
            padded = torch.cat([s.new_full((1,), float("inf")), s, s.new_zeros(1)])
            sep = torch.minimum(padded[:-2] - padded[1:-1], padded[1:-1] - padded[2:])[:top]
            pending = (t, s[:top].clone(), sep, pred, off, loss, gap)
        # dL/dW_j = (W_N ... W_{j+1})^T G (W_{j-1} ... W_1)^T, all taken before any layer moves
        prefix = [layers[0]]
        for layer in layers[1:-1]:
            prefix.append(layer @ prefix[-1])
        a, grads = g, [None] * depth
        for j in range(depth - 1, 0, -1):
            grads[j] = a @ prefix[j - 1].T
            a = layers[j].T @ a
        grads[0] = a
        layers = [layer - lr * gj for layer, gj in zip(layers, grads)]
    return pd.DataFrame(rows)


def flow_agreement(check: pd.DataFrame, lr: float, min_separation: float = 10.0) -> float:
    """``||measured - predicted||_2 / ||predicted||_2`` over the rows of a :func:`flow_check` table (run with step
    ``lr``) where sigma_r is simple: its separation exceeds ``min_separation`` times the step's move
    ``lr |measured|`` (0 keeps every row). This is the relative error of the theory along the run."""
    lr = v.positive("lr", lr)
    min_separation = v.real("min_separation", min_separation, 0.0)
    sel = check[check["separation"] > min_separation * lr * check["measured"].abs()]
    if sel.empty:
        return float("nan")
    diff = np.linalg.norm(sel["measured"] - sel["predicted"])
    return float(diff / max(np.linalg.norm(sel["predicted"]), 1e-300))


def spread(table: pd.DataFrame, by: Sequence[str], value: str = "error_all") -> pd.DataFrame:
    """Mean, geometric mean, min, max and count of ``value`` over the rows of each group (e.g. over seeds)."""
    by = list(by)
    g = table.groupby(by)[value]
    out = g.agg(mean="mean", min="min", max="max", n="count")
    out["geomean"] = g.apply(lambda x: float(np.exp(np.log(np.clip(x.to_numpy(float), 1e-300, None)).mean())))
    return out.reset_index()


def recovery_threshold(table: pd.DataFrame, by: Sequence[str], x: str = "n_observed", value: str = "error_all",
                       tol: float = 1e-2) -> pd.DataFrame:
    """Per group of ``by``: the smallest ``x`` at which the mean of ``value`` is below ``tol`` there and at every
    larger ``x`` tested (NaN if none). This is the recovery threshold in m of a sweep over ``x``."""
    tol = v.positive("tol", tol)
    rows = []
    for key, grp in table.groupby(list(by)):
        means = grp.groupby(x)[value].mean().sort_index()
        ok = (means < tol).to_numpy()
        # the first index from which all later ones recover
        threshold = float("nan")
        for i in range(len(ok)):
            if ok[i:].all():
                threshold = float(means.index[i])
                break
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "threshold": threshold, "tested_max": float(means.index.max())})
    return pd.DataFrame(rows)
