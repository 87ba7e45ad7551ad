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
(W_1 = V^T, W_2 = U, R = U V^T - M) this reads ``eta^2 (V^T R^T R V - U^T R R^T U)``. Its consequence, the
threshold of the chapter's conservation claims (:func:`drift_bound`): while every step decreases the loss by at least
half its first-order prediction, ``||C_j(T) - C_j(0)||_F <= lr^2 sum_t ||grad L_t||^2 <= 2 lr (L(0) - L(T))``.

Also here: gradient descent on the asymmetric factorization with constant or decaying steps, batched over seeds
(:func:`train_factorization`), and fully connected ReLU / leaky-ReLU networks trained by full-batch gradient descent
with a hand-written backward pass, batched over initializations and activations (:func:`train_relu_nets`), at P2's
size (1000 points in R^1000, 10,000 steps) through the Gram matrix of the inputs (:class:`_FirstLayers`).
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

from ..book.parameters import Parameters, dtype, flag, integer, integers, number, numbers, positive
from ..cache import memoize

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate). Measured 2026-12-02 on the idle machine
# (2 torch threads): protocol 261 s, of which P2's ReLU experiment 223 s (1055 s and 855 s earlier on the machine
# shared with other sessions, torch at 1 thread); preview 15 s.
# With the loop of commit 56fe0a4 and later, on a second 2-core machine of the same kind (2026-12-03), the
# protocol value below; the build machine's, with the loop of earlier commits, in the comment above.
# Here: 62 s (nothing read).
COLD_SECONDS = {"protocol": 62, "preview": 15}

# The second seed set (``python -m mcreg_lib.book seed-sets CHAPTER``): every seed of the chapter moved to values its
# defaults do not use; a paper claim whose verdict changes there depends on the seeds.
SECOND_SEEDS = {"seed": 1, "seeds": [3, 4, 5]}

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
    integer("relu_input_dim", 1000, "input dimension, x in R^relu_input_dim (P2: 1000)", minimum=1, preview=20,
            group="experiment 4: ReLU networks, P2's experiment"),
    integers("relu_widths", [100, 100], "hidden widths (P2: 100, 100)", minimum=1, preview=[8, 8]),
    integer("relu_output_dim", 10, "output dimension (P2: 10)", minimum=1, preview=3),
    integer("relu_points", 1000, "data points (P2: 1000)", minimum=1, preview=40),
    integer("relu_steps", 10_000, "full-batch GD steps (P2: 10,000)", minimum=10, preview=100),
    positive("relu_lr", 1e-2, "GD step on 1/(2 n) sum of squared output errors (see the text)"),
    positive("relu_entry_std", 1e-2, "unbalanced init: every entry N(0, relu_entry_std^2) (P2: N(0, 1e-4))"),
    positive("relu_target_rms", 1.0, "RMS of the teacher's targets (unit scale, see the text)"),
    flag("relu_leaky", False, "also train leaky-ReLU nets (doubles the section's cost)"),
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
    integer("decay_steps", 200_000, "step budget of the decaying-step runs (each stops at the tolerance)", minimum=10,
            preview=200),
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
    stop_residual: float = 0.0,
) -> FactorizationResult:
    """Gradient descent on ``1/2 ||U V^T - M||_F^2`` from ``U, V ~ N(0, init_scale^2)``, all seeds as one batch.

    target M: (n1, n2); width k: columns of U (n1, k) and V (n2, k); steps eta_t from :func:`lr_schedule`, at most
    ``steps`` of them. A run stops when its relative residual reaches ``stop_residual`` (``stop_reason`` "tolerance";
    else "budget"); a run whose loss turns non-finite or exceeds ``divergence_factor`` times its start is stopped and
    reported (``diverged``, stop_reason "diverged").
    History columns: seed, step, lr, loss, relative_residual ``||UV^T - M||_F / ||M||_F``, u_sq_norm, v_sq_norm,
    gap ``||U^T U - V^T V||_F``, relative_gap, gap_change ``||C(t) - C(0)||_F`` (C = U^T U - V^T V), and the
    drift's bounds: grad_sq_sum ``sum_{s<t} eta_s^2 ||grad f_s||^2`` (>= gap_change, by the per-step identity and
    the triangle inequality), descent_bound ``2 sum_{s<t} eta_s (f_s - f_{s+1})`` (>= grad_sq_sum while every step
    decreases f by at least eta_s/2 ||grad f_s||^2) and min_descent, the smallest ratio
    ``(f_s - f_{s+1}) / (eta_s/2 ||grad f_s||^2)`` so far.
    """
    if target.ndim != 2:
        v.fail("target", f"tensor of shape {tuple(target.shape)}", "a matrix (n1, n2)")
    width = v.integer("width", width, 1)
    init_scale = v.positive("init_scale", init_scale)
    seeds = v.int_list("seeds", seeds, 0)
    lrs = lr_schedule(lr0, delta, steps)
    logs_per_decade = v.integer("logs_per_decade", logs_per_decade, 1, 1000)
    divergence_factor = v.real("divergence_factor", divergence_factor, 1.0, strict_minimum=True)
    stop_residual = v.real("stop_residual", stop_residual, 0.0)
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
    stop_loss = 0.5 * (stop_residual * m_norm) ** 2  # the loss 1/2 ||R||^2 at which the relative residual is reached
    active = torch.ones(len(seeds), 1, 1, dtype=dtype)
    logged = set(log_steps(steps, logs_per_decade).tolist()) | {steps}
    rows: list[dict[str, Any]] = []
    diverged_at: list[int | None] = [None] * len(seeds)
    stopped_at: list[int | None] = [None] * len(seeds)
    limit = None
    c0 = u.mT @ u - vv.mT @ vv  # the balance matrix U^T U - V^T V at the start
    grad_sq_sum = torch.zeros(len(seeds), dtype=dtype)     # sum_s eta_s^2 ||grad f_s||^2: bounds ||C(t) - C(0)||_F
    descent_sum = torch.zeros(len(seeds), dtype=dtype)     # sum_s 2 eta_s (f_s - f_{s+1})
    min_descent = torch.full((len(seeds),), math.inf, dtype=dtype)
    previous = None
    for t in range(steps + 1):
        r = u @ vv.mT - m
        loss = 0.5 * r.square().sum((-2, -1))
        if limit is None:
            limit = objective.divergence_limit(loss, divergence_factor)
        _mark_diverged(loss, limit, active, diverged_at, t, [u, vv])
        live = active.view(-1).bool()
        if previous is not None:
            prev_loss, prev_lr, prev_half, prev_live = previous
            descent_sum += torch.where(prev_live & live, 2 * prev_lr * (prev_loss - loss), 0.0)
            ok = prev_live & live & (prev_half > 0)
            min_descent = torch.where(ok, torch.minimum(min_descent, (prev_loss - loss) / prev_half.clamp_min(1e-300)),
                                      min_descent)
        done = [b for b in live.nonzero().view(-1).tolist() if float(loss[b]) <= stop_loss]
        for b in done:
            stopped_at[b] = t
        if t in logged or done:
            layers = [vv.mT, u]
            gap = metrics.balancedness_gaps(layers)[0]
            rel = metrics.relative_balancedness_gaps(layers)[0]
            change = torch.linalg.matrix_norm(u.mT @ u - vv.mT @ vv - c0)
            for b, s in enumerate(seeds):
                if live[b] and (t in logged or b in done):
                    rows.append({"seed": s, "step": t, "lr": float(lrs[t]) if t < steps else float("nan"),
                                 "loss": float(loss[b]), "relative_residual": math.sqrt(2 * float(loss[b])) / m_norm,
                                 "u_sq_norm": float(u[b].square().sum()), "v_sq_norm": float(vv[b].square().sum()),
                                 "gap": float(gap[b]), "relative_gap": float(rel[b]), "gap_change": float(change[b]),
                                 "grad_sq_sum": float(grad_sq_sum[b]), "descent_bound": float(descent_sum[b]),
                                 "min_descent": float(min_descent[b])})
        for b in done:
            active[b] = 0.0
        if t == steps or not bool(active.any()):
            break
        live = active.view(-1).bool()
        g_u, g_v = r @ vv, r.mT @ u
        g_sq = g_u.square().sum((-2, -1)) + g_v.square().sum((-2, -1))
        eta = float(lrs[t])
        grad_sq_sum += torch.where(live, eta**2 * g_sq, 0.0)
        previous = (loss, eta, 0.5 * eta * g_sq, live)
        lr_t = eta * active
        u, vv = u - lr_t * g_u, vv - lr_t * g_v
    history = pd.DataFrame(rows)
    summary = []
    for b, s in enumerate(seeds):
        h = history[history.seed == s]
        first, last = h.iloc[0], h.iloc[-1]
        reason = "diverged" if diverged_at[b] is not None else "tolerance" if stopped_at[b] is not None else "budget"
        summary.append({"seed": s, "diverged": diverged_at[b] is not None, "diverged_at": diverged_at[b],
                        "stop_reason": reason, "steps": int(last.step), "final_loss": last.loss,
                        "final_relative_residual": last.relative_residual,
                        "initial_gap": first.gap, "final_gap": last.gap, "max_gap": h.gap.max(),
                        "final_relative_gap": last.relative_gap, "gap_change": last.gap_change,
                        "grad_sq_sum": last.grad_sq_sum, "descent_bound": last.descent_bound,
                        "min_descent": last.min_descent, "u_sq_norm": last.u_sq_norm, "v_sq_norm": last.v_sq_norm})
    params = {"width": width, "init_scale": init_scale, "lr0": lr0, "delta": delta, "steps": steps,
              "stop_residual": stop_residual, "seeds": seeds, "dtype": str(dtype).removeprefix("torch.")}
    return FactorizationResult(history, u, vv, pd.DataFrame(summary), params)


# --- fully connected ReLU / leaky-ReLU networks -------------------------------------------------------------------

def relu_data(n_points: int, sizes: Sequence[int], seed: int, dtype: str = "float64",
              target_rms: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x ~ N(0, I_d)`` (n_points, sizes[0]) and targets (n_points, sizes[-1]) from a random *teacher* of the
    student's own architecture: a ReLU network ``T(x) = A_N relu(... relu(A_1 x))`` with layer shapes from ``sizes``
    (as :func:`relu_init`) and He's initialization (entries N(0, 2 / fan_in) for the hidden layers, N(0, 1 / fan_in)
    for the output layer), its outputs rescaled to RMS ``target_rms``.

    Why this data (the book's choice; P2's own data are not known to us): the student can fit it exactly (a global
    minimum at zero loss exists), and inputs and targets both have unit scale per coordinate, the usual
    normalization, so nothing in it is chosen to produce particular layer norms.
    """
    target_rms = v.positive("target_rms", target_rms)
    n_points = v.integer("n_points", n_points, 1)
    sizes = v.int_list("sizes", sizes, 1)
    if len(sizes) < 2:
        v.fail("sizes", sizes, "[input_dim, hidden widths..., output_dim]")
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    x = torch.randn(n_points, sizes[0], generator=g, dtype=torch.float64)
    h = x
    for j, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = j == len(sizes) - 2
        a = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * math.sqrt((1.0 if last else 2.0) / fan_in)
        h = h @ a.T if last else torch.relu(h @ a.T)
    y = h * (target_rms / h.square().mean().sqrt())
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


def _first_layer(x: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Pre-activations ``z = x W_1^T`` of every net, (B, n, d_2): one matrix product for the whole batch."""
    n, (batch, d2) = x.shape[0], w1.shape[:2]
    return (x @ w1.reshape(batch * d2, -1).mT).view(n, batch, d2).transpose(0, 1).contiguous()


def _relu_head(z: torch.Tensor, y: torch.Tensor, upper: Sequence[torch.Tensor], s: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """From the first layer's pre-activations z (B, n, d_2): the loss (B,), the gradients of the layers above it
    (``upper`` = W_2..W_N) and delta = dL/dz (B, n, d_2), so that the first layer's gradient is ``delta^T x``."""
    n = z.shape[-2]
    hs, slopes_at = [], []
    for w in upper:
        d_phi = torch.where(z > 0, 1.0, s)  # phi'(z), also phi(z) / z
        slopes_at.append(d_phi)
        h = z * d_phi
        hs.append(h)
        z = torch.matmul(h, w.mT)
    err = (z - y) / n
    loss = 0.5 * n * err.square().sum((-2, -1))
    grads: list[torch.Tensor] = [err] * len(upper)
    for j in range(len(upper) - 1, -1, -1):
        grads[j] = torch.matmul(err.mT, hs[j])
        err = torch.matmul(err, upper[j]) * slopes_at[j]
    return loss, grads, err


def relu_loss_and_grads(x: torch.Tensor, y: torch.Tensor, layers: Sequence[torch.Tensor], slopes: torch.Tensor
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss ``1/(2 n) sum_i ||f(x_i) - y_i||^2`` and its gradients for a batch of nets (hand-written backward).

    ``f(x) = W_N phi(W_{N-1} ... phi(W_1 x))`` with ``phi(z) = max(z, slope z)`` (slope 0: ReLU; slope in (0, 1):
    leaky ReLU). x: (n, d), y: (n, out), layers[j]: (B, d_{j+1}, d_j), slopes: (B,). Returns loss (B,) and grads
    shaped like layers. At z = 0 the ReLU derivative is taken as the slope (a measure-zero choice; the identities
    ``phi'(z) z = phi(z)`` that conservation rests on hold for any choice there).

    The first layer, the costly one (n x d x d_2 per net), is one matrix product for the whole batch in each
    direction: ``x @ [W_1^(1); ...; W_1^(B)]^T`` forward and ``[delta^(1); ...]^T x`` for its gradient.
    """
    n, batch, d2 = x.shape[0], layers[0].shape[0], layers[0].shape[1]
    loss, upper, delta = _relu_head(_first_layer(x, layers[0]), y, layers[1:], slopes.view(-1, 1, 1).to(x.dtype))
    first = (delta.transpose(0, 1).reshape(n, -1).mT @ x).view(batch, d2, -1)
    return loss, [first, *upper]


class _FirstLayers:
    """The first layers W_1 of a batch of nets under gradient descent, through one of two exact paths.

    * direct: ``z = x W_1^T`` forward and ``G_1 = delta^T x`` backward, two (n x d x d_2) products a step;
    * gram (for n < 2 d): with ``K = x x^T`` fixed, the step ``W_1 -= lr delta^T x`` moves the pre-activations by
      ``z -= lr K delta``, and ``||G_1||_F^2 = <delta, K delta>``: one (n x n x d_2) product a step, half the cost at
      n = d (P2's experiment). W_1 itself is ``W_1(0) - (sum_t lr delta_t)^T x``, formed only when it is read.
    Both give the same iterates up to rounding (tests/chapters/test_balancedness.py).
    """

    def __init__(self, x: torch.Tensor, w1: torch.Tensor, gram: bool):
        self.x, self.gram = x, gram
        self.n, (self.batch, self.d2) = x.shape[0], w1.shape[:2]
        if gram:
            self.k = x @ x.mT
            self.w0 = w1.clone()
            self.z = _first_layer(x, w1)
            self.acc = torch.zeros_like(self.z)  # sum_t lr active delta_t
        else:
            self.w = w1

    def pre_activations(self) -> torch.Tensor:
        return self.z if self.gram else _first_layer(self.x, self.w)

    def weights(self) -> torch.Tensor:
        if not self.gram:
            return self.w
        return self.w0 - (self.acc.transpose(0, 1).reshape(self.n, -1).mT @ self.x).view(self.batch, self.d2, -1)

    def step(self, delta: torch.Tensor, lr_active: torch.Tensor) -> torch.Tensor:
        """One gradient step with dL/dz = delta (B, n, d_2) and per-net steps lr_active (B, 1, 1); returns
        ``||G_1||_F^2`` (B,) at the point before the step."""
        flat = delta.transpose(0, 1).reshape(self.n, -1)
        if self.gram:
            k_delta = (self.k @ flat).view(self.n, self.batch, self.d2).transpose(0, 1)
            g_sq = (delta * k_delta).sum((-2, -1))
            self.z.sub_(k_delta * lr_active)
            self.acc.add_(delta * lr_active)
            return g_sq
        grad = (flat.mT @ self.x).view(self.batch, self.d2, -1)
        self.w.sub_(grad * lr_active)
        return grad.square().sum((-2, -1))

    def zero(self, b: int) -> None:
        for t in ((self.z, self.acc, self.w0) if self.gram else (self.w,)):
            t[b] = 0.0


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
    gram: bool | None = None,
) -> tuple[pd.DataFrame, list[list[torch.Tensor]], list[int | None]]:
    """Full-batch gradient descent on several nets at once (same data, same shapes; own init and activation slope).

    Returns (history, final layers per net, diverged_at per net). History: one row per (net, logged step) with
    loss, sq_norm_j ``||W_j||_F^2`` for every layer and, for adjacent layers, diff_j ``||W_{j+1}||_F^2 - ||W_j||_F^2``,
    ratio_j ``||W_{j+1}||_F^2 / ||W_j||_F^2``, unit_drift_j (max over hidden units of the change of the per-unit
    difference since step 0) and predicted_drift_j, the sum over the steps so far of the exact per-step change
    ``lr^2 (||G_{j+1}||_F^2 - ||G_j||_F^2)`` (the discrete identity's trace), to compare with ``diff_j - diff_j(0)``.
    Two columns for the drift's bound: grad_sq_sum, ``lr^2 sum_{s<t} ||grad L_s||^2`` (all layers), which bounds
    every ``|diff_j(t) - diff_j(0)|`` and every per-unit drift; and min_descent, the smallest over the steps so far of
    ``(L_s - L_{s+1}) / (lr/2 ||grad L_s||^2)``: while it is at least 1, ``grad_sq_sum <= 2 lr (L_0 - L_t)``.
    A net whose loss turns non-finite or exceeds divergence_factor times its start stops (diverged_at).
    ``gram``: the first layer's path (:class:`_FirstLayers`); None chooses the cheaper (gram when n < 2 d).
    """
    lr = v.positive("lr", lr)
    steps = v.integer("steps", steps, 0)
    logs_per_decade = v.integer("logs_per_decade", logs_per_decade, 1, 1000)
    divergence_factor = v.real("divergence_factor", divergence_factor, 1.0, strict_minimum=True)
    if not inits or len(inits) != len(slopes):
        v.fail("slopes", list(slopes), f"one activation slope per init ({len(inits)} inits)")
    slopes = [v.real(f"slopes[{i}]", s, 0.0, 1.0) for i, s in enumerate(slopes)]
    depth = len(inits[0])
    if depth < 2 or any(len(ls) != depth or any(a.shape != b.shape for a, b in zip(ls, inits[0])) for ls in inits):
        v.fail("inits", "nets of different shapes or one layer", "nets with the same layer shapes, at least 2 layers")
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != inits[0][0].shape[1] \
            or y.shape[1] != inits[0][-1].shape[0]:
        v.fail("x, y", f"shapes {tuple(x.shape)}, {tuple(y.shape)}", "(n, input_dim) and (n, output_dim) matching "
               "the first and last layers")
    gram = x.shape[0] < 2 * x.shape[1] if gram is None else bool(gram)
    stacked = [torch.stack([ls[j] for ls in inits]).to(x.dtype) for j in range(depth)]
    first, upper = _FirstLayers(x, stacked[0], gram), stacked[1:]
    s_t = torch.tensor(slopes, dtype=x.dtype).view(-1, 1, 1)
    units0 = [unit_balance(stacked[j], stacked[j + 1]) for j in range(depth - 1)]
    B = len(inits)
    predicted = torch.zeros(depth - 1, B, dtype=x.dtype)
    grad_sq_sum = torch.zeros(B, dtype=x.dtype)
    min_descent = torch.full((B,), math.inf, dtype=x.dtype)
    active = torch.ones(B, 1, 1, dtype=x.dtype)
    diverged_at: list[int | None] = [None] * B
    logged = set(log_steps(steps, logs_per_decade).tolist()) | {steps}
    rows: list[dict[str, Any]] = []
    limit = None
    previous = None  # (loss, lr/2 ||grad||^2) of the step before
    for t in range(steps + 1):
        loss, grads, delta = _relu_head(first.pre_activations(), y, upper, s_t)
        if limit is None:
            limit = objective.divergence_limit(loss, divergence_factor)
        was = [d is None for d in diverged_at]
        _mark_diverged(loss, limit, active, diverged_at, t, list(upper))
        for b in range(B):
            if was[b] and diverged_at[b] is not None:
                first.zero(b)
        if previous is not None:
            ratio = (previous[0] - loss) / previous[1].clamp_min(1e-300)
            live = active.view(-1).bool() & (previous[1] > 0)
            min_descent = torch.where(live, torch.minimum(min_descent, ratio), min_descent)
        if t in logged:
            layers = [first.weights(), *upper]
            sq = [layer.square().sum((-2, -1)) for layer in layers]
            drift = [(unit_balance(layers[j], layers[j + 1]) - units0[j]).abs().amax(-1) for j in range(depth - 1)]
            for b in range(B):
                if diverged_at[b] is not None:
                    continue
                row: dict[str, Any] = {"net": b, "step": t, "loss": float(loss[b]),
                                       "grad_sq_sum": float(grad_sq_sum[b]), "min_descent": float(min_descent[b])}
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
        lr_active = lr * active
        g_sq = torch.stack([first.step(delta, lr_active), *(g.square().sum((-2, -1)) for g in grads)])  # (depth, B)
        for layer, grad in zip(upper, grads):
            layer.sub_(grad * lr_active)
        live = active.view(-1)
        predicted += lr**2 * live.view(1, -1) * (g_sq[1:] - g_sq[:-1])
        grad_sq_sum += lr**2 * live * g_sq.sum(0)
        previous = (loss, 0.5 * lr * g_sq.sum(0))
    layers = [first.weights(), *upper]
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
    (metrics.balancedness_gaps), relative_gap, gap_change ``||C_j(step) - C_j(0)||_F`` (NaN unless 0 is a
    checkpoint), sq_norm_lower ``||W_j||_F^2``, sq_norm_upper ``||W_{j+1}||_F^2``, train_loss (at that step),
    stop_reason, diverged.
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
    start = {s: run.layers for (s, c), run in zip(pairs, runs) if c == 0}
    rows = []
    for (s, c), run in zip(pairs, runs):
        gaps = metrics.balancedness_gaps(run.layers)
        rel = metrics.relative_balancedness_gaps(run.layers)
        changes = balance_change(start[s], run.layers) if s in start else [float("nan")] * len(gaps)
        for j, (gap, r, change) in enumerate(zip(gaps, rel, changes), start=1):
            rows.append({"seed": s, "step": c, "pair": j, "gap": float(gap), "relative_gap": float(r),
                         "gap_change": change,
                         "sq_norm_lower": float(run.layers[j - 1].square().sum()),
                         "sq_norm_upper": float(run.layers[j].square().sum()),
                         "train_loss": run.summary["train_loss"], "stop_reason": run.summary["stop_reason"],
                         "diverged": run.summary["diverged"]})
    return pd.DataFrame(rows)


def balance_change(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> list[float]:
    """``||C_j(after) - C_j(before)||_F`` for each adjacent pair j (lists of layers, W_1 first): how far gradient
    descent moved the quantity gradient flow conserves. Bounded by ``eta^2 sum_t ||grad L_t||^2`` and, while every
    step is a sufficient descent, by ``2 eta (L(before) - L(after))`` (:func:`drift_bound`)."""
    if len(before) != len(after) or len(before) < 2:
        v.fail("after", f"{len(after)} layers", f"as many layers as before ({len(before)}), at least 2")
    return [float(torch.linalg.matrix_norm(metrics.balance_matrix(after[j], after[j + 1])
                                           - metrics.balance_matrix(before[j], before[j + 1])))
            for j in range(len(before) - 1)]


def drift_bound(lr: float, loss_start: float, loss_end: float) -> float:
    """``2 lr (loss_start - loss_end)``: the most gradient descent at a constant step ``lr`` can move any C_j (or any
    per-unit difference of a ReLU net) while the loss falls from loss_start to loss_end, if every step decreases the
    loss by at least ``lr/2 ||grad L||^2`` (the descent lemma's condition, true for steps below 1 / smoothness).

    [derived] Per step, ``C_j' - C_j = lr^2 (G_{j+1}^T G_{j+1} - G_j G_j^T)``, whose norm is at most
    ``lr^2 ||grad L||^2``; summing and using ``lr ||grad L_t||^2 <= 2 (L_t - L_{t+1})`` gives the bound.
    """
    lr = v.positive("lr", lr)
    return 2.0 * lr * max(float(loss_start) - float(loss_end), 0.0)


def rank_one_rates(lr: float, sigma: float = 1.0) -> tuple[float, float]:
    """The two local per-step contraction factors of the loss for GD with constant step ``lr`` on the rank-1
    factorization ``1/2 ||u v^T - M||^2`` near a balanced optimum, M of singular value ``sigma`` [derived]: the error
    along the target's direction contracts by ``1 - 2 lr sigma`` a step, the components orthogonal to it by
    ``1 - lr sigma``, so the loss contracts by ``(1 - 2 lr sigma)^2`` (fast) and ``(1 - lr sigma)^2`` (slow); any
    mixture falls at a rate between the two. Returns (fast, slow)."""
    lr, sigma = v.positive("lr", lr), v.positive("sigma", sigma)
    return (1 - 2 * lr * sigma) ** 2, (1 - lr * sigma) ** 2


def descent_words(min_ratio: float, sum_ratio: float) -> str:
    """How a run met the premise of the drift bound, in words for the text. ``min_ratio``: its smallest descent
    ratio ``(L_t - L_{t+1}) / (lr/2 ||grad L_t||^2)`` (at least 1: every step met the descent lemma's condition);
    ``sum_ratio``: ``lr^2 sum_t ||grad L_t||^2`` over the bound's right side (at most 1: the premise holds on the
    sum, which is all the bound uses)."""
    where = (f"and every step met the descent condition (smallest descent ratio {min_ratio:.3g})" if min_ratio >= 1
             else f"although not every step met the descent condition (smallest descent ratio {min_ratio:.3g})"
             if min_ratio >= 0 else f"although some steps increased the loss (smallest descent ratio {min_ratio:.3g})")
    if min_ratio >= 1:
        return where
    return where + (": the condition holds on the sum, which is all the bound uses" if sum_ratio <= 1 else
                    ": the condition fails even on the sum, so the bound's right side is not guaranteed")
