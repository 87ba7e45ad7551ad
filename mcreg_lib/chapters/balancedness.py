"""Chapter "Balancedness" (notebooks/balancedness.md), Du, Hu & Lee 2018: the quantities gradient flow conserves,
and what gradient descent does to them.

Layers follow the book's convention: ``layers[0]`` is W_1, the layer applied first, and W_j has shape
(d_{j+1}, d_j). For adjacent layers the *balance matrix* is ``C_j = W_{j+1}^T W_{j+1} - W_j W_j^T`` (d_{j+1} x
d_{j+1}, ``mcreg_lib.metrics.balance_matrix``); its Frobenius norm is ``mcreg_lib.metrics.balancedness_gaps``, the
one definition of the gap, and ``metrics.relative_balancedness_gaps`` the gap relative to the layers' size. Its
diagonal holds the per-unit differences ``||W_{j+1}[:, i]||^2 - ||W_j[i, :]||^2`` that gradient flow conserves in
ReLU and leaky-ReLU networks too; its trace is ``||W_{j+1}||_F^2 - ||W_j||_F^2``.

Discrete identity [derived]: a gradient step ``W_j' = W_j - eta G_j`` changes ``C_j`` by exactly
``eta^2 (G_{j+1}^T G_{j+1} - G_j G_j^T)``, because the first-order terms cancel (``W_{j+1}^T G_{j+1} = G_j W_j^T``
for linear nets; its diagonal holds for ReLU nets). For the asymmetric factorization ``1/2 ||U V^T - M||_F^2``
(W_1 = V^T, W_2 = U, R = U V^T - M) this reads ``eta^2 (V^T R^T R V - U^T R R^T U)``.

Also here: gradient descent on the asymmetric factorization with constant or decaying steps, batched over seeds
(:func:`train_factorization`), and small fully connected ReLU / leaky-ReLU networks trained by full-batch gradient
descent with a hand-written backward pass, batched over initializations and activations (:func:`train_relu_nets`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import _validate as v
from .. import metrics, objective
from ..training import log_steps

from ..book.parameters import Parameters, dtype, integer, integers, number, numbers, positive
from ..cache import memoize

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate).
COLD_SECONDS = {"protocol": 36, "preview": 25}

PARAMETERS = Parameters(
    "balancedness",
    integer("n", 30, "the hidden matrix is n x n (experiments 2-3)", minimum=2, preview=10,
            group="deep linear experiments (2, 3): matrix completion, as in the other chapters"),
    integer("rank", 3, "its rank", minimum=1, maximum="n", preview=2),
    integer("n_observed", 450, "observed entries", minimum=1, maximum="n * n", preview=60),
    integers("depths", [3, 4], "depths of the deep linear networks", minimum=2, preview=[2, 3]),
    positive("init_scale", 1e-5, "scale of the small Gaussian initialization, end to end (experiment 3)"),
    positive("lr", 1.0, "gradient-descent step on the mean squared error (experiment 3)"),
    integer("max_steps", 10_000, "steps of experiment 3", minimum=10, preview=200),
    positive("flow_time", 1000.0, "experiment 2: time horizon T, step size times steps", preview=20.0),
    numbers("flow_lrs", [0.125, 0.25, 0.5, 1.0, 2.0], "experiment 2: step sizes compared over the same horizon",
            minimum=0.0, maximum="flow_time", strict=True, sort="ascending",
            rule=(lambda x, p: len(x) >= 2, "at least two different step sizes"), preview=[0.5, 1.0]),
    integer("identity_instances", 20, "number of random (U, V, M*) instances", minimum=1, preview=3,
            group="experiment 1: the exact identity on random instances"),
    positive("identity_lr", 0.05, "the step eta"),
    integer("relu_input_dim", 1000, "input dimension, x in R^relu_input_dim", minimum=1, preview=20,
            group="experiment 4: ReLU / leaky-ReLU networks (P2's experiment)"),
    integers("relu_widths", [100, 100], "hidden widths", minimum=1, preview=[8, 8]),
    integer("relu_output_dim", 10, "output dimension", minimum=1, preview=3),
    integer("relu_points", 200, "data points (the paper: 1000; see the text)", minimum=1, preview=30),
    integer("relu_steps", 2000, "full-batch GD steps (the paper: 10,000; see the text)", minimum=10, preview=50),
    positive("relu_lr", 1e-3, "GD step on 1/(2 n) sum of squared output errors"),
    positive("relu_entry_std", 1e-2, "unbalanced init: every entry N(0, relu_entry_std^2) (P2: N(0, 1e-4))"),
    positive("relu_target_rms", 15.0, "RMS of the teacher's targets"),
    number("leaky_slope", 0.01, "negative-side slope of the leaky ReLU", minimum=0.0, maximum=1.0, strict=True),
    integer("fact_rows", 20, "rows of M*", minimum=1, preview=6,
            group="experiment 5: asymmetric factorization 1/2 ||U V^T - M*||^2, M* of unit Frobenius norm"),
    integer("fact_cols", 15, "columns of M*", minimum=1, preview=5),
    integer("fact_rank", 3, "rank of M*, and the width of U and V", minimum=1, maximum="min(fact_rows, fact_cols)",
            preview=2),
    positive("fact_init_scale", 1e-3, "U, V entries N(0, fact_init_scale^2)"),
    positive("decay_lr0", 0.5, "decaying steps: eta_t is decay_lr0 (t + 1)^-(1/2 + decay_delta)"),
    number("decay_delta", 0.1, "exponent offset delta of the decaying steps", minimum=0.0, maximum=0.5,
           strict=True),
    integer("decay_steps", 20_000, "steps of the decaying-step run", minimum=10, preview=200),
    positive("rank1_lr", 0.2, "constant step for the rank-1 factorization"),
    integer("rank1_steps", 300, "steps of the rank-1 run", minimum=10, preview=60),
    integer("seed", 0, "seeds the problems and the data", minimum=0),
    integers("seeds", [0, 1, 2], "seeds of the initializations (experiments 3 and 5; the first for 2 and 4)",
             minimum=0, preview=[0, 1]),
    dtype("float64", "floating-point type; float64 for conservation checks"),
)


RELU_INITS = ("balanced", "unbalanced")


# --- the conserved quantities --------------------------------------------------------------------------------------

def _mark_diverged(loss: torch.Tensor, limit: torch.Tensor, active: torch.Tensor, diverged_at: list[int | None],
                   t: int, tensors: list[torch.Tensor]) -> None:
    """Mark the active runs whose loss (B,) has diverged (``objective.is_diverged``) at step t: record the step,
    deactivate them and zero their rows of ``tensors``, so non-finite values never reach the rest of the batch."""
    bad = objective.is_diverged(loss, limit) & active.view(-1).bool()
    for b in bad.nonzero().view(-1).tolist():
        diverged_at[b] = t
        active[b] = 0.0
        for x in tensors:
            x[b] = 0.0


def unit_balance(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Per hidden unit i: ``||W_{j+1}[:, i]||^2 - ||W_j[i, :]||^2``, shape (..., d); the diagonal of C_j.

    Gradient flow conserves each entry in ReLU and leaky-ReLU networks (P2, Thm 2.1).
    """
    metrics.check_adjacent(lower, upper)
    return upper.square().sum(-2) - lower.square().sum(-1)


def step_identity(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor],
                  per_unit: bool = False) -> pd.DataFrame:
    """Check the discrete identity for one gradient step from ``before`` to ``after`` (lists of layers, W_1 first).

    For each adjacent pair j: the measured change of C_j (or of its diagonal, ``per_unit=True``, the form that holds
    for ReLU nets), the prediction ``D_{j+1}^T D_{j+1} - D_j D_j^T`` with ``D = after - before = -eta G``, and the
    error. ``scale`` is the size of the terms that cancel (``||C_j(before)|| + ||C_j(after)||`` summed over both
    products), so ``error_over_scale`` is the error in units of the working precision. One row per pair.
    """
    if len(before) != len(after) or len(before) < 2:
        v.fail("after", f"{len(after)} layers", f"as many layers as before ({len(before)}), at least 2")
    rows = []
    for j in range(len(before) - 1):
        lo, up, lo2, up2 = before[j], before[j + 1], after[j], after[j + 1]
        d_lo, d_up = lo2 - lo, up2 - up
        if per_unit:
            measured = unit_balance(lo2, up2) - unit_balance(lo, up)
            predicted = unit_balance(d_lo, d_up)
            terms = [up.square().sum(-2), lo.square().sum(-1), up2.square().sum(-2), lo2.square().sum(-1)]
            norm = torch.linalg.vector_norm
        else:
            measured = metrics.balance_matrix(lo2, up2) - metrics.balance_matrix(lo, up)
            predicted = metrics.balance_matrix(d_lo, d_up)
            terms = [up.mT @ up, lo @ lo.mT, up2.mT @ up2, lo2 @ lo2.mT]
            norm = torch.linalg.matrix_norm
        error = float(norm(measured - predicted).max())
        scale = float(sum(norm(t) for t in terms).max())
        first_order = float(norm(up.mT @ d_up + d_up.mT @ up).max()) if not per_unit else float(
            norm(2 * (up * d_up).sum(-2)).max())
        rows.append({"pair": j + 1, "change": float(norm(measured).max()), "predicted": float(norm(predicted).max()),
                     "error": error, "scale": scale, "error_over_scale": error / max(scale, 1e-300),
                     "first_order_term": first_order})
    return pd.DataFrame(rows)



# --- asymmetric matrix factorization 1/2 ||U V^T - M||_F^2 ---------------------------------------------------------

def factorization_step(u: torch.Tensor, v_: torch.Tensor, target: torch.Tensor, lr: float | torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One gradient step on ``f(U, V) = 1/2 ||U V^T - M||_F^2``: returns (U', V', R) with ``R = U V^T - M``.

    u: (..., n1, k), v_: (..., n2, k), target M: (..., n1, n2); lr a number or a tensor broadcastable to (..., 1, 1).
    """
    r = u @ v_.mT - target
    return u - lr * (r @ v_), v_ - lr * (r.mT @ u), r


def factorization_identity(u: torch.Tensor, v_: torch.Tensor, target: torch.Tensor, lr: float) -> dict[str, float]:
    """One GD step on ``1/2 ||U V^T - M||^2``: the measured change of ``U^T U - V^T V`` against P2's closed form.

    Returns change (Frobenius norm of the measured change), predicted, error ``||measured - predicted||_F``, scale
    (``||U^T U|| + ||V^T V|| + ||U'^T U'|| + ||V'^T V'||``, the size of the terms that cancel), error_over_scale
    (error / scale) and first_order_term (``||eta (U^T R V + V^T R^T U)||_F``, what would remain without cancellation).
    """
    lr = v.positive("lr", lr)
    if u.shape[-1] != v_.shape[-1] or target.shape[-2:] != (u.shape[-2], v_.shape[-2]):
        v.fail("target", f"shape {tuple(target.shape)} with U {tuple(u.shape)}, V {tuple(v_.shape)}",
               "M of shape (n1, n2) with U (n1, k) and V (n2, k)")
    u2, v2, r = factorization_step(u, v_, target, lr)
    measured = (u2.mT @ u2 - v2.mT @ v2) - (u.mT @ u - v_.mT @ v_)
    predicted = lr**2 * (v_.mT @ r.mT @ r @ v_ - u.mT @ r @ r.mT @ u)
    norm = torch.linalg.matrix_norm
    error = float(norm(measured - predicted))
    scale = float(norm(u.mT @ u) + norm(v_.mT @ v_) + norm(u2.mT @ u2) + norm(v2.mT @ v2))
    return {"change": float(norm(measured)), "predicted": float(norm(predicted)), "error": error, "scale": scale,
            "error_over_scale": error / max(scale, 1e-300),
            "first_order_term": float(norm(lr * (u.mT @ r @ v_ + v_.mT @ r.mT @ u)))}


def lr_schedule(lr0: float, delta: float | None, steps: int) -> np.ndarray:
    """Step sizes ``eta_t = lr0 (t + 1)^-(1/2 + delta)`` for t = 0..steps-1 (P2, Thm 3.1); constant when delta is None."""
    lr0 = v.positive("lr0", lr0)
    steps = v.integer("steps", steps, 0)
    if delta is None:
        return np.full(steps, lr0)
    delta = v.real("delta", delta, 0.0, 0.5, strict_minimum=True)
    return lr0 * (np.arange(steps) + 1.0) ** -(0.5 + delta)


@dataclass
class FactorizationResult:
    """GD on the asymmetric factorization, one run per seed. ``history``: one row per (seed, logged step)."""

    history: pd.DataFrame
    u: torch.Tensor  # (seeds, n1, k)
    v: torch.Tensor  # (seeds, n2, k)
    summary: pd.DataFrame  # one row per seed
    parameters: dict[str, Any] = field(default_factory=dict)


def factorization_target(n_rows: int, n_cols: int, rank: int, seed: int, dtype: str = "float64") -> torch.Tensor:
    """``M = A B^T`` with Gaussian A (n_rows, rank), B (n_cols, rank), scaled to ``||M||_F = 1``."""
    n_rows, n_cols = v.integer("n_rows", n_rows, 1), v.integer("n_cols", n_cols, 1)
    rank = v.integer("rank", rank, 1, min(n_rows, n_cols))
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    a = torch.randn(n_rows, rank, generator=g, dtype=torch.float64)
    b = torch.randn(n_cols, rank, generator=g, dtype=torch.float64)
    m = a @ b.T
    return (m / torch.linalg.matrix_norm(m)).to(v.dtype(dtype))


@memoize
def train_factorization(
    target: torch.Tensor,
    width: int,
    init_scale: float,
    lr0: float,
    steps: int,
    seeds: Sequence[int],
    delta: float | None = None,
    divergence_factor: float = 1e6,
    logs_per_decade: int = 20,
) -> FactorizationResult:
    """Gradient descent on ``1/2 ||U V^T - M||_F^2`` from ``U, V ~ N(0, init_scale^2)``, all seeds as one batch.

    target M: (n1, n2); width k: columns of U (n1, k) and V (n2, k); steps eta_t from :func:`lr_schedule`. A run whose
    loss turns non-finite or exceeds ``divergence_factor`` times its start is stopped and reported (``diverged``).
    History columns: seed, step, lr, loss, relative_residual ``||UV^T - M||_F / ||M||_F``, u_sq_norm, v_sq_norm,
    gap ``||U^T U - V^T V||_F``, relative_gap.
    """
    if target.ndim != 2:
        v.fail("target", f"tensor of shape {tuple(target.shape)}", "a matrix (n1, n2)")
    width = v.integer("width", width, 1)
    init_scale = v.positive("init_scale", init_scale)
    seeds = v.int_list("seeds", seeds, 0)
    lrs = lr_schedule(lr0, delta, steps)
    logs_per_decade = v.integer("logs_per_decade", logs_per_decade, 1, 1000)
    divergence_factor = v.real("divergence_factor", divergence_factor, 1.0, strict_minimum=True)
    dtype = target.dtype
    n1, n2 = target.shape
    us, vs = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        us.append(torch.randn(n1, width, generator=g, dtype=torch.float64) * init_scale)
        vs.append(torch.randn(n2, width, generator=g, dtype=torch.float64) * init_scale)
    u, vv = torch.stack(us).to(dtype), torch.stack(vs).to(dtype)
    m = target.unsqueeze(0)
    m_norm = float(torch.linalg.matrix_norm(target))
    active = torch.ones(len(seeds), 1, 1, dtype=dtype)
    logged = set(log_steps(steps, logs_per_decade).tolist()) | {steps}
    rows: list[dict[str, Any]] = []
    diverged_at: list[int | None] = [None] * len(seeds)
    limit = None
    for t in range(steps + 1):
        r = u @ vv.mT - m
        loss = 0.5 * r.square().sum((-2, -1))
        if limit is None:
            limit = objective.divergence_limit(loss, divergence_factor)
        _mark_diverged(loss, limit, active, diverged_at, t, [u, vv])
        if t in logged:
            layers = [vv.mT, u]
            gap = metrics.balancedness_gaps(layers)[0]
            rel = metrics.relative_balancedness_gaps(layers)[0]
            for b, s in enumerate(seeds):
                if diverged_at[b] is None:
                    rows.append({"seed": s, "step": t, "lr": float(lrs[t]) if t < steps else float("nan"),
                                 "loss": float(loss[b]), "relative_residual": math.sqrt(2 * float(loss[b])) / m_norm,
                                 "u_sq_norm": float(u[b].square().sum()), "v_sq_norm": float(vv[b].square().sum()),
                                 "gap": float(gap[b]), "relative_gap": float(rel[b])})
        if t == steps or not bool(active.any()):
            break
        lr_t = float(lrs[t]) * active
        u, vv = u - lr_t * (r @ vv), vv - lr_t * (r.mT @ u)
    history = pd.DataFrame(rows)
    summary = []
    for b, s in enumerate(seeds):
        h = history[history.seed == s]
        first, last = h.iloc[0], h.iloc[-1]
        summary.append({"seed": s, "diverged": diverged_at[b] is not None, "diverged_at": diverged_at[b],
                        "steps": int(last.step), "final_loss": last.loss, "final_relative_residual": last.relative_residual,
                        "initial_gap": first.gap, "final_gap": last.gap, "max_gap": h.gap.max(),
                        "final_relative_gap": last.relative_gap, "u_sq_norm": last.u_sq_norm,
                        "v_sq_norm": last.v_sq_norm})
    params = {"width": width, "init_scale": init_scale, "lr0": lr0, "delta": delta, "steps": steps,
              "seeds": seeds, "dtype": str(dtype).removeprefix("torch.")}
    return FactorizationResult(history, u, vv, pd.DataFrame(summary), params)


# --- fully connected ReLU / leaky-ReLU networks -------------------------------------------------------------------

def relu_data(n_points: int, input_dim: int, output_dim: int, seed: int, dtype: str = "float64",
              target_rms: float = 1.0, teacher_width: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x ~ N(0, I_d)`` (n_points, input_dim) and targets (n_points, output_dim) from a random one-hidden-layer
    ReLU teacher ``A relu(B x)`` (B: teacher_width x d, A: output_dim x teacher_width), scaled to RMS target_rms.
    """
    target_rms = v.positive("target_rms", target_rms)
    n_points = v.integer("n_points", n_points, 1)
    input_dim = v.integer("input_dim", input_dim, 1)
    output_dim = v.integer("output_dim", output_dim, 1)
    teacher_width = v.integer("teacher_width", teacher_width, 1)
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    x = torch.randn(n_points, input_dim, generator=g, dtype=torch.float64)
    b = torch.randn(teacher_width, input_dim, generator=g, dtype=torch.float64) / math.sqrt(input_dim)
    a = torch.randn(output_dim, teacher_width, generator=g, dtype=torch.float64)
    y = torch.relu(x @ b.T) @ a.T
    y = y * (target_rms / y.square().mean().sqrt())
    return x.to(v.dtype(dtype)), y.to(v.dtype(dtype))


def relu_init(sizes: Sequence[int], init: str, seed: int, entry_std: float = 1e-2,
              dtype: str = "float64") -> list[torch.Tensor]:
    """Layers W_1..W_N with W_j of shape (sizes[j+1], sizes[j]); sizes = [input_dim, widths..., output_dim].

    unbalanced: entries i.i.d. N(0, entry_std^2) (P2's unbalanced init: all N(0, 1e-4), entry_std = 1e-2), so
        ``||W_j||_F^2`` is about entry_std^2 times the number of entries and differs from layer to layer.
    balanced: the same Gaussian draw, each layer rescaled to the same squared Frobenius norm, the geometric mean of
        the unbalanced expectations, so every difference ``||W_{j+1}||_F^2 - ||W_j||_F^2`` starts at zero.
    """
    sizes = v.int_list("sizes", sizes, 1)
    if len(sizes) < 3:
        v.fail("sizes", sizes, "[input_dim, hidden widths..., output_dim] with at least one hidden layer")
    init = v.choice("init", init, RELU_INITS)
    entry_std = v.positive("entry_std", entry_std)
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    layers = [torch.randn(o, i, generator=g, dtype=torch.float64) * entry_std for i, o in zip(sizes[:-1], sizes[1:])]
    if init == "balanced":
        counts = [layer.numel() for layer in layers]
        common = entry_std**2 * math.exp(sum(math.log(c) for c in counts) / len(counts))
        layers = [layer * math.sqrt(common / float(layer.square().sum())) for layer in layers]
    return [layer.to(v.dtype(dtype)) for layer in layers]


def relu_loss_and_grads(x: torch.Tensor, y: torch.Tensor, layers: Sequence[torch.Tensor], slopes: torch.Tensor
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss ``1/(2 n) sum_i ||f(x_i) - y_i||^2`` and its gradients for a batch of nets (hand-written backward).

    ``f(x) = W_N phi(W_{N-1} ... phi(W_1 x))`` with ``phi(z) = max(z, slope z)`` (slope 0: ReLU; slope in (0, 1):
    leaky ReLU). x: (n, d), y: (n, out), layers[j]: (B, d_{j+1}, d_j), slopes: (B,). Returns loss (B,) and grads
    shaped like layers. At z = 0 the ReLU derivative is taken as the slope (a measure-zero choice).
    """
    n = x.shape[0]
    s = slopes.view(-1, 1, 1).to(x.dtype)
    hs, zs = [x], []
    h = x
    for j, w in enumerate(layers):
        z = torch.matmul(h, w.mT)  # (B, n, d_{j+1})
        zs.append(z)
        h = z if j == len(layers) - 1 else torch.where(z > 0, z, s * z)
        hs.append(h)
    err = (hs[-1] - y) / n
    loss = 0.5 * n * err.square().sum((-2, -1))
    grads: list[torch.Tensor] = [err] * len(layers)
    for j in range(len(layers) - 1, -1, -1):
        grads[j] = torch.matmul(err.mT, hs[j])
        if j > 0:
            err = torch.matmul(err, layers[j]) * torch.where(zs[j - 1] > 0, 1.0, s)
    return loss, grads


@memoize
def train_relu_nets(
    x: torch.Tensor,
    y: torch.Tensor,
    inits: Sequence[Sequence[torch.Tensor]],
    slopes: Sequence[float],
    lr: float,
    steps: int,
    logs_per_decade: int = 20,
    divergence_factor: float = 1e6,
) -> tuple[pd.DataFrame, list[list[torch.Tensor]], list[int | None]]:
    """Full-batch gradient descent on several nets at once (same data, same shapes; own init and activation slope).

    Returns (history, final layers per net, diverged_at per net). History: one row per (net, logged step) with
    loss, sq_norm_j ``||W_j||_F^2`` for every layer and, for adjacent layers, diff_j ``||W_{j+1}||_F^2 - ||W_j||_F^2``,
    ratio_j ``||W_{j+1}||_F^2 / ||W_j||_F^2``, unit_drift_j (max over hidden units of the change of the per-unit
    difference since step 0) and predicted_drift_j, the sum over the steps so far of the exact per-step change
    ``lr^2 (||G_{j+1}||_F^2 - ||G_j||_F^2)`` (the discrete identity's trace), to compare with ``diff_j - diff_j(0)``.
    A net whose loss turns non-finite or exceeds divergence_factor times its start stops (diverged_at).
    """
    lr = v.positive("lr", lr)
    steps = v.integer("steps", steps, 0)
    logs_per_decade = v.integer("logs_per_decade", logs_per_decade, 1, 1000)
    divergence_factor = v.real("divergence_factor", divergence_factor, 1.0, strict_minimum=True)
    if not inits or len(inits) != len(slopes):
        v.fail("slopes", list(slopes), f"one activation slope per init ({len(inits)} inits)")
    slopes = [v.real(f"slopes[{i}]", s, 0.0, 1.0) for i, s in enumerate(slopes)]
    depth = len(inits[0])
    if any(len(ls) != depth or any(a.shape != b.shape for a, b in zip(ls, inits[0])) for ls in inits):
        v.fail("inits", "nets of different shapes", "nets with the same layer shapes")
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != inits[0][0].shape[1] \
            or y.shape[1] != inits[0][-1].shape[0]:
        v.fail("x, y", f"shapes {tuple(x.shape)}, {tuple(y.shape)}", "(n, input_dim) and (n, output_dim) matching "
               "the first and last layers")
    layers = [torch.stack([ls[j] for ls in inits]).to(x.dtype) for j in range(depth)]
    s_t = torch.tensor(slopes, dtype=x.dtype)
    units0 = [unit_balance(layers[j], layers[j + 1]) for j in range(depth - 1)]
    B = len(inits)
    predicted = torch.zeros(depth - 1, B, dtype=x.dtype)
    active = torch.ones(B, 1, 1, dtype=x.dtype)
    diverged_at: list[int | None] = [None] * B
    logged = set(log_steps(steps, logs_per_decade).tolist()) | {steps}
    rows: list[dict[str, Any]] = []
    limit = None
    for t in range(steps + 1):
        loss, grads = relu_loss_and_grads(x, y, layers, s_t)
        if limit is None:
            limit = objective.divergence_limit(loss, divergence_factor)
        _mark_diverged(loss, limit, active, diverged_at, t, layers)
        if t in logged:
            sq = [layer.square().sum((-2, -1)) for layer in layers]
            drift = [(unit_balance(layers[j], layers[j + 1]) - units0[j]).abs().amax(-1) for j in range(depth - 1)]
            for b in range(B):
                if diverged_at[b] is not None:
                    continue
                row: dict[str, Any] = {"net": b, "step": t, "loss": float(loss[b])}
                for j in range(depth):
                    row[f"sq_norm_{j + 1}"] = float(sq[j][b])
                for j in range(depth - 1):
                    row[f"diff_{j + 1}"] = float(sq[j + 1][b] - sq[j][b])
                    row[f"ratio_{j + 1}"] = float(sq[j + 1][b] / sq[j][b])
                    row[f"unit_drift_{j + 1}"] = float(drift[j][b])
                    row[f"predicted_drift_{j + 1}"] = float(predicted[j, b])
                rows.append(row)
        if t == steps or not bool(active.any()):
            break
        g_sq = torch.stack([grad.square().sum((-2, -1)) for grad in grads])  # (depth, B)
        predicted += lr**2 * active.view(1, -1) * (g_sq[1:] - g_sq[:-1])
        for layer, grad in zip(layers, grads):
            layer.sub_(grad * (lr * active))
    finals = [[layer[b].clone() for layer in layers] for b in range(B)]
    return pd.DataFrame(rows), finals, diverged_at


# --- deep linear networks through the library's trainer ------------------------------------------------------------

def layer_checkpoints(problem, checkpoints: Sequence[int], seeds: Sequence[int] = (0,), **config: Any
                      ) -> pd.DataFrame:
    """Train one deep linear configuration (``mcreg_lib.RunConfig`` fields in ``config``) for each seed and read its
    layers at each step of ``checkpoints``: the runs differ only in seed and max_steps and train as one batch of a
    sweep (a run with the same seed follows the same path, so its final layers are the trajectory's layers at that
    step).

    One row per (seed, checkpoint, adjacent pair j): seed, step, pair, gap ``||C_j||_F``
    (metrics.balancedness_gaps), relative_gap, sq_norm_lower ``||W_j||_F^2``, sq_norm_upper ``||W_{j+1}||_F^2``,
    train_loss, stop_reason, diverged.
    """
    from ..sweeps import sweep
    from ..training import RunConfig

    checkpoints = sorted(set(v.int_list("checkpoints", checkpoints, 0)))
    seeds = v.int_list("seeds", seeds, 0)
    if {"max_steps", "stop_loss", "seed"} & set(config):
        v.fail("config", sorted(config), "RunConfig fields other than max_steps, stop_loss and seed")
    pairs = [(s, c) for s in seeds for c in checkpoints]
    configs = [RunConfig(max_steps=c, stop_loss=0.0, seed=s, **config) for s, c in pairs]
    runs = sweep([(problem, c) for c in configs]).runs
    rows = []
    for (s, c), run in zip(pairs, runs):
        gaps = metrics.balancedness_gaps(run.layers)
        rel = metrics.relative_balancedness_gaps(run.layers)
        for j, (gap, r) in enumerate(zip(gaps, rel), start=1):
            rows.append({"seed": s, "step": c, "pair": j, "gap": float(gap), "relative_gap": float(r),
                         "sq_norm_lower": float(run.layers[j - 1].square().sum()),
                         "sq_norm_upper": float(run.layers[j].square().sum()),
                         "train_loss": run.summary["train_loss"], "stop_reason": run.summary["stop_reason"],
                         "diverged": run.summary["diverged"]})
    return pd.DataFrame(rows)
