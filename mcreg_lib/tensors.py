"""Tensor completion by CP (tensor) factorization: the tensor experiment of Razin & Cohen, "Implicit Regularization
in Deep Learning May Not Be Explainable by Norms" (NeurIPS 2020).

The experiment: recover an order-N tensor ``T*`` (every mode of size n; order 4 with n = 8, 4096 entries, or its
order-3 variant) of CP rank 1 from m entries observed at random, by gradient descent on a CP factorization
``T = sum_r a_r^(1) o ... o a_r^(N)`` from a small init, and compare with the "linear" fit. Tensor factorization
corresponds to a non-linear network (one hidden layer with multiplicative pooling); its implicit regularization
drives towards low tensor rank, so it recovers the rank-1 target from far fewer entries than the linear fit.

The protocol, as the paper's released code runs it (numbers in brackets are the order-4 run's):

* Target: Gaussian CP factors (entries N(0, 1), one ``n x rank`` matrix per mode), the tensor rescaled to
  Frobenius norm 1. Observations: m distinct entries drawn uniformly (the first m of one random permutation of all
  entries, so the sets are nested in m for one problem seed).
* Model: CP factorization of width R = n^(N-1) (the largest possible tensor rank: [512], 64 for order 3); every
  factor entry drawn N(0, init_std^2) with init_std = 1e-3 (1e-2 also shown).
* Loss: mean squared error over the observed entries (not half the sum of squares).
* Optimizer: gradient descent with one adaptive step size per run ("GroupRMSprop", the library's
  ``normalized_gd``): ``lr / (sqrt(v_hat) + eps)`` with v an EMA (beta = 0.99, bias corrected) of the squared norm
  of the whole gradient, lr = 1e-2, eps = 1e-6; float32.
* Stop: when the loss is below 1e-6 at three checks in a row, one check every 100 steps (or after 10^6 steps).
* Reconstruction error: the paper's is ``||T - T*||_F / ||T*||_F``, *not* squared: ``relative_residual`` here (as
  ``mcreg_lib.metrics.relative_residual``); its square, the book's convention for matrices
  (``metrics.reconstruction_error``), is ``error_all``.
* "linear": the observed entries in place and zeros elsewhere (it memorizes the observations and predicts zero
  elsewhere). This is the minimal-Frobenius-norm tensor that fits the observations, the point to which gradient
  descent on the tensor's own entries (a linear model) converges from zero.
* Tensor rank: the smallest r for which CP-ALS (random Gaussian start, at most 1000 sweeps) reaches a mean squared
  error over all entries below tol = 1e-6, found by binary search over r in [1, n^(N-1)]. The tolerance is absolute
  (per entry): with ``||T*||_F = 1`` it allows a relative squared error of n^N * 1e-6 (0.4% for 8^4).

Reported (order 4, the paper's figure): tensor factorization reaches error ~10 at 100 observations, ~2.5e-4 at
500 and ~1e-6 from 1000 on, estimated rank 1 throughout; the linear fit keeps error near 1 up to ~3500
observations and its rank climbs to ~52 around 2000-2500 observations.

The paper's single stop check is at every 100th step and needs three in a row below the threshold; here it is
``stop_every = 100, stop_patience = 2`` (``stop_every = 1, stop_patience = 0`` stops at the first step at or below
``stop_loss``, the rule of :func:`mcreg_lib.train`). As in :func:`mcreg_lib.train`, a run ends in the state whose
loss met the rule (the paper's loop had already taken one more step).

Batching: many runs of the same order, mode size and width (seeds, observation counts, step sizes, init scales,
stop rules) train as one tensor program with a leading batch dimension; each run has its own observation mask and
stops on its own (a stopped run is frozen). The stop rules are evaluated on the device and read on the host only at
logged steps and every ``sync_every`` steps, so a GPU is not stalled every step; at those syncs the finished runs
leave the batch (their data, factors and optimizer state are dropped), so a long run does not carry finished ones.
On the CPU the loop runs on one thread by default (``threads=1``): its operations are small, and on a shared
machine a second OpenMP thread waiting for a busy core made steps several times slower.

Gradients are written out by hand: with the modes split in two groups, ``T`` unfolds to ``K_L K_R^T`` (Khatri-Rao
products of each group's factors), and for ``G = dL/dT`` the factor gradients come from ``G K_R`` and ``G^T K_L``
(three batched matrix products per step). ``gradients="autograd"`` gives the same numbers through autograd; on the
CPU it was 1.5-2x slower (order 4, width 512: 1.55 vs 2.50 ms of CPU time per step for 3 runs, 21 vs 33 ms for 45).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _validate as v
from . import metrics, objective, optimizers, settings
from .training import log_steps, wants_steps_taken

KIND = "tensor_completion"

#: The paper's protocol for the CP runs (the defaults of :class:`CPConfig`).
PAPER_INIT_SCALE = 1e-3
PAPER_LR = 1e-2
PAPER_OPTIMIZER = "normalized_gd"
PAPER_OPTIMIZER_OPTIONS = (("beta", 0.99), ("eps", 1e-6))
PAPER_STOP_LOSS = 1e-6
PAPER_STOP_EVERY = 100
PAPER_STOP_PATIENCE = 2
PAPER_MAX_STEPS = 1_000_000
PAPER_RANK_TOL = 1e-6
PAPER_ALS_MAX_ITER = 1000


# ------------------------------------------------------------------------------------------------------------------
# problems
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TensorProblem:
    """A tensor completion problem: entries ``T[idx] = values[i]`` of an order-``order`` tensor with modes of size n.

    indices: int64 (m,) flat (C-order) positions of the observed entries, sorted and distinct.
    values: float64 (m,) the observed values.
    target: float64 tensor of shape (n,) * order, the ground truth when known, else None.
    info: how the problem was made (parameters, seed); recorded with every result.
    """

    order: int
    n: int
    indices: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    kind = KIND

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) * self.order

    @property
    def numel(self) -> int:
        return self.n**self.order

    @property
    def n_observed(self) -> int:
        return int(self.values.shape[0])

    def multi_indices(self) -> torch.Tensor:
        """int64 (m, order): the observed entries' indices, one column per mode."""
        return torch.stack(torch.unravel_index(self.indices, self.shape), dim=1)

    def mask(self) -> torch.Tensor:
        """float64 tensor of the problem's shape: 1 on observed entries."""
        m = torch.zeros(self.numel, dtype=torch.float64)
        m[self.indices] = 1.0
        return m.view(self.shape)

    def observed_tensor(self) -> torch.Tensor:
        """float64 tensor of the problem's shape: the observed values in place, zero elsewhere."""
        out = torch.zeros(self.numel, dtype=torch.float64)
        out[self.indices] = self.values
        return out.view(self.shape)

    def fingerprint(self) -> str:
        """A SHA-256 of everything that defines the problem (used to key cached runs)."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.shape}".encode())
        for name in ("values", "indices", "target"):
            t = getattr(self, name)
            h.update(name.encode())
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def cp_tensor(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_r a_r^(1) o ... o a_r^(N)`` from factors (n_k, R) (or batched (B, n_k, R)), in C order."""
    batched = factors[0].dim() == 3
    fs = [f if batched else f[None] for f in factors]
    out = _khatri_rao(fs[:-1]) @ fs[-1].transpose(1, 2)  # (B, prod n_<N, n_N): the C-order tensor, unfolded
    out = out.reshape(out.shape[0], *[f.shape[1] for f in fs])
    return out if batched else out[0]


def low_cp_rank_target(order: int, n: int, rank: int, generator: torch.Generator, norm: float = 1.0) -> torch.Tensor:
    """A CP-rank-``rank`` tensor from N(0, 1) factors, rescaled to Frobenius norm ``norm`` (the paper's target)."""
    factors = [torch.randn(n, rank, generator=generator, dtype=torch.float64) for _ in range(order)]
    t = cp_tensor(factors)
    return t * (norm / torch.linalg.vector_norm(t))


def tensor_completion_problem(
    order: int = 4,
    n: int = 8,
    rank: int = 1,
    n_observed: int = 1000,
    seed: int = 0,
    *,
    target_norm: float = 1.0,
) -> TensorProblem:
    """Synthetic tensor completion: a random CP-rank-``rank`` target of Frobenius norm ``target_norm`` (the paper:
    1) and ``n_observed`` distinct entries drawn uniformly.

    The seed fixes the target and one random order of all entries; the observed entries are its first
    ``n_observed``, so for one seed the observation sets are nested and share the target (as in the paper, whose
    sweep trains every observation count on one saved tensor and one saved order of entries).
    """
    order = v.integer("order", order, 1)
    n = v.integer("n", n, 1)
    numel = n**order
    rank = v.integer("rank", rank, 1)
    n_observed = v.integer("n_observed", n_observed, 1, numel)
    seed = v.integer("seed", seed, 0)
    target_norm = v.positive("target_norm", target_norm)
    g = torch.Generator().manual_seed(seed)
    target = low_cp_rank_target(order, n, rank, g, target_norm)
    flat = torch.randperm(numel, generator=g)[:n_observed].sort().values
    info = {"maker": "tensor_completion_problem", "order": order, "n": n, "rank": rank, "n_observed": n_observed,
            "seed": seed, "target_norm": target_norm}
    return TensorProblem(order, n, flat, target.reshape(-1)[flat].clone(), target=target, info=info)


# ------------------------------------------------------------------------------------------------------------------
# configuration and results
# ------------------------------------------------------------------------------------------------------------------


def _freeze(opts: Any) -> tuple[tuple[str, float], ...] | None:
    if opts is None:
        return None
    if isinstance(opts, dict):
        return tuple(sorted(opts.items()))
    return tuple(sorted(tuple(o) for o in opts))


@dataclass(frozen=True)
class CPConfig:
    """Everything that defines a CP-factorization run besides the problem. Hashable; defaults are the paper's.

    width: the number of CP components R; None means n^(order-1), the paper's choice (the maximal tensor rank).
    init_scale: the standard deviation of every factor entry at init.
    lr: the step size on the mean squared error over the observed entries (the base step of ``normalized_gd``).
    optimizer: a :mod:`mcreg_lib.optimizers` name; the paper's is ``normalized_gd`` ("GroupRMSprop"), plain
        gradient descent is ``gd``.
    optimizer_options: None means the paper's (beta = 0.99, eps = 1e-6) for ``normalized_gd`` and torch's defaults
        otherwise; ``validated()`` fills them in.
    max_steps, stop_loss: stop after max_steps steps, or when the loss is <= stop_loss at ``stop_patience + 1``
        checks in a row, with a check at every step t where ``(t + 1) % stop_every == 0``.
    divergence_factor: a run diverges when its loss is non-finite or exceeds divergence_factor times
        max(its starting loss, 1) (the convention of :func:`mcreg_lib.train`).
    logs_per_decade: the history's resolution (see :func:`mcreg_lib.log_steps`).
    """

    width: int | None = None
    init_scale: float = PAPER_INIT_SCALE
    lr: float = PAPER_LR
    optimizer: str = PAPER_OPTIMIZER
    optimizer_options: tuple[tuple[str, float], ...] | None = None
    max_steps: int = PAPER_MAX_STEPS
    stop_loss: float = PAPER_STOP_LOSS
    stop_every: int = PAPER_STOP_EVERY
    stop_patience: int = PAPER_STOP_PATIENCE
    seed: int = 0
    dtype: str = "float32"
    divergence_factor: float = 1e6
    logs_per_decade: int = 20

    def validated(self, shape: tuple[int, ...] | None = None) -> CPConfig:
        """Check every field (raising a ValueError that names it) and fill the optimizer's options."""
        given = _freeze(self.optimizer_options)
        optimizer = v.choice("optimizer", self.optimizer, optimizers.OPTIMIZERS)
        if given is None:
            given = PAPER_OPTIMIZER_OPTIONS if optimizer == "normalized_gd" else ()
        opt = optimizers.options(optimizer, dict(given))
        return dataclasses.replace(
            self,
            width=None if self.width is None else v.integer("width", self.width, 1),
            init_scale=v.positive("init_scale", self.init_scale),
            lr=v.positive("lr", self.lr),
            optimizer=optimizer,
            optimizer_options=tuple(sorted(opt.items())),
            max_steps=v.integer("max_steps", self.max_steps, 0),
            stop_loss=v.real("stop_loss", self.stop_loss, 0.0),
            stop_every=v.integer("stop_every", self.stop_every, 1),
            stop_patience=v.integer("stop_patience", self.stop_patience, 0),
            seed=v.integer("seed", self.seed, 0),
            dtype=v.dtype_name(v.dtype(self.dtype)),
            divergence_factor=v.real("divergence_factor", self.divergence_factor, 1.0, strict_minimum=True),
            logs_per_decade=v.integer("logs_per_decade", self.logs_per_decade, 1, 1000),
        )

    def batch_key(self) -> tuple:
        """Runs with equal keys (and problems of equal order and mode size) can train in one batch."""
        return (self.width, self.optimizer, self.optimizer_options, self.dtype)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optimizer_options"] = None if self.optimizer_options is None else dict(self.optimizer_options)
        return d


@dataclass
class CPRun:
    """A finished CP run: the tensor and factors (CPU, the run's dtype), a tidy history, a summary."""

    config: CPConfig
    problem_info: dict[str, Any]
    tensor: torch.Tensor
    factors: list[torch.Tensor]
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.summary
        return (f"CPRun(width={s.get('width')}, optimizer={self.config.optimizer!r}, steps={s.get('steps')}, "
                f"stop_reason={s.get('stop_reason')!r}, train_loss={s.get('train_loss'):.3g}, "
                f"relative_residual={s.get('relative_residual')}, diverged={s.get('diverged')})")


def default_width(order: int, n: int) -> int:
    """n^(order-1): the largest possible CP rank of an order-``order`` tensor with modes of size n (paper's R)."""
    return n ** (order - 1)


def init_factors(order: int, n: int, width: int, init_scale: float, seed: int) -> list[torch.Tensor]:
    """Factors (n, width), every entry N(0, init_scale^2), in float64 on the CPU (same start on every device)."""
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    return [torch.randn(n, width, generator=g, dtype=torch.float64) * init_scale for _ in range(order)]


# ------------------------------------------------------------------------------------------------------------------
# the batched computation
# ------------------------------------------------------------------------------------------------------------------


def _khatri_rao(fs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, prod n_k, R): column-wise Kronecker product of (B, n_k, R) factors, the first factor's index slowest."""
    out = fs[0]
    for f in fs[1:]:
        out = (out[:, :, None, :] * f[:, None, :, :]).reshape(out.shape[0], -1, out.shape[-1])
    return out


def _group_grads(m: torch.Tensor, fs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Given M = dL/dK (B, prod n_k, R) for K = khatri_rao(fs), the gradients with respect to each factor.

    (Broadcast products and sums: on the CPU these are tens of times faster than the equivalent einsum.)
    """
    if len(fs) == 1:
        return [m]
    B, R, k = m.shape[0], m.shape[-1], len(fs)
    mv = m.view(B, *[f.shape[1] for f in fs], R)

    def spread(j: int) -> torch.Tensor:  # factor j as (B, 1, .., n_j, .., 1, R)
        shape = [B] + [1] * k + [R]
        shape[1 + j] = fs[j].shape[1]
        return fs[j].view(shape)

    out = []
    for j in range(k):
        others = [i for i in range(k) if i != j]
        prod = spread(others[0])
        for i in others[1:]:
            prod = prod * spread(i)
        out.append((mv * prod).sum(dim=[1 + i for i in others]))
    return out


class _Batch:
    """The observations of a batch of problems on the device, unfolded to (B|1, n^|left|, n^|right|)."""

    def __init__(self, problems: Sequence[TensorProblem], dtype: torch.dtype, device: torch.device) -> None:
        p0 = problems[0]
        self.order, self.n, self.B = p0.order, p0.n, len(problems)
        self.split = (p0.order + 1) // 2  # modes [0, split) on the rows, [split, order) on the columns
        self.rows, self.cols = p0.n**self.split, p0.n ** (p0.order - self.split)
        unique = [p0] if all(p is p0 for p in problems) else list(problems)

        def stack(fn):
            return torch.stack([fn(p).reshape(self.rows, self.cols) for p in unique]).to(device=device, dtype=dtype)

        self.m = torch.tensor([float(p.n_observed) for p in problems], dtype=dtype, device=device)
        self.mask = stack(lambda p: p.mask())
        self.neg_observed = stack(lambda p: p.observed_tensor()).neg_()
        self.target = stack(lambda p: p.target) if all(p.target is not None for p in unique) else None

    def select(self, keep: torch.Tensor, size: int) -> None:
        """Keep the runs ``keep`` (a batch of ``size`` runs) in every per-run tensor."""
        for name in ("m", "mask", "neg_observed", "target"):
            x = getattr(self, name, None)
            if x is not None and x.shape[0] == size:  # a problem shared by the batch is stored once
                setattr(self, name, x.index_select(0, keep))
        self.B = int(keep.numel())

    def unfold(self, factors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T unfolded (B, rows, cols), K_L, K_R)."""
        k_left = _khatri_rao(factors[: self.split])
        k_right = _khatri_rao(factors[self.split:])
        return torch.bmm(k_left, k_right.transpose(1, 2)), k_left, k_right

    def metrics(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"tensor_norm": t.square().sum((1, 2)).sqrt()}
        if self.target is not None:
            err2 = metrics.reconstruction_error(t, self.target)
            out["error_all"] = err2
            out["relative_residual"] = err2.sqrt()
            unobserved = 1.0 - self.mask
            err_u = metrics.reconstruction_error(t, self.target, unobserved)
            none_left = unobserved.sum((1, 2)) == 0  # every entry observed: no error to measure
            out["error_unobserved"] = err_u.masked_fill(none_left, math.nan)
        return out


def _factor_grads(data: _Batch, factors: list[torch.Tensor], k_left: torch.Tensor, k_right: torch.Tensor,
                  g: torch.Tensor) -> list[torch.Tensor]:
    """dL/d(factor) for every factor, given G = dL/dT unfolded (B, rows, cols)."""
    m_left = torch.bmm(g, k_right)  # dL/dK_L
    m_right = torch.bmm(g.transpose(1, 2), k_left)  # dL/dK_R
    return _group_grads(m_left, factors[: data.split]) + _group_grads(m_right, factors[data.split:])


def _loss_autograd(data: _Batch, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    t, _, _ = data.unfold(factors)
    r = torch.addcmul(data.neg_observed, data.mask, t)
    return r.square().sum((1, 2)) / data.m


@contextlib.contextmanager
def _cpu_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """Run the caller's torch ops on ``threads`` CPU threads (None: leave torch's setting)."""
    if threads is None or device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


FINAL_KEYS = ("steps", "stop_reason", "diverged", "diverged_at", "seconds")
_REASONS = {1: "stop_loss", 2: "max_steps", 3: "diverged"}
METRIC_KEYS = ("train_loss", "relative_residual", "error_all", "error_unobserved", "tensor_norm")


def _check_batch(problems: Sequence[TensorProblem], configs: Sequence[CPConfig]) -> None:
    if len(problems) != len(configs):
        raise ValueError(f"need one problem per config, got {len(problems)} problems and {len(configs)} configs")
    p0, c0 = problems[0], configs[0]
    for i, (p, c) in enumerate(zip(problems, configs)):
        if (p.order, p.n) != (p0.order, p0.n):
            raise ValueError(f"run {i}: problem of order {p.order} with modes of size {p.n} cannot share a batch "
                             f"with order {p0.order}, size {p0.n}")
        if c.batch_key() != c0.batch_key():
            raise ValueError(f"run {i}: config {c.batch_key()} cannot share a batch with {c0.batch_key()}")


def train_cp(
    problems: TensorProblem | Sequence[TensorProblem],
    configs: CPConfig | Sequence[CPConfig],
    *,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    description: str = "train_cp",
    on_finish: Callable[[int, CPRun], None] | None = None,
    on_progress: Callable[..., None] | None = None,
    gradients: str = "manual",
    sync_every: int = 100,
    threads: int | None = 1,
) -> list[CPRun]:
    """Train a batch of CP factorizations together; returns one CPRun per config, in order.

    problems: one problem shared by all runs, or one per run (same order and mode size; observations may differ).
    configs: validated or not; all must share ``batch_key()`` (width, optimizer and its options, dtype).
    device: CPU by default (pass "cuda" for a GPU).
    on_finish(b, run): called as soon as run b is known to have stopped (within ``sync_every`` steps).
    on_progress(run_steps, runs_finished[, steps_taken]): as in :func:`mcreg_lib.train`; replaces this call's own
        bar.
    gradients: "manual" (hand-written, the default) or "autograd" (same numbers, for checks and timing).
    sync_every: the host reads the stop rules every this many steps (and at every logged step).
    threads: CPU threads for the loop (default 1: the per-step ops are small, and on a shared machine OpenMP
        threads spin-waiting for a busy core cost far more than they gain); None keeps torch's setting.
    """
    if isinstance(configs, CPConfig):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty: give at least one CPConfig")
    problems = [problems] * len(configs) if isinstance(problems, TensorProblem) else list(problems)
    if not problems:
        v.fail("problems", problems, "a TensorProblem or one per config")
    for i, (p, c) in enumerate(zip(problems, configs)):
        if not isinstance(p, TensorProblem):
            v.fail(f"problems[{i}]", p, "a TensorProblem (see tensor_completion_problem)")
        if not isinstance(c, CPConfig):
            v.fail(f"configs[{i}]", c, "a CPConfig")
    configs = [c.validated(problems[0].shape) for c in configs]
    _check_batch(problems, configs)
    gradients = v.choice("gradients", gradients, ("manual", "autograd"))
    sync_every = v.integer("sync_every", sync_every, 1)
    threads = None if threads is None else v.integer("threads", threads, 1)
    device = torch.device("cpu") if device is None else torch.device(device)
    with _cpu_threads(threads, device):
        return _train(problems, configs, device, progress, description, on_finish, on_progress, gradients,
                      sync_every)


def _train(problems, configs, device, progress, description, on_finish, on_progress, gradients, sync_every):
    progress = settings.progress_default() if progress is None else bool(progress)
    c0, B, p0 = configs[0], len(configs), problems[0]
    dtype = v.dtype(c0.dtype)
    order, n = p0.order, p0.n
    width = default_width(order, n) if c0.width is None else c0.width

    inits = [init_factors(order, n, width, c.init_scale, c.seed) for c in configs]
    factors = [torch.stack([fs[k] for fs in inits]).to(device=device, dtype=dtype) for k in range(order)]
    data = _Batch(problems, dtype, device)
    opt = optimizers.make(c0.optimizer, factors, dict(c0.optimizer_options))

    def col(values, dt=dtype):
        return torch.tensor(values, dtype=dt, device=device)

    # Per-run state on the device, one row per run still in the batch; `slots[i]` is the run in row i.
    # Finished runs leave the batch at the next host sync (their state is frozen from their stop on).
    state = {
        "lr": col([c.lr for c in configs]).view(B, 1, 1),
        "stop_loss": col([c.stop_loss for c in configs]),
        "factor": col([c.divergence_factor for c in configs]),
        "stop_every": col([c.stop_every for c in configs], torch.int64),
        "patience": col([c.stop_patience for c in configs], torch.int64),
        "max_steps": col([c.max_steps for c in configs], torch.int64),
        "active": torch.ones(B, dtype=torch.bool, device=device),
        "streak": torch.zeros(B, dtype=torch.int64, device=device),
        "stop_step": torch.full((B,), -1, dtype=torch.int64, device=device),
        "reason": torch.zeros(B, dtype=torch.int64, device=device),
        "stop_value": torch.zeros(B, dtype=dtype, device=device),
        "limit": torch.full((B,), math.inf, dtype=dtype, device=device),
    }
    slots = np.arange(B)
    max_steps = [c.max_steps for c in configs]
    horizon = max(max_steps)
    logged_sets = [set(log_steps(c.max_steps, c.logs_per_decade).tolist()) for c in configs]
    zero_i = torch.zeros((), dtype=torch.int64, device=device)

    def schedule() -> tuple[set[int], set[int], list[int], dict[int, torch.Tensor]]:
        """The steps that need the host, the max_steps stops and the stop-check masks of the runs in the batch."""
        cfgs = [configs[b] for b in slots]
        every_values = sorted({c.stop_every for c in cfgs})
        return (set().union(*[logged_sets[b] for b in slots]), {c.max_steps for c in cfgs}, every_values,
                {se: state["stop_every"] == se for se in every_values})

    logged, stop_at, every_values, every_masks = schedule()

    rows: list[list[dict[str, Any]]] = [[] for _ in range(B)]
    runs: list[CPRun | None] = [None] * B
    start = time.perf_counter()
    bar = None
    if progress and on_progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=horizon, desc=f"{description} ({B} run{'s' * (B > 1)})", unit="step", leave=False)
    reported, reported_runs, reported_taken = 0, 0, 0
    with_taken = wants_steps_taken(on_progress)

    def report(t_done: int) -> None:
        nonlocal reported, reported_runs, reported_taken
        budget = sum(m if runs[b] is not None else min(t_done, m) for b, m in enumerate(max_steps))
        taken = sum(min(int(r.summary["steps"]), m) if r is not None else min(t_done, m)
                    for r, m in zip(runs, max_steps))
        n_done = sum(r is not None for r in runs)
        if on_progress is not None:
            args = (budget - reported, n_done - reported_runs)
            on_progress(*args, taken - reported_taken) if with_taken else on_progress(*args)
        elif bar is not None:
            bar.update(t_done - bar.n)
            bar.set_postfix(active=B - n_done, refresh=False)
        reported, reported_runs, reported_taken = budget, n_done, taken

    def finish(i: int, host: dict[str, np.ndarray], step: int, why: int, value: float) -> None:
        b = int(slots[i])
        diverged = why == 3
        final = {"steps": step, "stop_reason": _REASONS[why], "diverged": diverged,
                 "diverged_at": step if diverged else None, "seconds": time.perf_counter() - start}
        if diverged:  # the loss that tripped the rule; the state was zeroed, every other metric is unmeasured
            last = {k: math.nan for k in host}
        else:  # the state is frozen since `step`: the metrics measured now are those of that step
            last = {k: float(x[i]) for k, x in host.items()}
        last["train_loss"] = value
        if not diverged and (not rows[b] or rows[b][-1]["step"] != step):
            rows[b].append({"step": step, **last})
        summary: dict[str, Any] = {k: final[k] for k in FINAL_KEYS}
        for key in METRIC_KEYS:
            if key in last:
                summary[key] = last[key]
        summary.update({"width": width, "batch_size": B, "device": str(device)})
        fs = [f[i].detach().to("cpu").clone() for f in factors]
        runs[b] = CPRun(configs[b], dict(problems[b].info), cp_tensor(fs), fs, pd.DataFrame(rows[b]), summary)
        if on_finish is not None:
            on_finish(b, runs[b])

    def compact(keep_rows: np.ndarray) -> None:
        """Drop the finished runs from every per-run tensor (the data, the factors, the optimizer's state)."""
        nonlocal factors, slots
        keep = torch.as_tensor(keep_rows, device=device)
        size = len(slots)
        for key in state:
            state[key] = state[key].index_select(0, keep)
        factors = [f.index_select(0, keep) for f in factors]
        data.select(keep, size)
        _select_state(opt, keep, size)
        slots = slots[keep_rows]

    t = 0
    leaving: np.ndarray | None = None  # the rows to keep once this step is taken
    for t in range(horizon + 1):
        Bc = len(slots)
        st = state
        # --- evaluate theta_t --------------------------------------------------------------------------------------
        if gradients == "autograd":
            leaves = [f.detach().requires_grad_() for f in factors]
            with torch.enable_grad():
                loss_g = _loss_autograd(data, leaves)
                grads_ag = torch.autograd.grad(loss_g.sum(), leaves)
            loss = loss_g.detach()
            tens = r = None
        else:
            tens, k_left, k_right = data.unfold(factors)
            r = torch.addcmul(data.neg_observed, data.mask, tens)  # (T - observed) on the observed entries
            loss = torch.bmm(r.view(Bc, 1, -1), r.view(Bc, -1, 1)).view(Bc).div_(data.m)
        if t == 0:
            st["limit"] = objective.divergence_limit(loss, st["factor"])
        # --- stop rules, on the device -------------------------------------------------------------------------------
        bad = objective.is_diverged(loss, st["limit"])
        due = [se for se in every_values if (t + 1) % se == 0]
        converged = None
        if due:
            check = every_masks[due[0]]
            for se in due[1:]:
                check = check | every_masks[se]
            st["streak"] = torch.where(check, torch.where(loss <= st["stop_loss"], st["streak"] + 1, zero_i),
                                       st["streak"])
            converged = check & (st["streak"] > st["patience"])
        stop_now = bad if converged is None else bad | converged
        if t in stop_at:
            stop_now = stop_now | (st["max_steps"] <= t)
        stopping = st["active"] & stop_now
        why = torch.where(bad, 3, 2) if converged is None else torch.where(bad, 3, torch.where(converged, 1, 2))
        st["reason"] = torch.where(stopping, why, st["reason"])
        st["stop_step"] = torch.where(stopping, t, st["stop_step"])
        st["stop_value"] = torch.where(stopping, loss, st["stop_value"])
        was_active = st["active"]
        st["active"] = was_active & ~stopping
        dead = (stopping & bad).view(Bc, 1, 1)
        for f in factors:  # keep NaN/inf out of the batch: a diverged run's state is zeroed
            f.masked_fill_(dead, 0.0)
        _fill_state(opt, dead)
        # --- host: log, finish, compact ------------------------------------------------------------------------------
        if t in logged or t % sync_every == 0 or t >= horizon:
            if tens is None:
                tens = data.unfold(factors)[0].detach()
            with torch.no_grad():
                found = data.metrics(tens.masked_fill(dead, 0.0))
            found["train_loss"] = loss
            host = {k: x.detach().cpu().double().numpy() for k, x in found.items()}
            was_h, bad_h = was_active.cpu().numpy(), bad.cpu().numpy()
            step_h, reason_h = st["stop_step"].cpu().numpy(), st["reason"].cpu().numpy()
            value_h = st["stop_value"].cpu().double().numpy()
            if t in logged:
                for i, b in enumerate(slots):
                    if was_h[i] and not bad_h[i] and t in logged_sets[b]:
                        rows[b].append({"step": t, **{k: float(x[i]) for k, x in host.items()}})
            done = step_h >= 0
            for i in np.flatnonzero(done):
                finish(int(i), host, int(step_h[i]), int(reason_h[i]), float(value_h[i]))
            if t % sync_every == 0 or t >= horizon:
                report(t)
            if done.all():
                break
            if done.any():
                leaving = np.flatnonzero(~done)
        if t >= horizon:
            break
        # --- move to theta_{t+1} -----------------------------------------------------------------------------------
        frozen = (~st["active"]).view(Bc, 1, 1)
        if gradients == "autograd":
            grads = [gr.masked_fill(frozen, 0.0) for gr in grads_ag]
        else:
            g = r.masked_fill_(frozen, 0.0).mul_((2.0 / data.m).view(Bc, 1, 1))
            grads = _factor_grads(data, factors, k_left, k_right, g)
        opt.step(factors, grads, st["lr"] * (~frozen).to(dtype))
        if leaving is not None:  # after the step, which left the finished runs where they were
            compact(leaving)
            logged, stop_at, every_values, every_masks = schedule()
            leaving = None
    report(horizon)
    if bar is not None:
        bar.close()
    missing = [b for b in range(B) if runs[b] is None]
    if missing:  # pragma: no cover - every run stops by max_steps at the latest
        raise RuntimeError(f"runs {missing} did not stop")
    return [r for r in runs if r is not None]


def _fill_state(opt: optimizers.BatchedOptimizer, dead: torch.Tensor) -> None:
    """Zero the optimizer's per-run state of the runs flagged in ``dead`` (B, 1, 1)."""
    for buffers in opt.state:
        for buf in buffers:
            buf.masked_fill_(dead.view(dead.shape[0], *[1] * (buf.dim() - 1)), 0.0)


def _select_state(opt: optimizers.BatchedOptimizer, keep: torch.Tensor, size: int) -> None:
    """Keep the rows ``keep`` of every per-run tensor the optimizer holds (in attributes or lists of them)."""
    done: dict[int, torch.Tensor] = {}

    def remap(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.dim() > 0 and obj.shape[0] == size:
            if id(obj) not in done:
                done[id(obj)] = obj.index_select(0, keep)
            return done[id(obj)]
        if isinstance(obj, list):
            for j, item in enumerate(obj):
                obj[j] = remap(item)
        return obj

    for name, value in list(vars(opt).items()):
        setattr(opt, name, remap(value))


def fit_cp(problem: TensorProblem, *, device: str | torch.device | None = None, progress: bool | None = None,
           gradients: str = "manual", threads: int | None = 1, **config: Any) -> CPRun:
    """Train one CP factorization on ``problem``; keyword arguments are :class:`CPConfig` fields."""
    if not isinstance(problem, TensorProblem):
        v.fail("problem", problem, "a TensorProblem (see tensor_completion_problem)")
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(CPConfig)})
    if unknown:
        v.fail(unknown[0], config[unknown[0]], f"a CPConfig field {[f.name for f in dataclasses.fields(CPConfig)]}")
    if "optimizer_options" in config:
        config["optimizer_options"] = _freeze(config["optimizer_options"])
    return train_cp(problem, [CPConfig(**config)], device=device, progress=progress, gradients=gradients,
                    threads=threads, description="fit_cp")[0]


def summaries(runs: Sequence[CPRun]) -> pd.DataFrame:
    """One row per run: its configuration, the problem's parameters (prefixed ``problem_``) and its summary."""
    out = []
    for run in runs:
        row = run.config.as_dict()
        row.update({f"problem_{k}": val for k, val in run.problem_info.items()})
        row.update(run.summary)
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------------------------
# the linear baseline and metrics of any tensor
# ------------------------------------------------------------------------------------------------------------------


def linear_baseline(problem: TensorProblem) -> torch.Tensor:
    """The paper's "linear" fit: the observed entries in place, zeros elsewhere (float64).

    It is the minimal-Frobenius-norm tensor agreeing with the observations (any other differs from it only on
    unobserved entries, which adds to the norm), the limit of gradient descent on the tensor's entries from zero.
    """
    if not isinstance(problem, TensorProblem):
        v.fail("problem", problem, "a TensorProblem (see tensor_completion_problem)")
    return problem.observed_tensor()


def tensor_metrics(problem: TensorProblem, tensor: torch.Tensor) -> dict[str, float]:
    """train_loss, relative_residual (the paper's reconstruction error, not squared), error_all, error_unobserved and tensor_norm of
    any tensor, by the definitions the training loop uses."""
    if not isinstance(problem, TensorProblem):
        v.fail("problem", problem, "a TensorProblem (see tensor_completion_problem)")
    x = torch.as_tensor(tensor, dtype=torch.float64)
    if tuple(x.shape) != problem.shape:
        v.fail("tensor", f"tensor of shape {tuple(x.shape)}", f"a tensor of shape {problem.shape}")
    data = _Batch([problem], torch.float64, torch.device("cpu"))
    t = x.reshape(1, data.rows, data.cols)
    r = torch.addcmul(data.neg_observed, data.mask, t)
    found = data.metrics(t)
    found["train_loss"] = r.square().sum((1, 2)) / data.m
    return {k: float(val[0]) for k, val in found.items()}


# ------------------------------------------------------------------------------------------------------------------
# tensor rank, estimated as in the paper: binary search on the CP rank that CP-ALS can fit to a tolerance
# ------------------------------------------------------------------------------------------------------------------


def _unfoldings(x: torch.Tensor) -> list[torch.Tensor]:
    """Mode-k unfoldings (B, n_k, prod of the other sizes), the other modes in increasing order (C order)."""
    B = x.shape[0]
    return [x.movedim(k + 1, 1).reshape(B, x.shape[k + 1], -1) for k in range(x.dim() - 1)]


def cp_als(
    tensors: torch.Tensor,
    ranks: Sequence[int] | int,
    *,
    tol: float = PAPER_RANK_TOL,
    max_iter: int = PAPER_ALS_MAX_ITER,
    seeds: Sequence[int] | int = 0,
    stop_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched CP alternating least squares with one rank per tensor.

    tensors: (B, n_1, ..., n_N); ranks: one per tensor (or one for all); seeds: each tensor's start is drawn from
    its own generator (factors N(0, 1)), so a tensor's result does not depend on its batch.
    Each sweep solves every factor in turn by least squares (with the pseudo-inverse of the Hadamard product of the
    other factors' Gram matrices). A tensor whose mean squared error over all entries falls below ``tol`` stops
    there (``stop_early``), as in the paper; the others run ``max_iter`` sweeps.
    Returns (mse (B,), converged (B,) bool): the final mean squared error and whether it is below tol.
    The computation runs in the tensors' dtype and device (the paper: float64).
    """
    x = tensors
    B, shape = x.shape[0], tuple(x.shape[1:])
    order, numel = len(shape), math.prod(shape)
    ranks_l = [ranks] * B if isinstance(ranks, int) else [int(r) for r in ranks]
    seeds_l = [seeds] * B if isinstance(seeds, int) else [int(s) for s in seeds]
    R = max(ranks_l)
    dev, dt = x.device, x.dtype
    colmask = (torch.arange(R, device=dev)[None, :] < torch.tensor(ranks_l, device=dev)[:, None])  # (B, R)
    factors = []
    starts = []
    for rb, s in zip(ranks_l, seeds_l):
        g = torch.Generator().manual_seed(s)
        starts.append([torch.randn(nk, rb, generator=g, dtype=torch.float64) for nk in shape])
    for k, nk in enumerate(shape):
        f = torch.zeros(B, nk, R, dtype=torch.float64)
        for b in range(B):
            f[b, :, : ranks_l[b]] = starts[b][k]
        factors.append(f.to(device=dev, dtype=dt))
    unf = _unfoldings(x)
    flat = x.reshape(B, -1)
    both = colmask[:, :, None] & colmask[:, None, :]
    eye = torch.eye(R, device=dev, dtype=dt)
    mse = torch.full((B,), math.inf, dtype=dt, device=dev)
    idx = torch.arange(B, device=dev)  # the tensors still iterating
    cm, bm = colmask, both
    for _ in range(max_iter):
        for k in range(order):
            others = [factors[j] for j in range(order) if j != k]
            gram = others[0].transpose(1, 2) @ others[0]
            for f in others[1:]:
                gram = gram * (f.transpose(1, 2) @ f)
            # the padded columns: zero rows/columns with a diagonal no larger than the live block's largest
            # eigenvalue, so the pseudo-inverse's cutoff is the live block's own
            pad = torch.diagonal(gram, dim1=1, dim2=2).amax(1).clamp_min(torch.finfo(dt).tiny)
            gram = torch.where(bm, gram, eye * pad[:, None, None])
            upd = torch.bmm(torch.bmm(unf[k][idx], _khatri_rao(others)), torch.linalg.pinv(gram, rtol=1e-15,
                                                                                           hermitian=True))
            upd = upd * cm[:, None, :]
            if k < order - 1:  # scale columns to unit norm (the next least-squares solves absorb the scale)
                norms = torch.linalg.vector_norm(upd, dim=1, keepdim=True)
                upd = upd / torch.where(norms > 0, norms, torch.ones((), dtype=dt, device=dev))
            factors[k] = upd
        recon = torch.bmm(_khatri_rao(factors[:-1]), factors[-1].transpose(1, 2)).reshape(idx.numel(), -1)
        cur = (flat[idx] - recon).square().sum(1) / numel
        mse[idx] = cur
        if stop_early:
            keep = ~(cur < tol)
            if not bool(keep.all()):
                idx, cm, bm = idx[keep], cm[keep], bm[keep]
                factors = [f[keep] for f in factors]
                if idx.numel() == 0:
                    break
    return mse, mse < tol


def cp_rank(
    tensors: torch.Tensor | Sequence[torch.Tensor],
    tol: float = PAPER_RANK_TOL,
    *,
    max_rank: int | None = None,
    max_iter: int = PAPER_ALS_MAX_ITER,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: str = "float64",
    threads: int | None = 1,
) -> int | list[int]:
    """Estimated CP rank, the paper's way: the smallest r in [1, max_rank] for which CP-ALS (random start, at most
    ``max_iter`` sweeps) reaches a mean squared error over all entries below ``tol``, found by binary search.

    tensors: one tensor (returns an int) or a list of tensors of one shape (returns a list; they are searched
        together, in lock step, with one batched ALS per round).
    max_rank: default the product of all mode sizes but the largest (the paper's bound); if no r up to it fits,
        the answer is max_rank. A tensor with every entry within 1e-8 of zero has rank 0.
    seed: the ALS starts of tensor b are drawn from generators seeded ``seed``, so the answer for a tensor does not
        depend on the others in the list.
    threads: CPU threads (as in :func:`train_cp`).
    Note: the tolerance is absolute, per entry, so the answer depends on the tensor's scale (the paper's targets
    have Frobenius norm 1).
    """
    single = isinstance(tensors, torch.Tensor)
    items = [tensors] if single else list(tensors)
    if not items:
        v.fail("tensors", tensors, "a tensor or a non-empty list of tensors of one shape")
    shape = tuple(items[0].shape)
    for i, x in enumerate(items):
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
            v.fail(f"tensors[{i}]", f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}",
                   f"a tensor of shape {shape} like tensors[0]")
    if len(shape) < 2:
        v.fail("tensors", f"tensors of shape {shape}", "tensors of order >= 2")
    tol = v.positive("tol", tol)
    max_iter = v.integer("max_iter", max_iter, 1)
    seed = v.integer("seed", seed, 0)
    dims = sorted(shape)
    bound = math.prod(dims[:-1])
    max_rank = bound if max_rank is None else v.integer("max_rank", max_rank, 1)
    dt = v.dtype(dtype)
    dev = torch.device("cpu") if device is None else torch.device(device)
    threads = None if threads is None else v.integer("threads", threads, 1)
    with _cpu_threads(threads, dev):
        return _cp_rank(items, single, tol, max_rank, max_iter, seed, dev, dt)


def _cp_rank(items, single, tol, max_rank, max_iter, seed, dev, dt):
    x = torch.stack([t.detach().to(dtype=torch.float64) for t in items]).to(device=dev, dtype=dt)
    B = x.shape[0]
    zero = (x.reshape(B, -1).abs() <= 1e-8).all(1).cpu().numpy()
    first = np.zeros(B, dtype=np.int64)
    last = np.where(zero, -1, max_rank - 1)
    best = np.where(zero, 0, max_rank)
    while True:
        live = np.flatnonzero(first <= last)
        if live.size == 0:
            break
        mid = (first[live] + last[live]) // 2
        _, ok = cp_als(x[torch.as_tensor(live, device=dev)], (mid + 1).tolist(), tol=tol, max_iter=max_iter,
                       seeds=seed)
        ok = ok.cpu().numpy()
        best[live[ok]] = mid[ok] + 1
        last[live[ok]] = mid[ok] - 1
        first[live[~ok]] = mid[~ok] + 1
    out = [int(b) for b in best]
    return out[0] if single else out
