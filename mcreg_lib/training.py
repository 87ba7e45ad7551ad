"""Training: one loop, for one run or a batch of runs of the same shape.

``fit(problem, depth=3, ...)`` trains one run. ``train(problems, configs)`` trains many configurations of the same
matrix shape, depth, optimizer and penalty as one tensor program with a leading batch dimension; each run keeps its
own seed, init scale, learning rate, penalty weight, observations and stop rule, stops on its own (a stopped run is
frozen until half its batch has stopped, then the running runs go on in a smaller batch) and is reported on its
own. ``fit`` is ``train`` with a batch of one. Sensing runs may differ in depth, optimizer and problem too: one
batch per key and problem, stepped in lockstep, each problem's operator read once per step.

One object, :class:`Batch`, owns a batch's state (layers, optimizer, per-run factors and the one ``active`` mask),
so that :func:`train` reads as a short loop: forward, loss (and penalty), log or stop, step. The pieces it uses are
defined once elsewhere: the loss, its gradient, the divergence rule and the logged metrics in
``mcreg_lib.objective``; the product and the backward pass (no autograd: ``dL/dW_j = (W_N ... W_{j+1})^T G
(W_{j-1} ... W_1)^T``) in ``mcreg_lib.models``; the update rules in ``mcreg_lib.optimizers``; the penalties in
``mcreg_lib.penalties``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _threads
from . import _validate as v
from . import models, objective, optimizers, penalties, settings
from .problems import Problem


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
    stop_scale: float = 0.0

    def validated(self, shape: tuple[int, int] | None = None) -> RunConfig:
        """Check every field (raising a ValueError that names it) and fill the optimizer and penalty defaults.

        A validated config remembers it (an attribute outside the dataclass fields, so it changes neither equality,
        hashing nor the cache key): ``grid``/``sweep`` validate once, and the cache key and ``train`` do not again.
        """
        if getattr(self, "_valid", False):
            if shape is not None and self.det_sign is not None and shape[0] != shape[1]:
                v.fail("det_sign", self.det_sign, "None for a non-square problem")
            return self
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
        out = dataclasses.replace(
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
            stop_scale=v.real("stop_scale", self.stop_scale, 0.0),
        )
        object.__setattr__(out, "_valid", True)
        return out

    def batch_key(self) -> tuple:
        """Runs with equal keys (and problems of equal shape and kind) can train in one batch."""
        return (self.depth, self.optimizer, self.optimizer_options, self.penalty, self.penalty_options,
                self.width, self.dtype, self.init)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optimizer_options"] = dict(self.optimizer_options)
        d["penalty_options"] = dict(self.penalty_options)
        return d

    def identity(self) -> dict[str, Any]:
        """``as_dict()`` without the fields added after results were first cached, where they hold their default
        (:data:`KEYED_IF_SET`): a config that does not use such a field keeps the cache key it always had."""
        d = self.as_dict()
        for name in KEYED_IF_SET:
            if d[name] == RunConfig.__dataclass_fields__[name].default:
                del d[name]
        return d


# Fields that enter a run's cache key only when set (RunConfig.identity): stop rules added later.
KEYED_IF_SET = ("stop_scale",)


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
SUMMARY_KEYS = ("train_loss", "error_all", "error_unobserved", "test_mse", "effective_rank", "nuclear_norm",
                "penalty", "objective")


PLATEAU_MIN_STEP = 100
PLATEAU_LOSS_FRACTION = 1e-3  # the plateau rule waits until the training loss is below this fraction of its start


def data_scale(problem: Problem) -> float:
    """``sqrt(n_rows n_cols)`` times the RMS of the observed values: ``||W*||_F`` estimated from the observations
    alone (exact in expectation for uniformly sampled entries; for Gaussian sensing with entries N(0, 1/(n_rows
    n_cols)) likewise). The scale the ``stop_scale`` rule compares ``||W||_F`` with."""
    values = problem.values.to(torch.float64)
    return float(math.sqrt(problem.shape[0] * problem.shape[1]) * values.square().mean().sqrt())


def _plateau(rows: list[dict[str, Any]], config: RunConfig) -> bool:
    """True when the objective (the training loss, plus the weighted penalty if any) has stopped falling: the
    smallest value logged in (t/2, t], with t the last logged step (at least PLATEAU_MIN_STEP), is within
    ``stop_plateau`` times its size of the smallest logged in (t/4, t/2].

    On a decreasing objective this compares the value at t with the value at the last logged step at or before
    t/2. Taking the smallest value of each half makes it robust to an objective that oscillates at a floor (Adam
    at a constant step does): the rule then fires once the floor itself stops falling. It never fires before the
    training loss has fallen below PLATEAU_LOSS_FRACTION of its value at step 0: a run stalled near a small
    initialization (gradient descent on a deep factorization sits at a saddle for a while) has a flat objective too,
    and is not done."""
    t = rows[-1]["step"]
    if t < PLATEAU_MIN_STEP or rows[-1]["train_loss"] > PLATEAU_LOSS_FRACTION * rows[0]["train_loss"]:
        return False
    key = "objective" if "objective" in rows[-1] else "train_loss"
    late = [r[key] for r in rows if r["step"] > t / 2]
    early = [r[key] for r in rows if t / 4 < r["step"] <= t / 2]
    if not early:  # sparse logging: the last value logged at or before t/2
        early = [r[key] for r in rows if r["step"] <= t / 2][-1:]
        if not early:
            return False
    now, then = min(late), min(early)
    return abs(now - then) <= config.stop_plateau * max(abs(now), abs(then))


def _check_batch(problems: Sequence[Problem], configs: Sequence[RunConfig]) -> None:
    if len(problems) != len(configs) or not configs:
        raise ValueError(f"need one problem per config, got {len(problems)} problems and {len(configs)} configs")
    p0, c0 = problems[0], configs[0]
    lockstep = len({c.batch_key() for c in configs}) > 1 and _lockstep(problems, configs)
    for i, (p, c) in enumerate(zip(problems, configs)):
        if not isinstance(p, Problem):
            v.fail("problem", p, "a mcreg_lib Problem (see completion_problem, problem_from_observations)")
        if p.kind != p0.kind or p.shape != p0.shape:
            raise ValueError(f"run {i}: problem {p.kind} {p.shape} cannot share a batch with {p0.kind} {p0.shape}")
        if c.batch_key() != c0.batch_key() and not lockstep:
            raise ValueError(f"run {i}: config {c.batch_key()} cannot share a batch with {c0.batch_key()}; "
                             "use mcreg_lib.sweep to group runs automatically (only sensing runs in one dtype "
                             "train together across batch keys: in lockstep)")


def _lockstep(problems: Sequence[Problem], configs: Sequence[RunConfig]) -> bool:
    """Whether runs of several batch keys may train together in lockstep: sensing runs in one dtype (the runs on
    one problem share its measurement operator, read once per step for all of them)."""
    return problems[0].kind == "sensing" and len({c.dtype for c in configs}) == 1


def _groups(problems: Sequence[Problem], configs: Sequence[RunConfig]) -> list[list[int]]:
    """The runs of a call by batch key, and sensing runs also by problem object, in order of first appearance: one
    :class:`Batch` each. A sensing batch thus holds one operator, taken in the fixed shapes of
    :func:`mcreg_lib.objective.shared_operator`, so a run's numbers do not depend on the other runs of the call."""
    groups: dict[tuple, list[int]] = {}
    for i, (p, c) in enumerate(zip(problems, configs)):
        groups.setdefault((c.batch_key(), id(p) if p.kind == "sensing" else 0), []).append(i)
    return list(groups.values())


def _residuals(batches: Sequence[Batch], live: Sequence[int], ws: Sequence[torch.Tensor]) -> list[Any]:
    """(L, R) for each live batch of sensing runs, one pass of each operator for the running runs of all the
    batches that share it (a stopped run gets L = 0 and R = 0: it takes no step and logs nothing, and the narrower
    products leave the running runs' numbers as they are: objective.shared_operator); None for completion
    batches (their :meth:`Batch.loss` takes its own)."""
    if batches[live[0]].obs.kind != "sensing":
        return [None] * len(live)
    by_operator: dict[int, list[int]] = {}
    for j, k in enumerate(live):
        by_operator.setdefault(id(batches[k].obs.a), []).append(j)
    out: list[Any] = [None] * len(live)
    for js in by_operator.values():
        going = [batches[live[j]].running if batches[live[j]].n_active < ws[j].shape[0] else None for j in js]
        found = objective.shared_residuals([batches[live[j]].obs for j in js],
                                           [ws[j] if idx is None else ws[j][idx] for j, idx in zip(js, going)])
        for j, idx, (loss, r) in zip(js, going, found):
            if idx is not None:  # back to the batch's shape, zeros for the stopped runs
                loss = loss.new_zeros(ws[j].shape[0]).index_copy_(0, idx, loss)
                r = r.new_zeros(ws[j].shape).index_copy_(0, idx, r)
            out[j] = (loss, r)
    return out


class Batch:
    """The state of a batch of runs in training, owned in one place.

    ``active`` (a host boolean per run) is the one record of which runs are still going; everything that depends
    on it (the per-run step sizes, which runs the stop test watches, the penalty's sub-batch) is derived from it
    in :meth:`_refresh` whenever a run stops. A stopped run is frozen (zero step), not dropped, so the tensors keep
    their shape; a diverged run's layers and optimizer state are zeroed so no NaN reaches the others. Once half a
    batch has stopped, the loop goes on with its running runs in a smaller batch (:meth:`running_only`, the same
    state a checkpoint holds), so a batch never does more than twice the work its running runs need.

    The loop of :func:`train` calls, per step t: :meth:`forward` (W), :meth:`loss` (the loss, R and the penalty),
    :meth:`may_stop` / :meth:`log` (record metrics at logged steps, decide which runs stop and why) and
    :meth:`step` (the backward pass and the update).
    """

    def __init__(self, problems: Sequence[Problem], configs: Sequence[RunConfig], device: torch.device,
                 operator: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        c0 = configs[0]
        self.problems, self.configs, self.device = list(problems), list(configs), device
        self.size = B = len(configs)
        self.dtype = dtype = v.dtype(c0.dtype)
        self.shape = shape = problems[0].shape
        self.depth = depth = c0.depth
        inits = [models.init_layers(shape, depth, c.init, c.init_scale, c.seed, c.width, c.det_sign) for c in configs]
        self.layers = [torch.stack([ls[j] for ls in inits]).to(device=device, dtype=dtype) for j in range(depth)]
        self.obs = objective.Observations(problems, dtype, device, operator)
        self.fused_gd = c0.optimizer == "gd"  # plain GD folds its step into the backward pass (models.layer_grads)
        self.opt = optimizers.make(c0.optimizer, self.layers, dict(c0.optimizer_options))
        self.penalty, self.penalty_options = c0.penalty, dict(c0.penalty_options)

        def column(name: str) -> torch.Tensor:
            return torch.tensor([getattr(c, name) for c in configs], dtype=dtype, device=device)

        self.lr = column("lr").view(B, 1, 1)
        self.penalty_weight = column("penalty_weight").view(B, 1, 1)
        self.divergence_factor = column("divergence_factor")
        self.stop_loss = np.array([c.stop_loss for c in configs])
        self.max_steps = np.array([c.max_steps for c in configs])
        self.budgets = set(self.max_steps.tolist())  # steps at which some run's budget ends
        # the stop_scale rule: stop once ||W||_F exceeds stop_scale times the data's scale (off where 0)
        self.scale_limit = np.array([c.stop_scale * data_scale(p) if c.stop_scale > 0 else math.inf
                                     for p, c in zip(problems, configs)])
        self.limit = np.full(B, math.inf)  # the divergence limit of each run, fixed at step 0
        self.active = np.ones(B, dtype=bool)
        self.rows: list[list[dict[str, Any]]] = [[] for _ in range(B)]
        # buffers: prefix products W_j...W_1 (the last is W), the passed-down products, the gradients, R
        dims = [shape[1]] + [w.shape[1] for w in self.layers]  # layer j maps dims[j] -> dims[j + 1]
        self.prefix_out = [torch.empty(B, dims[j + 1], dims[0], dtype=dtype, device=device) for j in range(1, depth)]
        self.work = [torch.empty(B, dims[j], shape[1], dtype=dtype, device=device) for j in range(depth)]
        self.grads = [] if self.fused_gd else [torch.empty_like(x) for x in self.layers]
        self.r_out = torch.empty(B, *shape, dtype=dtype, device=device) if self.obs.kind == "completion" else None
        self.prefix: list[torch.Tensor] = []
        self._refresh()

    # --- derived from `active` -------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        active = torch.as_tensor(self.active, device=self.device)
        on = active.to(self.dtype).view(-1, 1, 1)
        self.lr_eff = self.lr * on  # a stopped run takes zero steps
        step = self.lr_eff if self.fused_gd else on  # plain GD: the step is folded into the gradient
        self.gradient_factor = self.obs.gradient_scale * step
        self.penalty_factor = self.penalty_weight * step
        self.running = active.nonzero().view(-1)
        self.n_active = int(self.active.sum())
        # the stop test watches stop_loss < loss <= limit on the running runs only
        self._low = np.where(self.active, self.stop_loss, -math.inf).tolist()
        self._high = np.where(self.active, self.limit, math.inf).tolist()

    # --- one step ----------------------------------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        """The end-to-end matrices W (B, n_rows, n_cols), keeping the prefix products for the backward pass."""
        self.prefix = models.prefix_products(self.layers, out=self.prefix_out)
        return self.prefix[-1]

    def loss(self, w: torch.Tensor, t: int, residual: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """(loss (B,), R, (penalty value, penalty gradient) or None). At step 0 it fixes the divergence limits.
        ``residual``: (loss, R) already computed for this batch (batches in lockstep share one operator pass)."""
        loss, r = self.obs.residual(w, out=self.r_out) if residual is None else residual
        if t == 0:
            self.limit = objective.divergence_limit(loss, self.divergence_factor).cpu().double().numpy()
            self._refresh()
        if self.penalty is None:
            return loss, r, None
        if self.n_active == self.size:
            return loss, r, penalties.value_and_grad(objective.finite_or_zero(w), self.penalty, self.penalty_options)
        idx = self.running  # only the running runs: a stopped run takes no step, and its penalty is not logged
        val, grad = penalties.value_and_grad(objective.finite_or_zero(w[idx]), self.penalty, self.penalty_options)
        return (loss, r, (torch.zeros(self.size, dtype=self.dtype, device=self.device).index_copy_(0, idx, val),
                          torch.zeros_like(w).index_copy_(0, idx, grad)))

    def may_stop(self, t: int, loss: torch.Tensor) -> bool:
        """True if some run may stop at t: a budget ends, or a loss is not in (stop_loss, limit] (NaN is not).
        Compared on the host: B floats, cheaper than tensor ops (the thresholds are the tensors' own values)."""
        return t in self.budgets or not all(
            lo < x <= hi for x, lo, hi in zip(loss.tolist(), self._low, self._high))

    def log(self, t: int, loss: torch.Tensor, penalty: tuple | None, logged: bool) -> list[tuple[int, str, dict]]:
        """Record the metrics of the running runs at step t (every run if ``logged``, else those that stop) and
        decide which runs stop. Returns (run, reason, last values) for each stopping run, and deactivates them."""
        loss_h = loss.detach().cpu().double().numpy()
        bad = ~(loss_h <= self.limit)  # objective.is_diverged, on the host copies
        stopping = self.active & ((loss_h <= self.stop_loss) | bad | (self.max_steps <= t))
        with torch.no_grad():  # a diverged run's matrix may hold inf/NaN: measure zeros instead, never log them
            found = self.obs.metrics(objective.finite_or_zero(self.prefix[-1]),
                                     [objective.finite_or_zero(x) for x in self.layers])
        found["train_loss"] = loss
        if penalty is not None:
            found["penalty"] = penalty[0]
            found["objective"] = loss + self.penalty_weight.view(-1) * penalty[0]
        host = {k: x.detach().cpu().double().numpy() for k, x in found.items()}
        plateau = np.zeros(self.size, dtype=bool)
        scale = np.zeros(self.size, dtype=bool)
        for b in np.flatnonzero(self.active & (logged | stopping) & ~bad):
            self.rows[b].append({"step": t, **{k: float(x[b]) for k, x in host.items()}})
            if not stopping[b] and self.rows[b][-1]["frobenius_norm"] > self.scale_limit[b]:
                scale[b] = stopping[b] = True
            elif self.configs[b].stop_plateau > 0 and not stopping[b] and _plateau(self.rows[b], self.configs[b]):
                plateau[b] = stopping[b] = True
        stopped = []
        for b in np.flatnonzero(stopping):
            reason = ("diverged" if bad[b] else "scale" if scale[b] else "plateau" if plateau[b] else
                      "stop_loss" if loss_h[b] <= self.configs[b].stop_loss else "max_steps")
            last = ({**{k: math.nan for k in host}, "train_loss": float(loss_h[b])} if bad[b]  # unmeasured
                    else self.rows[b][-1])
            stopped.append((int(b), reason, last))
        if stopped:
            self._deactivate(np.flatnonzero(stopping), np.flatnonzero(stopping & bad))
        return stopped

    def _deactivate(self, stopping: np.ndarray, diverged: np.ndarray) -> None:
        self.active[stopping] = False
        if diverged.size:  # keep NaN/inf out of the batch; the run's state was recorded before this
            di = torch.as_tensor(diverged, device=self.device)
            for layer in self.layers:
                layer[di] = 0.0
            self.opt.reset(di)
        self._refresh()

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def snapshot(self, b: int, t: int, elapsed: float) -> dict[str, Any]:
        """What run b needs to go on from step t (its layers theta_t, optimizer state, divergence limit, history)."""
        return {"t": t, "elapsed": elapsed, "layers": [x[b].detach().cpu().clone() for x in self.layers],
                "optimizer_t": self.opt.t,
                "optimizer_state": [[x[b].detach().cpu().clone() for x in group] for group in self.opt.state],
                "limit": float(self.limit[b]), "rows": list(self.rows[b])}

    def restore(self, b: int, state: dict[str, Any]) -> None:
        """Put run b back where :meth:`snapshot` left it (the caller refreshes once all runs are restored)."""
        for x, saved in zip(self.layers, state["layers"]):
            x[b].copy_(saved)
        self.opt.t = int(state["optimizer_t"])
        for group, saved_group in zip(self.opt.state, state["optimizer_state"]):
            for x, saved in zip(group, saved_group):
                x[b].copy_(saved)
        self.limit[b] = state["limit"]
        self.rows[b] = list(state["rows"])

    def running_only(self, t: int) -> tuple[Batch, list[int]]:
        """A batch of this one's running runs alone, each in its state at step t (what a checkpoint holds, put back
        as a resumed call puts it back: :meth:`snapshot`, :meth:`restore`), and their positions here. The loop
        swaps it in once half a batch has stopped, so the finished runs no longer take part in the products."""
        kept = np.flatnonzero(self.active).tolist()
        states = [self.snapshot(b, t, 0.0) for b in kept]
        operator = (self.obs.a, self.obs.y) if self.obs.kind == "sensing" else None
        smaller = Batch([self.problems[b] for b in kept], [self.configs[b] for b in kept], self.device, operator)
        for j, state in enumerate(states):
            smaller.restore(j, state)
        smaller._refresh()
        return smaller, kept

    def layers_of(self, b: int) -> list[torch.Tensor]:
        return [layer[b].detach().to("cpu").clone() for layer in self.layers]

    def step(self, r: torch.Tensor, penalty: tuple | None) -> None:
        """One update of every running run: G = dL/dW (+ the weighted penalty gradient), then the backward pass."""
        g = r.mul_(self.gradient_factor)
        if penalty is not None:
            g.addcmul_(penalty[1], self.penalty_factor)
        if not self.fused_gd:
            models.layer_grads(self.layers, self.prefix, g, out=self.grads, work=self.work)
            self.opt.step(self.layers, self.grads, self.lr_eff)
            return
        # plain GD, fused: mirrors models.layer_grads (the step is in g), each layer updated once its gradient is
        # taken and the product passed down from its old value (tests/test_models.py holds the two equal)
        a = g
        for j in range(self.depth - 1, 0, -1):
            nxt = torch.bmm(self.layers[j].mT, a, out=self.work[j])
            self.layers[j].baddbmm_(a, self.prefix[j - 1].mT, alpha=-1.0)
            a = nxt
        self.layers[0].sub_(a)


def wants_steps_taken(on_progress: Callable[..., None] | None) -> bool:
    """Whether a progress callback takes a third argument, the run-steps taken (:func:`train`'s ``on_progress``)."""
    if on_progress is None:
        return False
    import inspect

    try:
        inspect.signature(on_progress).bind(0, 0, 0)
    except (TypeError, ValueError):
        return False
    return True


class _Progress:
    """Progress of one ``train`` call over all its runs, reported to ``on_progress`` or a tqdm bar.

    Each part of the call (the whole batch, or one sub-batch per thread) reports through its own :meth:`part`,
    with its local run indices; the totals are kept here under a lock. ``on_progress`` receives the run-steps done
    since its last call (a run that stops early also counts the steps it will not take) and the runs finished, and
    if it takes a third argument the run-steps actually taken since its last call (a stopped run counts the steps
    it took); the bar shows the steps of the horizon reached by the slowest part and the runs still active.
    """

    def __init__(self, max_steps: Sequence[int], on_progress: Callable[..., None] | None, bar: bool,
                 description: str, threads: int = 1) -> None:
        import threading

        self.max_steps, self.on_progress = [int(m) for m in max_steps], on_progress
        self.with_taken = wants_steps_taken(on_progress)
        self.horizon = max(self.max_steps)
        self.lock = threading.Lock()
        self.bar = None
        if bar and on_progress is None:
            from tqdm.auto import tqdm

            n = len(self.max_steps)
            where = f", {threads} threads" if threads > 1 else ""
            self.bar = tqdm(total=self.horizon, desc=f"{description} ({n} run{'s' * (n > 1)}{where})", unit="step",
                            leave=False)
        self.done = [0] * len(self.max_steps)  # run-steps counted per run (a stopped run: its whole budget)
        self.taken = [0] * len(self.max_steps)  # run-steps taken per run (a stopped run: the steps it took)
        self.finished = [False] * len(self.max_steps)
        self.reached: dict[int, int] = {}  # step reached per part
        self.active: dict[int, int] = {}  # runs active per part
        self.reported_steps = self.reported_runs = self.reported_taken = 0

    def part(self, idx: Sequence[int]) -> Callable[..., None]:
        """``report(t_done, finished, n_active, force=False)`` for the part training runs ``idx`` (in that order),
        throttled to about one report per 1000 steps of the part. ``finished[b]`` is true (a finished Run, or True)
        for each run of the part that has stopped: the loop passes its list of runs as it is, read only when the
        report is made (a finished Run also gives the steps it took)."""
        key, idx, nxt = len(self.reached), list(idx), [1000]
        self.reached[key], self.active[key] = 0, len(idx)

        def report(t_done: int, finished: Sequence[bool], n_active: int, force: bool = False) -> None:
            if t_done < nxt[0] and not force:
                return
            nxt[0] = t_done + 1000
            with self.lock:
                for i, done in zip(idx, finished):
                    self.finished[i] = self.finished[i] or bool(done)
                    self.done[i] = self.max_steps[i] if self.finished[i] else min(t_done, self.max_steps[i])
                    if isinstance(done, Run):
                        self.taken[i] = min(int(done.summary["steps"]), self.max_steps[i])
                    elif not self.finished[i]:
                        self.taken[i] = min(t_done, self.max_steps[i])
                self.reached[key] = self.horizon if n_active == 0 else t_done
                self.active[key] = n_active
                self._emit()

        return report

    def _emit(self) -> None:
        steps, runs, taken = sum(self.done), sum(self.finished), sum(self.taken)
        if self.on_progress is not None:
            args = (steps - self.reported_steps, runs - self.reported_runs)
            self.on_progress(*args, taken - self.reported_taken) if self.with_taken else self.on_progress(*args)
        elif self.bar is not None:
            self.bar.update(min(self.reached.values()) - self.bar.n)
            self.bar.set_postfix(active=sum(self.active.values()), refresh=False)
        self.reported_steps, self.reported_runs, self.reported_taken = steps, runs, taken

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    problems: Problem | Sequence[Problem],
    configs: Sequence[RunConfig],
    *,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    description: str = "train",
    on_finish: Callable[[int, Run], None] | None = None,
    on_progress: Callable[..., None] | None = None,
    checkpoints: Any = None,
) -> list[Run]:
    """Train a batch of runs together; returns one Run per config, in order.

    problems: one problem shared by all runs, or one per run (same kind and shape).
    configs: every config must share ``batch_key()``, except for sensing runs in one dtype: those train as one
        batch per key and problem object, stepped in lockstep, the runs on one problem with one pass of its
        measurement operator per step (each run's numbers are those it has alone). Validated here unless
        ``grid``/``sweep`` did it already.
    device: default ``$MCREG_DEVICE``, else CUDA when available, else CPU.
    on_finish(b, run): called as soon as run b stops (the sweep's cache stores it there).
    on_progress(run_steps, runs_finished): called about every 1000 steps with the run-steps done since the last
        call (a run that stops early also reports the steps it will not take); replaces this call's own bar. A
        callable that takes a third argument also gets the run-steps actually taken since the last call (a run
        that stops early counts only the steps it took): a rate of work, where ``run_steps`` is a count of the
        budget used up.
    checkpoints: an object with ``load(i)``, ``save(i, state)`` and ``drop(i)`` for run i of this call (the sweep
        gives :class:`mcreg_lib.cache.Checkpoints`): every ``$MCREG_CHECKPOINT_SECONDS`` the unfinished runs'
        states are saved, a run's is dropped once it stops, and a call whose runs (all of them, or all of a
        thread's part) have checkpoints at one step goes on from that step, with the numbers it would have had.

    A completion batch on a CPU with several torch threads trains as one sub-batch per thread (:func:`_chunks`);
    each run's numbers are those it has in one batch on one thread.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty: give at least one RunConfig")
    problems = [problems] * len(configs) if isinstance(problems, Problem) else list(problems)
    if not problems or not isinstance(problems[0], Problem):
        v.fail("problem", problems[0] if problems else problems, "a mcreg_lib Problem")
    configs = [c.validated(problems[0].shape) for c in configs]
    _check_batch(problems, configs)
    device = settings.device() if device is None else torch.device(device)
    show = settings.progress_default() if progress is None else bool(progress)
    chunks = _chunks(problems, configs, device)
    tracker = _Progress([c.max_steps for c in configs], on_progress, show, description, len(chunks))
    try:
        if len(chunks) > 1:
            return _train_in_threads(problems, configs, chunks, device, tracker, on_finish, checkpoints)
        return _loop(problems, configs, device, tracker.part(chunks[0]), on_finish, None, len(configs),
                     checkpoints, chunks[0])
    finally:
        tracker.close()


def _chunks(problems: Sequence[Problem], configs: Sequence[RunConfig], device: torch.device) -> list[list[int]]:
    """How a batch is split across CPU threads: one chunk per thread (runs dealt out in turn) when the caller has
    several threads, else one chunk (the whole batch). Split this way every part of the step (products,
    decompositions, updates) runs on all cores with no synchronization between them, and each thread's layers stay
    in its own core's caches: a penalized batch, dominated by one decomposition per run, gained 1.25x to 1.65x on
    2 cores; unpenalized completion batches 1.11x to 1.14x (depth 2 to 4, GD and normalized GD, batches of 12 to
    32: README, design notes). Sensing batches stay whole: their runs share one measurement operator, taken in
    chunks of 48 runs (objective.shared_operator); split, each part would be padded to 48 and read it again. On a
    CUDA device the batch stays whole."""
    k = min(_threads.cpu_workers(), len(configs))
    if device.type != "cpu" or problems[0].kind == "sensing" or k < 2:
        return [list(range(len(configs)))]
    return [list(range(i, len(configs), k)) for i in range(k)]


def _train_in_threads(problems: list[Problem], configs: list[RunConfig], chunks: list[list[int]],
                      device: torch.device, progress: _Progress,
                      on_finish: Callable[[int, Run], None] | None, checkpoints: Any = None) -> list[Run]:
    """Train each chunk as its own batch in a worker thread with one torch thread. A run's numbers are those of the
    same run in one batch on one thread (tests/test_training.py). Callbacks are serialized; an exception (or an
    interrupt) in any chunk stops the others at their next step."""
    import concurrent.futures as cf
    import threading

    lock, cancel = progress.lock, threading.Event()  # one lock: on_finish and on_progress never run at once

    def work(idx: list[int], report: Callable[..., None]) -> list[Run]:
        def finished(b: int, run: Run) -> None:
            if on_finish is not None:
                with lock:
                    on_finish(idx[b], run)

        return _loop([problems[i] for i in idx], [configs[i] for i in idx], device, report, finished, cancel,
                     len(configs), checkpoints, idx)

    out: list[Run | None] = [None] * len(configs)
    pool = cf.ThreadPoolExecutor(len(chunks), initializer=_threads.one_thread, thread_name_prefix="mcreg-train")
    try:
        futures = [pool.submit(work, idx, progress.part(idx)) for idx in chunks]
        cf.wait(futures, return_when=cf.FIRST_EXCEPTION)  # a failing chunk stops the others now, not at their end
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        for idx, future in zip(chunks, futures):
            for i, run in zip(idx, future.result()):
                out[i] = run
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True)
    return out  # type: ignore[return-value]


class _Cancelled(RuntimeError):
    pass


def _resume(batches: Sequence[Batch], groups: Sequence[Sequence[int]], checkpoints: Any,
            index: Sequence[int]) -> tuple[int, float]:
    """(step, seconds already spent) from the runs' checkpoints when every run (of every batch) has one at the same
    step, else (0, 0): runs go on from a checkpoint only all together."""
    if checkpoints is None:
        return 0, 0.0
    states = {i: checkpoints.load(index[i]) for group in groups for i in group}
    if any(s is None for s in states.values()) or len({s["t"] for s in states.values()}) != 1:  # type: ignore[index]
        return 0, 0.0
    for batch, group in zip(batches, groups):
        for b, i in enumerate(group):
            batch.restore(b, states[i])  # type: ignore[arg-type]
        batch._refresh()
    t = int(next(iter(states.values()))["t"])  # type: ignore[index]
    settings.log_event("resumed", kind="batch", runs=len(states), step=t)
    return t, max(float(s["elapsed"]) for s in states.values())  # type: ignore[index]


def _loop(problems: list[Problem], configs: list[RunConfig], device: torch.device, report: Callable[..., None],
          on_finish: Callable[[int, Run], None] | None, cancel: Any, batch_size: int, checkpoints: Any = None,
          index: Sequence[int] = ()) -> list[Run]:
    """The training loop (validated configs). One batch key: one :class:`Batch`. Sensing runs (:func:`_lockstep`):
    one Batch per key and problem (:func:`_groups`), stepped in lockstep, the losses of the batches on one problem
    taken in one pass of its operator per step (:func:`mcreg_lib.objective.shared_residuals`); each run's numbers
    are those it has alone. ``batch_size``: the runs of the whole ``train`` call, recorded in each run's summary (a
    sub-batch of a split call records the call's). ``checkpoints`` and ``index`` (run i of this loop is run
    ``index[i]`` of the call): see :func:`train`."""
    groups = _groups(problems, configs)
    batches: list[Batch] = []
    operators: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # a sensing problem's operator, held once
    for group in groups:
        p = problems[group[0]]
        batch = Batch([problems[i] for i in group], [configs[i] for i in group], device, operators.get(id(p)))
        if p.kind == "sensing":
            operators.setdefault(id(p), (batch.obs.a, batch.obs.y))
        batches.append(batch)
    horizon = max(int(batch.max_steps.max()) for batch in batches)
    logged = [set(log_steps(int(batch.max_steps.max()), batch.configs[0].logs_per_decade).tolist())
              for batch in batches]
    runs: list[Run | None] = [None] * len(configs)
    first, spent = _resume(batches, groups, checkpoints, index)
    start = time.perf_counter() - spent
    every = settings.checkpoint_seconds() if checkpoints is not None else math.inf
    saved = time.perf_counter()
    live = list(range(len(batches)))  # the batches with runs still going

    # A penalized step on the CPU is dominated by one decomposition per run. Called with several threads (a batch of
    # one run) the decompositions go to worker threads (mcreg_lib._threads) and this thread's own ops run on one
    # thread, leaving the cores to the workers; in a sub-batch of _train_in_threads everything runs inline.
    one_thread = any(c.penalty is not None for c in configs) and device.type == "cpu"
    with _threads.caller_on_one_thread() if one_thread else contextlib.nullcontext():
        for t in range(first, horizon + 1):  # at step t: evaluate theta_t, log or stop, then move to theta_{t+1}
            if cancel is not None and cancel.is_set():
                raise _Cancelled("another part of the batch failed or was interrupted")
            if t > first and time.perf_counter() - saved >= every:
                now = time.perf_counter()
                for k in live:
                    for b in np.flatnonzero(batches[k].active):
                        checkpoints.save(index[groups[k][b]], batches[k].snapshot(b, t, now - start))
                saved = time.perf_counter()
            for k in live:  # half a batch stopped: go on with its running runs alone (their numbers unchanged)
                if 2 * batches[k].n_active <= batches[k].size:
                    batches[k], kept = batches[k].running_only(t)
                    groups[k] = [groups[k][b] for b in kept]
            ws = [batches[k].forward() for k in live]
            given = _residuals(batches, live, ws)
            steps = {}
            for k, w, residual in zip(live, ws, given):
                batch = batches[k]
                loss, r, penalty = batch.loss(w, t, residual)
                steps[k] = (r, penalty)
                if t in logged[k] or batch.may_stop(t, loss):
                    for b, reason, last in batch.log(t, loss, penalty, t in logged[k]):
                        i = groups[k][b]
                        runs[i] = _finished_run(batch, b, t, reason, last, time.perf_counter() - start, batch_size)
                        if on_finish is not None:
                            on_finish(i, runs[i])
                        if checkpoints is not None:
                            checkpoints.drop(index[i])
            live = [k for k in live if batches[k].n_active]
            if not live or t == horizon:
                break
            for k in live:
                batches[k].step(*steps[k])
            report(t + 1, runs, sum(batches[k].n_active for k in live))  # runs as they are: read only on a report
    report(horizon, [run if run is not None else True for run in runs], 0, force=True)
    missing = [i for i, run in enumerate(runs) if run is None]
    if missing:  # pragma: no cover - every run stops by max_steps at the latest
        raise RuntimeError(f"runs {missing} did not stop")
    return runs  # type: ignore[return-value]


def _finished_run(batch: Batch, b: int, t: int, reason: str, last: dict[str, Any], seconds: float,
                  batch_size: int) -> Run:
    diverged = reason == "diverged"
    summary: dict[str, Any] = {"steps": t, "stop_reason": reason, "diverged": diverged,
                               "diverged_at": t if diverged else None, "seconds": seconds}
    summary.update({k: last[k] for k in SUMMARY_KEYS if k in last})
    summary.update({"batch_size": batch_size, "device": str(batch.device)})
    layers = batch.layers_of(b)
    return Run(batch.configs[b], dict(batch.problems[b].info), models.end_to_end(layers), layers,
               pd.DataFrame(batch.rows[b]), summary)


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
    stop_scale: float = 0.0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    cache: Any = "auto",
) -> Run:
    """Train one deep factorization on ``problem``; see RunConfig for the parameters.

    lr is the step on the mean squared error over the observed entries. Training stops when that loss falls to
    ``stop_loss``, after ``max_steps`` steps, or when the loss turns non-finite or exceeds ``divergence_factor``
    times its starting value (then ``summary['diverged']`` is True and ``summary['diverged_at']`` is the step).
    With ``stop_plateau = r > 0`` it also stops (``stop_reason`` 'plateau') at a logged step t >= 100 where the
    smallest objective (the loss plus the weighted penalty) logged in (t/2, t] is within a fraction r of the
    smallest logged in (t/4, t/2] (for a decreasing objective: its value at t against its value at t/2), once the
    training loss is below a thousandth of its start (a run stalled at a saddle is not done): for penalized
    runs, whose loss falls to zero long before the penalty has done its work. Off (0) by default: a run can sit on a
    plateau and then move again (the singular values are learned one at a time). With ``stop_scale = k > 0`` it
    stops (``stop_reason`` 'scale') at a logged step where ``||W||_F`` exceeds k times the data's scale
    (:func:`data_scale`, ``||W*||_F`` estimated from the observed values): a run whose matrix grows without bound in
    the unobserved entries while the observed ones stay fitted, which the loss-based divergence rule cannot see.

    The run trains in this process; with a cache (``cache``: as for ``mc.sweep``; by default the build's
    ``$MCREG_CACHE``) a finished run is read from it instead.
    """
    if not isinstance(problem, Problem):
        v.fail("problem", problem, "a mcreg_lib Problem (see completion_problem, problem_from_observations)")
    cfg = RunConfig(depth=depth, optimizer=optimizer, lr=lr, init_scale=init_scale, init=init, penalty=penalty,
                    penalty_weight=penalty_weight, max_steps=max_steps, stop_loss=stop_loss, seed=seed, width=width,
                    det_sign=det_sign, dtype=dtype, optimizer_options=_freeze(optimizer_options),
                    penalty_options=_freeze(penalty_options), divergence_factor=divergence_factor,
                    logs_per_decade=logs_per_decade, stop_plateau=stop_plateau, stop_scale=stop_scale)
    from .sweeps import sweep

    return sweep([(problem, cfg)], device=device, progress=progress, cache=cache, run_on="local").runs[0]


def summaries(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: its configuration, the problem's parameters (prefixed ``problem_``) and its summary."""
    rows = []
    for run in runs:
        row = run.config.as_dict()
        row.update({f"problem_{k}": val for k, val in run.problem_info.items()})
        row.update(run.summary)
        rows.append(row)
    return pd.DataFrame(rows)
