"""Training: one loop, for one run or a batch of runs of the same shape.

``fit(problem, depth=3, ...)`` trains one run. ``train(problems, configs)`` trains many configurations of the same
matrix shape, depth, optimizer and penalty as one tensor program with a leading batch dimension; each run keeps its
own seed, init scale, learning rate, penalty weight, observations and stop rule, stops on its own (a stopped run is
frozen, not dropped) and is reported on its own. ``fit`` is ``train`` with a batch of one.

Gradients are written out by hand (no autograd): for ``W = W_N ... W_1`` and ``G = dL/dW``,
``dL/dW_j = (W_N ... W_{j+1})^T G (W_{j-1} ... W_1)^T``, computed from the forward pass's prefix products.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _threads
from . import _validate as v
from . import metrics, models, optimizers, penalties
from .problems import Problem

N_SIGMAS = 10  # singular values logged per step


def _freeze(opts: Any) -> tuple[tuple[str, float], ...]:
    if opts is None:
        return ()
    if isinstance(opts, dict):
        return tuple(sorted(opts.items()))
    return tuple(sorted(tuple(o) for o in opts))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run besides the problem. Hashable; ``validated()`` fills defaults."""

    depth: int = 3
    optimizer: str = "gd"
    lr: float = 1.0
    init_scale: float = 1e-3
    init: str = "gaussian"
    penalty: str | None = None
    penalty_weight: float = 0.0
    max_steps: int = 100_000
    stop_loss: float = 1e-6
    seed: int = 0
    width: int | None = None
    det_sign: int | None = None
    dtype: str = "float32"
    optimizer_options: tuple[tuple[str, float], ...] = ()
    penalty_options: tuple[tuple[str, float], ...] = ()
    divergence_factor: float = 1e6
    logs_per_decade: int = 20
    stop_plateau: float = 0.0

    def validated(self, shape: tuple[int, int] | None = None) -> RunConfig:
        """Check every field (raising a ValueError that names it) and fill the optimizer and penalty defaults."""
        opt = optimizers.options(self.optimizer, dict(_freeze(self.optimizer_options)))
        if self.penalty is None:
            if self.penalty_weight != 0:
                v.fail("penalty_weight", self.penalty_weight, "0 when penalty is None")
        pen = penalties.options(self.penalty, dict(_freeze(self.penalty_options)))
        width = None if self.width is None else v.integer("width", self.width, 1)
        det_sign = self.det_sign
        if det_sign is not None and det_sign not in (1, -1):
            v.fail("det_sign", det_sign, "+1, -1 or None")
        if shape is not None and det_sign is not None and shape[0] != shape[1]:
            v.fail("det_sign", det_sign, "None for a non-square problem")
        return dataclasses.replace(
            self,
            depth=v.integer("depth", self.depth, 1),
            lr=v.positive("lr", self.lr),
            init_scale=v.positive("init_scale", self.init_scale),
            init=v.choice("init", self.init, models.INITS),
            penalty_weight=v.real("penalty_weight", self.penalty_weight, 0.0),
            max_steps=v.integer("max_steps", self.max_steps, 0),
            stop_loss=v.real("stop_loss", self.stop_loss, 0.0),
            seed=v.integer("seed", self.seed, 0),
            width=width,
            dtype=v.dtype_name(v.dtype(self.dtype)),
            optimizer_options=_freeze(opt),
            penalty_options=_freeze(pen),
            divergence_factor=v.real("divergence_factor", self.divergence_factor, 1.0, strict_minimum=True),
            logs_per_decade=v.integer("logs_per_decade", self.logs_per_decade, 1, 1000),
            stop_plateau=v.real("stop_plateau", self.stop_plateau, 0.0, 1.0),
        )

    def batch_key(self) -> tuple:
        """Runs with equal keys (and problems of equal shape and kind) can train in one batch."""
        return (self.depth, self.optimizer, self.optimizer_options, self.penalty, self.penalty_options,
                self.width, self.dtype, self.init)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optimizer_options"] = dict(self.optimizer_options)
        d["penalty_options"] = dict(self.penalty_options)
        return d


@dataclass
class Run:
    """A finished run: the end-to-end matrix and layers (CPU, the run's dtype), a tidy history, a summary."""

    config: RunConfig
    problem_info: dict[str, Any]
    matrix: torch.Tensor
    layers: list[torch.Tensor]
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.summary
        return (f"Run(depth={self.config.depth}, optimizer={self.config.optimizer!r}, steps={s.get('steps')}, "
                f"train_loss={s.get('train_loss'):.3g}, error_all={s.get('error_all')}, "
                f"diverged={s.get('diverged')})")


def log_steps(max_steps: int, logs_per_decade: int) -> np.ndarray:
    """The logged steps: 0 and ``round(10^(k / logs_per_decade))`` up to max_steps (the final step is added later)."""
    if max_steps <= 0:
        return np.zeros(1, dtype=np.int64)
    k = np.arange(0, math.ceil(math.log10(max_steps) * logs_per_decade) + 1)
    steps = np.unique(np.round(10.0 ** (k / logs_per_decade)).astype(np.int64))
    return np.concatenate([[0], steps[steps <= max_steps]])


FINAL_KEYS = ("steps", "stop_reason", "diverged", "diverged_at", "seconds")


def _finite_or_zero(w: torch.Tensor) -> torch.Tensor:
    """``w`` with every batch entry that holds a NaN or inf replaced by zeros (SVDs fail on non-finite input)."""
    finite = torch.isfinite(w).flatten(1).all(1)
    return w if bool(finite.all()) else torch.where(finite[:, None, None], w, torch.zeros((), dtype=w.dtype))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _progress_default() -> bool:
    return os.environ.get("MCREG_PROGRESS", "1") not in ("0", "false", "False", "")


class _Data:
    """The observations of a batch of problems, on the device: the loss, its gradient and the metrics."""

    def __init__(self, problems: Sequence[Problem], dtype: torch.dtype, device: torch.device) -> None:
        p0 = problems[0]
        self.kind, self.shape, self.B = p0.kind, p0.shape, len(problems)
        same = all(p is p0 for p in problems)
        unique = [p0] if same else list(problems)

        def stack(fn):
            return torch.stack([fn(p) for p in unique]).to(device=device, dtype=dtype)

        self.m = torch.tensor([float(p.n_observed) for p in problems], dtype=dtype, device=device)
        self.gscale = (2.0 / self.m).view(-1, 1, 1)
        if self.kind == "completion":
            self.mask = stack(lambda p: p.mask())
            self.observed = stack(lambda p: p.observed_matrix())
        else:
            if len({p.n_observed for p in unique}) > 1:
                raise ValueError("sensing problems in one batch must have the same number of measurements")
            self.a = stack(lambda p: p.measurements.reshape(p.n_observed, -1))  # (B|1, m, n_rows*n_cols)
            self.y = stack(lambda p: p.values)[..., None]
        has_target = [p.target is not None for p in unique]
        self.target = stack(lambda p: p.target) if all(has_target) else None
        has_test = [p.test_rows is not None for p in unique]
        self.test = None
        if all(has_test):
            self.test = [(p.test_rows.to(device), p.test_cols.to(device), p.test_values.to(device, dtype))
                         for p in unique]

    def residual(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (B,), R) with ``dL/dW = R * gscale``; L is the mean squared error over the observations."""
        if self.kind == "completion":
            r = (w - self.observed).mul_(self.mask)
        else:
            res = torch.matmul(self.a, w.reshape(w.shape[0], -1, 1)) - self.y  # (B, m, 1)
            r = torch.matmul(self.a.transpose(1, 2), res).view_as(w)
            return res.square().sum((1, 2)) / self.m, r
        flat = r.reshape(r.shape[0], -1)
        return torch.linalg.vecdot(flat, flat) / self.m, r

    def metrics(self, w: torch.Tensor, layers: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        sigma = metrics.singular_values(w)
        out = {
            "effective_rank": metrics.effective_rank(sigma=sigma),
            "nuclear_norm": metrics.nuclear_norm(sigma=sigma),
            "frobenius_norm": sigma.square().sum(-1).sqrt(),
        }
        if self.target is not None:
            out["error_all"] = metrics.relative_error(w, self.target)
            if self.kind == "completion":
                out["error_unobserved"] = metrics.relative_error(w, self.target, 1.0 - self.mask)
        if self.test is not None:
            if len(self.test) == 1:
                r, c, val = self.test[0]
                out["test_mse"] = metrics.completion_loss(w, r, c, val)
            else:
                out["test_mse"] = torch.stack([metrics.completion_loss(w[b], *t) for b, t in enumerate(self.test)])
        for j, gap in enumerate(metrics.balancedness_gaps(layers), start=1):
            out[f"balancedness_gap_{j}"] = gap
        for i in range(min(N_SIGMAS, sigma.shape[-1])):
            out[f"sigma_{i + 1}"] = sigma[:, i]
        return out


PLATEAU_MIN_STEP = 100


def _plateau(rows: list[dict[str, Any]], config: RunConfig) -> bool:
    """True when the objective (the training loss, plus the weighted penalty if any) at the last logged step t
    (at least PLATEAU_MIN_STEP) differs from its value at the last logged step at or before t / 2 by at most
    ``stop_plateau`` times its size: it moved by less than that fraction over the second half of the run so far."""
    t = rows[-1]["step"]
    if t < PLATEAU_MIN_STEP:
        return False
    key = "objective" if "objective" in rows[-1] else "train_loss"
    earlier = [r for r in rows if r["step"] <= t / 2]
    if not earlier:
        return False
    now, then = rows[-1][key], earlier[-1][key]
    return abs(now - then) <= config.stop_plateau * max(abs(now), abs(then))


def _check_batch(problems: Sequence[Problem], configs: Sequence[RunConfig]) -> None:
    if len(problems) != len(configs) or not configs:
        raise ValueError(f"need one problem per config, got {len(problems)} problems and {len(configs)} configs")
    p0, c0 = problems[0], configs[0]
    for i, (p, c) in enumerate(zip(problems, configs)):
        if not isinstance(p, Problem):
            v.fail("problem", p, "a mcreg_lib Problem (see completion_problem, problem_from_observations)")
        if p.kind != p0.kind or p.shape != p0.shape:
            raise ValueError(f"run {i}: problem {p.kind} {p.shape} cannot share a batch with {p0.kind} {p0.shape}")
        if c.batch_key() != c0.batch_key():
            raise ValueError(f"run {i}: config {c.batch_key()} cannot share a batch with {c0.batch_key()}; "
                             "use mcreg_lib.sweep to group runs automatically")


def train(
    problems: Problem | Sequence[Problem],
    configs: Sequence[RunConfig],
    *,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    description: str = "train",
    on_finish: Callable[[int, Run], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Run]:
    """Train a batch of runs together; returns one Run per config, in order.

    problems: one problem shared by all runs, or one per run (same kind and shape).
    configs: validated or not; every config must share ``batch_key()``.
    device: default CUDA when available, else CPU.
    on_finish(b, run): called as soon as run b stops (the sweep's cache stores it there).
    on_progress(run_steps, runs_finished): called about every 1000 steps with the run-steps done since the last
        call (a run that stops early also reports the steps it will not take); replaces this call's own bar.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty: give at least one RunConfig")
    problems = [problems] * len(configs) if isinstance(problems, Problem) else list(problems)
    if not problems or not isinstance(problems[0], Problem):
        v.fail("problem", problems[0] if problems else problems, "a mcreg_lib Problem")
    configs = [c.validated(problems[0].shape) for c in configs]
    _check_batch(problems, configs)
    device = default_device() if device is None else torch.device(device)
    progress = _progress_default() if progress is None else bool(progress)
    c0, B = configs[0], len(configs)
    dtype = v.dtype(c0.dtype)
    shape = problems[0].shape
    depth = c0.depth

    # --- state -------------------------------------------------------------------------------------------------
    inits = [models.init_layers(shape, depth, c.init, c.init_scale, c.seed, c.width, c.det_sign) for c in configs]
    layers = [torch.stack([ls[j] for ls in inits]).to(device=device, dtype=dtype) for j in range(depth)]
    data = _Data(problems, dtype, device)
    opt_name = c0.optimizer
    opt_opts = dict(c0.optimizer_options)
    fused_gd = opt_name == "gd"
    opt = optimizers.make(opt_name, layers, opt_opts)
    pen_opts = dict(c0.penalty_options)

    def col(values, dt=dtype):
        return torch.tensor(values, dtype=dt, device=device)

    lr = col([c.lr for c in configs]).view(B, 1, 1)
    pen_weight = col([c.penalty_weight for c in configs]).view(B, 1, 1)
    stop_loss = col([c.stop_loss for c in configs])
    max_steps = [c.max_steps for c in configs]
    horizon = max(max_steps)
    stop_at = set(max_steps)
    active = torch.ones(B, dtype=torch.bool, device=device)
    active_f = torch.ones(B, 1, 1, dtype=dtype, device=device)
    n_active = B
    logged = set(log_steps(horizon, c0.logs_per_decade).tolist())
    rows: list[list[dict[str, Any]]] = [[] for _ in range(B)]
    runs: list[Run | None] = [None] * B
    limit = torch.full((B,), math.inf, dtype=dtype, device=device)
    max_steps_t = torch.tensor(max_steps, device=device)
    start = time.perf_counter()
    bar = None
    if progress and on_progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=horizon, desc=f"{description} ({B} run{'s' * (B > 1)})", unit="step", leave=False)
    report_next, reported, reported_runs = 1000, 0, 0

    def report(t_done: int) -> None:
        nonlocal reported, reported_runs
        budget = sum(m if runs[b] is not None else min(t_done, m) for b, m in enumerate(max_steps))
        n_done = sum(r is not None for r in runs)
        if on_progress is not None:
            on_progress(budget - reported, n_done - reported_runs)
        elif bar is not None:
            bar.update(t_done - bar.n)
            bar.set_postfix(active=n_active, refresh=False)
        reported, reported_runs = budget, n_done

    # Preallocated buffers: forward prefix products W_j...W_1, the residual, and the backward products.
    dims = [shape[1]] + [w.shape[1] for w in layers]  # layer j maps dims[j] -> dims[j + 1]
    prefix = [layers[0]] + [torch.empty(B, dims[j + 1], dims[0], dtype=dtype, device=device) for j in range(1, depth)]
    back = [torch.empty(B, dims[j], shape[1], dtype=dtype, device=device) for j in range(depth)]
    grads = [torch.empty_like(x) for x in layers] if not fused_gd else []
    r_buf = torch.empty(B, *shape, dtype=dtype, device=device)
    neg_obs = data.observed.neg() if data.kind == "completion" else None
    # Per-run factors that change only when a run stops (a stopped run gets zero step, and never stops again).
    lo_h: list[float] = []
    hi_h: list[float] = []
    g_scale = p_scale = lr_eff = torch.zeros(())

    def refresh() -> None:
        nonlocal lo_h, hi_h, g_scale, p_scale, lr_eff
        lr_eff = lr * active_f
        g_scale = data.gscale * (lr_eff if fused_gd else active_f)
        p_scale = pen_weight * (lr_eff if fused_gd else active_f)
        lo_h = torch.where(active, stop_loss, -math.inf).tolist()
        hi_h = torch.where(active, limit, math.inf).tolist()

    def finish(b: int, t: int, reason: str, host: dict[str, np.ndarray]) -> None:
        diverged = reason == "diverged"
        final = {"steps": t, "stop_reason": reason, "diverged": diverged, "diverged_at": t if diverged else None,
                 "seconds": time.perf_counter() - start}
        layers_b = [layer[b].detach().to("cpu").clone() for layer in layers]
        if diverged:  # the loss that tripped the rule; every other metric is unmeasured
            last = {k: math.nan for k in host if k != "train_loss"}
            last["train_loss"] = float(host["train_loss"][b])
        else:
            last = rows[b][-1]
        summary: dict[str, Any] = {k: final[k] for k in FINAL_KEYS}
        for key in ("train_loss", "error_all", "error_unobserved", "test_mse", "effective_rank", "nuclear_norm",
                    "penalty", "objective"):
            if key in last:
                summary[key] = last[key]
        summary.update({"batch_size": B, "device": str(device)})
        run = Run(configs[b], dict(problems[b].info), metrics.end_to_end(layers_b), layers_b,
                  pd.DataFrame(rows[b]), summary)
        runs[b] = run
        if on_finish is not None:
            on_finish(b, run)

    # --- loop: at step t, evaluate theta_t, stop or log, then move to theta_{t+1} ------------------------------
    # A penalized step on the CPU is dominated by one decomposition per run, done on worker threads
    # (mcreg_lib._threads); this thread's own ops then run on one thread, leaving the cores to the workers.
    on_one_thread = c0.penalty is not None and device.type == "cpu"
    with _threads.caller_on_one_thread() if on_one_thread else contextlib.nullcontext():
        t = 0
        for t in range(horizon + 1):
            for j in range(1, depth):
                torch.bmm(layers[j], prefix[j - 1], out=prefix[j])
            w = prefix[-1]
            if neg_obs is not None:  # (W - observed) o mask, in one fused op: mask * W - observed
                r = torch.addcmul(neg_obs, data.mask, w, out=r_buf)
                loss = torch.bmm(r.view(B, 1, -1), r.view(B, -1, 1)).view(B).div_(data.m)  # one batched dot
            else:
                loss, r = data.residual(w)
            if t == 0:
                limit = c0.divergence_factor * loss.clamp_min(1.0)
                refresh()
            pen_val = pen_grad = None
            if c0.penalty is not None:
                if n_active == B:
                    pen_val, pen_grad = penalties.value_and_grad(_finite_or_zero(w), c0.penalty, pen_opts)
                else:  # only the running runs: a stopped run takes no step, and its penalty is not logged
                    idx_a = active.nonzero().view(-1)
                    val_a, grad_a = penalties.value_and_grad(_finite_or_zero(w[idx_a]), c0.penalty, pen_opts)
                    pen_val = torch.zeros(B, dtype=dtype, device=device).index_copy_(0, idx_a, val_a)
                    pen_grad = torch.zeros_like(w).index_copy_(0, idx_a, grad_a)

            # stop unless stop_loss < loss <= limit (NaN fails both); stopped runs have (lo, hi) = (-inf, inf).
            # Compared on the host: B floats, cheaper than three tensor ops (the thresholds are the tensors' values).
            any_stop = t in stop_at or not all(a < x <= b for x, a, b in zip(loss.tolist(), lo_h, hi_h))
            if t in logged or any_stop:
                bad = ~(loss <= limit)
                stopping = active & ((loss <= stop_loss) | bad | (max_steps_t <= t))
                with torch.no_grad():  # a diverged run's matrix may hold inf/NaN: measure zeros instead, never log them
                    found = data.metrics(_finite_or_zero(w), [_finite_or_zero(x) for x in layers])
                found["train_loss"] = loss
                if pen_val is not None:
                    found["penalty"] = pen_val
                    found["objective"] = loss + pen_weight.view(-1) * pen_val
                host = {k: x.detach().cpu().double().numpy() for k, x in found.items()}
                stop_host = stopping.cpu().numpy()
                act_host = active.cpu().numpy()
                bad_host = bad.cpu().numpy()
                plateau_host = np.zeros(B, dtype=bool)
                for b in range(B):
                    if act_host[b] and (t in logged or stop_host[b]) and not bad_host[b]:
                        rows[b].append({"step": t, **{k: float(x[b]) for k, x in host.items()}})
                        if configs[b].stop_plateau > 0 and not stop_host[b] and _plateau(rows[b], configs[b]):
                            plateau_host[b] = stop_host[b] = True
                if stop_host.any():
                    idx = np.flatnonzero(stop_host)
                    for b in idx:
                        lb = float(host["train_loss"][b])
                        reason = ("diverged" if bad_host[b] else "plateau" if plateau_host[b] else
                                  "stop_loss" if lb <= configs[b].stop_loss else "max_steps")
                        finish(int(b), t, reason, host)
                    n_active -= len(idx)
                    idx_t = torch.as_tensor(idx, device=device)
                    active[idx_t] = False
                    active_f[idx_t] = 0.0
                    diverged_idx = [int(b) for b in idx if bad_host[b]]
                    if diverged_idx:  # keep NaN/inf out of the batch; the run's state was recorded above
                        di = torch.tensor(diverged_idx, device=device)
                        for layer in layers:
                            layer[di] = 0.0
                        opt.reset(di)
                    if n_active == 0:
                        break
                    refresh()
            if t >= horizon:
                break

            # gradient of the objective with respect to W, with the step size folded in for plain GD
            g = r.mul_(g_scale)
            if pen_grad is not None:
                g.addcmul_(pen_grad, p_scale)
            # backward through the product, updating each layer after its gradient is taken
            a = g
            if fused_gd:
                for j in range(depth - 1, 0, -1):
                    nxt = torch.bmm(layers[j].transpose(1, 2), a, out=back[j])
                    layers[j].baddbmm_(a, prefix[j - 1].transpose(1, 2), alpha=-1.0)
                    a = nxt
                layers[0].sub_(a)
            else:
                for j in range(depth - 1, 0, -1):
                    torch.bmm(a, prefix[j - 1].transpose(1, 2), out=grads[j])
                    a = torch.bmm(layers[j].transpose(1, 2), a, out=back[j])
                grads[0].copy_(a)
                opt.step(layers, grads, lr_eff)
            if t + 1 >= report_next:
                report(t + 1)
                report_next = t + 1 + 1000
    report(horizon)
    if bar is not None:
        bar.close()
    for b in range(B):
        if runs[b] is None:  # pragma: no cover - every run stops by max_steps at the latest
            raise RuntimeError(f"run {b} did not stop")
    return [r for r in runs if r is not None]


def fit(
    problem: Problem,
    depth: int = 3,
    optimizer: str = "gd",
    lr: float = 1.0,
    init_scale: float = 1e-3,
    init: str = "gaussian",
    penalty: str | None = None,
    penalty_weight: float = 0.0,
    max_steps: int = 100_000,
    stop_loss: float = 1e-6,
    seed: int = 0,
    *,
    width: int | None = None,
    det_sign: int | None = None,
    dtype: str = "float32",
    optimizer_options: dict[str, float] | None = None,
    penalty_options: dict[str, float] | None = None,
    divergence_factor: float = 1e6,
    logs_per_decade: int = 20,
    stop_plateau: float = 0.0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> Run:
    """Train one deep factorization on ``problem``; see RunConfig for the parameters.

    lr is the step on the mean squared error over the observed entries. Training stops when that loss falls to
    ``stop_loss``, after ``max_steps`` steps, or when the loss turns non-finite or exceeds ``divergence_factor``
    times its starting value (then ``summary['diverged']`` is True and ``summary['diverged_at']`` is the step).
    With ``stop_plateau = r > 0`` it also stops (``stop_reason`` 'plateau') at a logged step t >= 100 where the
    objective (the loss plus the weighted penalty) is within a fraction r of its value at step t / 2: for penalized
    runs, whose loss falls to zero long before the penalty has done its work. Off (0) by default: a run can sit on a
    plateau and then move again (the singular values are learned one at a time).
    """
    if not isinstance(problem, Problem):
        v.fail("problem", problem, "a mcreg_lib Problem (see completion_problem, problem_from_observations)")
    cfg = RunConfig(depth=depth, optimizer=optimizer, lr=lr, init_scale=init_scale, init=init, penalty=penalty,
                    penalty_weight=penalty_weight, max_steps=max_steps, stop_loss=stop_loss, seed=seed, width=width,
                    det_sign=det_sign, dtype=dtype, optimizer_options=_freeze(optimizer_options),
                    penalty_options=_freeze(penalty_options), divergence_factor=divergence_factor,
                    logs_per_decade=logs_per_decade, stop_plateau=stop_plateau)
    return train(problem, [cfg], device=device, progress=progress, description=f"fit depth {depth}")[0]


def summaries(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: its configuration, the problem's parameters (prefixed ``problem_``) and its summary."""
    rows = []
    for run in runs:
        row = run.config.as_dict()
        row.update({f"problem_{k}": val for k, val in run.problem_info.items()})
        row.update(run.summary)
        rows.append(row)
    return pd.DataFrame(rows)
