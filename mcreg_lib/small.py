"""A compiled trainer for tiny matrices: plain gradient descent on deep factorizations of square matrices up to
8 x 8, millions of steps a second.

``train_small(spec)`` takes the same ``(Problem, RunConfig)`` pairs as ``mc.sweep`` (``mc.grid(...)``) and gives the
iterates of ``mc.fit`` with the same config: the same init, the same step on the mean squared error over the observed
entries, the same stop rules (``stop_loss``, ``max_steps``) and the same divergence rule
(``mcreg_lib.objective.is_diverged`` against ``objective.divergence_limit``, restated in the compiled loop), in
float64. The loop is compiled by numba over runs (one run per core); it restates two definitions for speed, each
held equal to the library's by a test (``tests/test_small.py``): the backward pass of ``mcreg_lib.models.layer_grads``
and the divergence rule of ``mcreg_lib.objective``. It also watches ``det W(t)`` at every step, which the norms
chapter needs (Razin & Cohen 2020).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import _validate as v
from . import metrics, models
from .problems import Problem
from .training import RunConfig, log_steps
from .cache import memoize

try:  # numba compiles the inner loop; without it the same code runs as (slow) Python
    import numba

    HAVE_NUMBA = True
    _jit = numba.njit(cache=True)
    _pjit = numba.njit(cache=True, parallel=True)
    _prange = numba.prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def _jit(f):
        return f

    _pjit = _jit
    _prange = range

MAX_SIZE = 8           # train_small is for matrices up to 8 x 8
STOP_REASONS = ("max_steps", "stop_loss", "diverged")  # codes 0, 1, 2 of the compiled loop

# --- the compiled gradient-descent loop ----------------------------------------------------------------------------

@_jit
def _matmul(a, b, out):  # out = a @ b
    d = a.shape[0]
    for i in range(d):
        for j in range(d):
            s = 0.0
            for k in range(d):
                s += a[i, k] * b[k, j]
            out[i, j] = s


@_jit
def _det(w, work):
    d = w.shape[0]
    if d == 1:
        return w[0, 0]
    if d == 2:
        return w[0, 0] * w[1, 1] - w[0, 1] * w[1, 0]
    work[:, :] = w
    det = 1.0
    for col in range(d):  # Gaussian elimination with partial pivoting
        p = col
        for r in range(col + 1, d):
            if abs(work[r, col]) > abs(work[p, col]):
                p = r
        if work[p, col] == 0.0:
            return 0.0
        if p != col:
            for k in range(d):
                tmp = work[col, k]
                work[col, k] = work[p, k]
                work[p, k] = tmp
            det = -det
        det *= work[col, col]
        for r in range(col + 1, d):
            f = work[r, col] / work[col, col]
            for k in range(col, d):
                work[r, k] -= f * work[col, k]
    return det


@_jit
def _run_one(layers, depth, mask, observed, lr, max_steps, stop_loss, div_factor, schedule, loss_factor, rec, out_i,
             out_f):
    """Gradient descent on one run, in place on ``layers`` (depth, d, d); W_1 = layers[0].

    rec[k] = (step, mse, det, W entries row-major) at the scheduled steps, whenever the loss falls below
    ``loss_factor`` times the last recorded loss (0 turns this off), at the first det sign flip and at the stop.
    out_i = (rows recorded, final step, stop code, first flip step or -1, number of flips); out_f = (mse at flip,).
    """
    d = layers.shape[1]
    m = 0.0
    for i in range(d):
        for j in range(d):
            m += mask[i, j]
    prefix = np.empty((depth, d, d))
    r = np.empty((d, d))
    a = np.empty((d, d))
    nxt = np.empty((d, d))
    work = np.empty((d, d))
    n_sched = schedule.shape[0]
    k = 0
    n_rec = 0
    n_loss_rows = 0
    max_loss_rows = rec.shape[0] - n_sched - 2
    last_logged = np.inf
    limit = np.inf
    last_sign = 0.0
    first_flip = -1
    n_flips = 0
    t = 0
    while True:
        prefix[0, :, :] = layers[0]
        for j in range(1, depth):
            _matmul(layers[j], prefix[j - 1], prefix[j])
        w = prefix[depth - 1]
        ss = 0.0
        for i in range(d):
            for j in range(d):
                r[i, j] = (w[i, j] - observed[i, j]) * mask[i, j]
                ss += r[i, j] * r[i, j]
        loss = ss / m
        det = _det(w, work)
        s = 1.0 if det > 0 else (-1.0 if det < 0 else 0.0)
        if t == 0:
            limit = div_factor * max(loss, 1.0)  # mirrors objective.divergence_limit
            last_sign = s
        elif s != 0.0 and s != last_sign:
            if last_sign != 0.0:
                n_flips += 1
                if first_flip < 0:
                    first_flip = t
                    out_f[0] = loss
            last_sign = s
        code = -1
        if not loss <= limit:  # mirrors objective.is_diverged (NaN fails the comparison)
            code = 2
        elif loss <= stop_loss:
            code = 1
        elif t >= max_steps:
            code = 0
        logged = False
        while k < n_sched and schedule[k] <= t:
            logged = logged or schedule[k] == t
            k += 1
        if not logged and loss < loss_factor * last_logged and n_loss_rows < max_loss_rows:
            logged = True
            n_loss_rows += 1
        if logged or code >= 0 or first_flip == t:
            last_logged = loss
            rec[n_rec, 0] = t
            rec[n_rec, 1] = loss
            rec[n_rec, 2] = det
            for i in range(d):
                for j in range(d):
                    rec[n_rec, 3 + i * d + j] = w[i, j]
            n_rec += 1
        if code >= 0:
            out_i[0] = n_rec
            out_i[1] = t
            out_i[2] = code
            out_i[3] = first_flip
            out_i[4] = n_flips
            return
        # mirrors models.layer_grads with G = dMSE/dW = (2/m) R, every layer from the old iterate, step folded in
        scale = 2.0 * lr / m
        for i in range(d):
            for j in range(d):
                a[i, j] = r[i, j] * scale
        for jl in range(depth - 1, 0, -1):
            upper = layers[jl]
            _matmul(upper.T, a, nxt)  # the gradient passed down, from the old W_{j+1}
            _matmul(a, prefix[jl - 1].T, work)  # this layer's gradient (work is free outside _det)
            upper -= work
            a[:, :] = nxt
        for i in range(d):
            for j in range(d):
                layers[0, i, j] -= a[i, j]
        t += 1


@_pjit
def _run_batch(layers, depths, masks, observed, lrs, max_steps, stop_losses, div_factors, schedule, loss_factor, rec,
               out_i, out_f):
    for b in _prange(layers.shape[0]):
        _run_one(layers[b, :depths[b]], depths[b], masks[b], observed[b], lrs[b], max_steps[b], stop_losses[b],
                 div_factors[b], schedule, loss_factor, rec[b], out_i[b], out_f[b])


# --- the front door ------------------------------------------------------------------------------------------------

@dataclass
class SmallResult:
    """Runs of ``train_small``: ``table`` (one row per run), ``histories`` (one row per logged step per run),
    ``layers`` (per run, W_1 first, float64) and ``matrices`` (B, n, n) float64, all at each run's last step."""

    table: pd.DataFrame
    histories: pd.DataFrame
    layers: list[list[torch.Tensor]]
    matrices: torch.Tensor


def _check_small(spec: Sequence[tuple[Problem, RunConfig]]) -> list[tuple[Problem, RunConfig]]:
    from .sweeps import validate as validate_spec

    spec = validate_spec(spec)
    if not spec:
        raise ValueError("spec is empty: give at least one (problem, config), e.g. mc.grid(problem, depth=[2, 3])")
    for i, (p, c) in enumerate(spec):
        where = f"run {i}: "
        if p.kind != "completion" or p.shape[0] != p.shape[1] or p.shape[0] > MAX_SIZE:
            raise ValueError(f"{where}problem {p.kind} {p.shape} is not allowed: train_small needs a square completion "
                             f"problem of size at most {MAX_SIZE} x {MAX_SIZE} (use mc.sweep for larger ones)")
        if c.optimizer != "gd" or c.penalty is not None:
            raise ValueError(f"{where}optimizer={c.optimizer!r}, penalty={c.penalty!r} is not allowed: train_small "
                             "runs plain gradient descent without a penalty (optimizer='gd', penalty=None)")
        if c.width not in (None, p.shape[0]):
            v.fail("width", c.width, f"None or {p.shape[0]} (train_small keeps every layer square)")
        if c.dtype != "float64":
            v.fail("dtype", c.dtype, "'float64' (train_small always runs in float64)")
        if c.stop_plateau:
            v.fail("stop_plateau", c.stop_plateau, "0 (train_small stops on the loss, the step budget or divergence)")
        if c.stop_scale:
            v.fail("stop_scale", c.stop_scale, "0 (train_small stops on the loss, the step budget or divergence)")
        if c.logs_per_decade != spec[0][1].logs_per_decade:
            v.fail("logs_per_decade", c.logs_per_decade, f"the same for every run ({spec[0][1].logs_per_decade})")
    return spec


@memoize
def train_small(spec: Sequence[tuple[Problem, RunConfig]], *, loss_logs_per_decade: int = 0,
                parallel: bool = True) -> SmallResult:
    """Plain gradient descent on every (problem, config) of ``spec`` (e.g. ``mc.grid(...)``), in float64.

    Gives the iterates of ``mc.fit`` with the same config (same init, step, stop rules: ``stop_loss``, ``max_steps``,
    divergence), but compiled, so millions of steps take about a second. Runs of any depth share one call.
    Also watches det W(t) at every step: ``first_flip`` is the first step whose det has the opposite sign of the
    previous nonzero one (-1 if never), ``n_flips`` the number of sign changes.

    Logged steps: ``mc.log_steps(max_steps, logs_per_decade)`` as in ``mc.fit``, the first flip and the last step;
    with ``loss_logs_per_decade = k > 0`` also every step at which the loss has fallen by a factor ``10^(1/k)``
    since the last logged one (at most 40 decades), so fast drops of the loss are drawn with as many points.

    History columns: step, train_loss (MSE), det, w11, w12, ... (1-based entries), the norms of
    ``mc.metrics.norms`` (frobenius_norm, nuclear_norm, spectral_norm, schatten_half_norm) and effective_rank, plus
    the run's config. Table: one row per run with its config, ``problem_*`` parameters, steps, stop_reason,
    diverged, diverged_at, first_flip, n_flips, train_loss_at_flip and the last logged row's values.
    """
    spec = _check_small(spec)
    if not HAVE_NUMBA:
        total = sum(c.max_steps * c.depth for _, c in spec)
        if total > 1_000_000:
            warnings.warn("numba is not installed (see requirements.txt), so train_small runs as plain Python: "
                          f"about {total * 2e-5:.0f} s for this spec", stacklevel=2)
    B = len(spec)
    d = spec[0][0].shape[0]
    if any(p.shape[0] != d for p, _ in spec):
        raise ValueError("every problem of one train_small call must have the same size")
    depth_max = max(c.depth for _, c in spec)
    layers = np.zeros((B, depth_max, d, d))
    for b, (p, c) in enumerate(spec):
        init = models.init_layers(p.shape, c.depth, c.init, c.init_scale, c.seed, None, c.det_sign)
        for j, x in enumerate(init):
            layers[b, j] = x.numpy()
    masks = np.stack([p.mask().numpy() for p, _ in spec])
    observed = np.stack([p.observed_matrix().numpy() for p, _ in spec])
    depths = np.array([c.depth for _, c in spec], dtype=np.int64)
    lrs = np.array([c.lr for _, c in spec])
    max_steps = np.array([c.max_steps for _, c in spec], dtype=np.int64)
    stop_losses = np.array([c.stop_loss for _, c in spec])
    div_factors = np.array([c.divergence_factor for _, c in spec])
    schedule = log_steps(int(max_steps.max()), spec[0][1].logs_per_decade).astype(np.int64)
    k = v.integer("loss_logs_per_decade", loss_logs_per_decade, 0, 1000)
    loss_factor = 10.0 ** (-1.0 / k) if k else 0.0
    rec = np.full((B, schedule.size + 2 + 40 * k, 3 + d * d), np.nan)
    out_i = np.zeros((B, 5), dtype=np.int64)
    out_f = np.full((B, 1), np.nan)
    start = time.perf_counter()
    if parallel:
        _run_batch(layers, depths, masks, observed, lrs, max_steps, stop_losses, div_factors, schedule, loss_factor,
                   rec, out_i, out_f)
    else:
        for b in range(B):
            _run_one(layers[b, :depths[b]], depths[b], masks[b], observed[b], lrs[b], max_steps[b], stop_losses[b],
                     div_factors[b], schedule, loss_factor, rec[b], out_i[b], out_f[b])
    seconds = time.perf_counter() - start
    return _collect(spec, layers, rec, out_i, out_f, seconds)


def _collect(spec, layers, rec, out_i, out_f, seconds) -> SmallResult:
    d = spec[0][0].shape[0]
    entries = [f"w{i + 1}{j + 1}" for i in range(d) for j in range(d)]
    frames, rows, final_layers, finals = [], [], [], []
    for b, (p, c) in enumerate(spec):
        n_rec, steps, code, first_flip, n_flips = (int(x) for x in out_i[b])
        r = rec[b, :n_rec]
        mats = torch.as_tensor(r[:, 3:]).reshape(-1, d, d)
        finite = torch.isfinite(mats).all(dim=(1, 2))
        h = pd.DataFrame(r[:, :3], columns=["step", "train_loss", "det"])
        h["step"] = h["step"].astype(np.int64)
        for k, name in enumerate(entries):
            h[name] = r[:, 3 + k]
        safe = torch.where(finite.view(-1, 1, 1), mats, torch.zeros_like(mats))
        for name, val in metrics.norms(safe).items():
            h[name] = np.where(finite.numpy(), val.numpy(), np.nan)
        cfg = c.as_dict()
        for key in ("depth", "init", "init_scale", "seed", "det_sign", "lr"):
            h[key] = cfg[key]
        for key, val in p.info.items():
            if key != "maker":
                h[f"problem_{key}"] = val
        h.insert(0, "run", b)
        frames.append(h)
        reason = STOP_REASONS[code]
        last = h.iloc[-1]
        diverged = reason == "diverged"
        row = {"run": b, **{k: val for k, val in cfg.items() if not isinstance(val, dict)},
               **{f"problem_{k}": val for k, val in p.info.items()},
               "steps": steps, "stop_reason": reason, "diverged": diverged, "diverged_at": steps if diverged else None,
               "first_flip": first_flip, "n_flips": n_flips, "train_loss_at_flip": float(out_f[b, 0]),
               "seconds": seconds, "batch_size": len(spec)}
        for key in ("train_loss", "det", *entries, *metrics.NORMS, "effective_rank"):
            row[key] = float(last[key])
        rows.append(row)
        lay = [torch.as_tensor(layers[b, j].copy()) for j in range(c.depth)]
        final_layers.append(lay)
        finals.append(models.end_to_end(lay))
    return SmallResult(pd.DataFrame(rows), pd.concat(frames, ignore_index=True), final_layers, torch.stack(finals))
