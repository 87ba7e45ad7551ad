"""Chapter "Depth and the low-rank bias" (notebooks/depth.md): Arora, Cohen, Hu & Luo 2019.

* :func:`flow_check` runs plain gradient descent on ``W = W_N ... W_1`` and, at chosen steps, measures both sides of
  P3's singular-value dynamics (their Theorem 3, balanced initialization)::

      d sigma_r / dt = -N (sigma_r^2)^(1 - 1/N) <grad l(W), u_r v_r^T>

  The left side is the one-step finite difference ``(sigma_r(t+1) - sigma_r(t)) / lr`` of the real run; the right
  side is evaluated at step t from W's SVD and the end-to-end gradient. It also records how far the gradient is
  from diagonal in W's singular basis.
* :func:`flow_agreement`: the relative error of the theory along the run.
* :func:`half_times`: when each singular value reaches half its final value (the "one at a time" measure).

Recovery thresholds, spreads over seeds and degrees of freedom are ``mcreg_lib.analysis``'s.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch

from .. import _validate as v
from .. import metrics, models, objective
from ..problems import Problem

from ..book.parameters import Parameters, dtype, integer, integers, number, numbers, path, positive
from ..cache import memoize

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate).
COLD_SECONDS = {"protocol": 309, "preview": 50}

PARAMETERS = Parameters(
    "depth",
    integer("n", 100, "the hidden matrix is n x n", minimum=2, preview=20),
    integer("rank", 5, "its rank", minimum=1, maximum="n", preview=2),
    integer("n_observed", 2000, "observed entries for the dynamics and the theory check", minimum=1,
            maximum="n * n", preview=150),
    integers("depths", [1, 2, 3], "depths for the dynamics and the theory check", minimum=1, preview=[1, 2]),
    positive("lr", 3.0, "plain-GD step on the mean squared error (dynamics)"),
    positive("dynamics_init_scale", 1e-3, "identity init: W(0) is dynamics_init_scale times I (P3 dynamics)"),
    integer("max_steps", 20_000, "plain-GD step budget (dynamics)", minimum=1, preview=300),
    positive("flow_lr", 1.0, "plain-GD step of the theory check (smaller: closer to gradient flow)"),
    integer("flow_steps", 2_000, "steps of the theory check", minimum=2, preview=60),
    integers("init_depths", [2, 3, 4], "depths of the error-vs-init sweep", minimum=1, preview=[2, 3]),
    numbers("init_scales", [1e-3, 1e-4, 1e-5, 1e-6], "end-to-end init scales (gaussian init, P3 rule)",
            minimum=0.0, strict=True, sort="descending", preview=[1e-2, 1e-3]),
    integers("init_observed", [2000, 5000], "observed entries of the error-vs-init sweep", minimum=1,
             maximum="n * n", preview=[150]),
    integers("seeds", [0, 1, 2], "init seeds of the error-vs-init sweep (one problem, as in P3)", minimum=0,
             preview=[0]),
    positive("ngd_lr", 1e-2, "normalized-GD step (P3 GroupRMSprop); P3 used 1e-3"),
    integer("ngd_steps", 20_000, "normalized-GD step budget per run", minimum=1, preview=200),
    number("ngd_stop_loss", 1e-8, "stop a normalized-GD run at this training loss", minimum=0.0),
    integers("observed_depths", [1, 2, 3, 4], "depths of the error-vs-m sweep", minimum=1, preview=[1, 2]),
    integers("observed_values", [1000, 1500, 2000, 3000, 4000], "m values of the error-vs-m sweep", minimum=1,
             maximum="n * n", sort="ascending", preview=[100, 200]),
    positive("observed_init_scale", 1e-4, "init scale of the error-vs-m sweep"),
    integers("observed_seeds", [0], "problem seeds of the error-vs-m sweep", minimum=0),
    integers("nnm_observed", [2000, 3000, 4000], "m values at which nuclear-norm minimization runs", minimum=1,
             maximum="n * n", sort="ascending", empty=True, preview=[200]),
    positive("recovery_tol", 1e-2, "recovered means error on all entries below this"),
    integer("sensing_n", 30, "matrix sensing: n x n hidden matrix", minimum=2, preview=8),
    integer("sensing_rank", 2, "rank of the sensing problem", minimum=1, maximum="sensing_n", preview=1),
    integers("sensing_measurements", [150, 300, 600], "numbers of Gaussian measurements", minimum=1,
             preview=[30, 60]),
    integer("sensing_steps", 8_000, "normalized-GD step budget per sensing run", minimum=1, preview=100),
    path("movielens_path", None, "path to the MovieLens-100K u.data file; None skips the real-data section",
         optional=True),
    integers("movielens_depths", [1, 2, 3], "depths of the MovieLens runs", minimum=1),
    integer("movielens_steps", 2_000, "steps of the MovieLens runs", minimum=1, preview=20),
    integer("seed", 0, "seeds the hidden matrices and the observed entries", minimum=0),
    dtype("float32", "training precision (the theory check always uses float64)"),
)


def _loss_gradient(problem: Problem):
    """``W -> (loss, dL/dW)`` for the mean squared error over the observations (float64, CPU, one matrix)."""
    obs = objective.Observations([problem], torch.float64, torch.device("cpu"))

    def f(w: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = obs.loss_and_gradient(w[None])
        return float(loss[0]), grad[0]

    return f


@memoize
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
        prefix = models.prefix_products(layers)
        w = prefix[-1]
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
        grads = models.layer_grads(layers, prefix, g)  # all taken before any layer moves
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


def half_times(history: pd.DataFrame, rank: int) -> list[float]:
    """The first logged step at which sigma_r reaches half of its final value in the run, for r = 1..rank (NaN if
    never): the "learned one at a time" measure of P3's dynamics figure (history: one run's ``sigma_r`` columns)."""
    out = []
    for r in range(1, rank + 1):
        hit = history.loc[history[f"sigma_{r}"] >= 0.5 * history[f"sigma_{r}"].iloc[-1], "step"]
        out.append(float(hit.iloc[0]) if len(hit) else float("nan"))
    return out
