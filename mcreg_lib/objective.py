"""The objective of a run: its observations, the loss and its gradient, the divergence rule, and the name and one
definition of every logged metric.

For a batch of B problems of one kind and shape, :class:`Observations` holds what the loss needs on the device:

* completion: the mask ``M`` (1 on observed entries) and the observed matrix ``P_obs(W*)``; the residual is
  ``R = M o (W - W*) = M o W - P_obs(W*)`` and the loss is the mean squared error ``L = ||R||_F^2 / m``;
* sensing: the measurement matrices ``A_i`` (flattened) and ``y_i = <A_i, W*>``; ``r_i = <A_i, W> - y_i``,
  ``L = sum_i r_i^2 / m`` and ``R = sum_i r_i A_i``.

In both cases ``dL/dW = (2 / m) R``: :meth:`Observations.residual` returns ``(L, R)`` and the training loop scales R
by :attr:`Observations.gradient_scale` (times the step, for plain gradient descent).

**Divergence** (one rule, used by every trainer of the library): a run diverges at the first step whose loss is not
``<= limit``, where ``limit = divergence_factor * max(L(0), 1)`` is fixed at step 0 (:func:`divergence_limit`,
:func:`is_diverged`). A NaN loss fails the comparison, so it counts as diverged.

**Metrics**: :data:`METRICS` names every quantity the training loop logs; each is computed here from the one
definition in :mod:`mcreg_lib.metrics`. :func:`evaluate` gives the same metrics for any matrix (a baseline's
solution, the ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import metrics
from .problems import Problem

N_SIGMAS = 10  # singular values logged per step

METRICS: dict[str, str] = {
    "train_loss": "mean squared error over the observed entries (completion) or the measurements (sensing)",
    "error_all": "reconstruction error ||W - W*||_F^2 / ||W*||_F^2 over all entries (P3's metric); "
                 "metrics.reconstruction_error",
    "error_unobserved": "the same ratio over the unobserved entries only (P1's metric); "
                        "metrics.reconstruction_error with the unobserved mask",
    "relative_residual": "||W - W*||_F / ||W*||_F, unsquared (P4's tensor error, P2's factorization residual); "
                         "metrics.relative_residual (not logged by train)",
    "test_mse": "mean squared error over held-out entries (real data); metrics.completion_loss",
    "effective_rank": "exp of the entropy of sigma / sum(sigma) (Roy & Vetterli 2007); metrics.effective_rank",
    "nuclear_norm": "sum of singular values; metrics.nuclear_norm",
    "frobenius_norm": "sqrt of the sum of squared singular values; metrics.frobenius_norm",
    "balancedness_gap_j": "||W_{j+1}^T W_{j+1} - W_j W_j^T||_F for each adjacent pair j; metrics.balancedness_gaps",
    "sigma_i": f"the i-th largest singular value of W, i = 1..{N_SIGMAS}; metrics.singular_values",
    "penalty": "the explicit penalty of W (penalized runs); penalties.value_and_grad",
    "objective": "train_loss + penalty_weight * penalty (penalized runs)",
}


def divergence_limit(initial_loss: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """``factor * max(L(0), 1)``: a run whose loss is ever not below or equal to this has diverged."""
    return factor * initial_loss.clamp_min(1.0)


def is_diverged(loss: torch.Tensor, limit: torch.Tensor | float) -> torch.Tensor:
    """True where ``loss`` is NaN, infinite or above ``limit`` (the library's one divergence rule)."""
    return ~(loss <= limit)


def finite_or_zero(w: torch.Tensor) -> torch.Tensor:
    """``w`` (B, ...) with every batch entry that holds a NaN or inf (or sums past the float range) replaced by
    zeros (SVDs fail on non-finite input; a diverged run's state is measured as zeros, never logged)."""
    finite = torch.isfinite(w.flatten(1).sum(1))  # one reduction: an inf or NaN anywhere makes the sum non-finite
    if bool(finite.all()):
        return w
    return torch.where(finite.view(-1, *([1] * (w.ndim - 1))), w, torch.zeros((), dtype=w.dtype))


RUN_CHUNK = 48  # runs per product of the shared sensing operator (a batch is zero-padded to a multiple)
RUN_ALIGN = 8  # where a narrower chunk gives the same numbers, a batch's last chunk is padded to a multiple of this
OPERATOR_BLOCK = 256  # rows of the operator per product (a block is reused from cache by every chunk and both products)


def shared_operator(flat: torch.Tensor | Sequence[torch.Tensor], a: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``res = flat a^T - y`` (B, m) and ``r = res a`` (B, n_rows * n_cols) for a batch sharing one operator ``a``.
    ``flat``: the runs' matrices as rows, or a list of such blocks (batches in lockstep), taken in that order.

    A run's numbers must not depend on which runs share its batch (an audited run is re-trained alone; a resumed
    sweep trains what is left in smaller batches), but a BLAS product's rounding for one run can depend on the
    product's size (measured with MKL: a row of a 1-row product differs from the same row in a 15-row one). So the
    products are taken in fixed shapes: runs as the columns of chunks of :data:`RUN_CHUNK` (the last one
    zero-padded), operator rows in blocks of :data:`OPERATOR_BLOCK` on a CPU (the whole operator on a GPU), ``r``
    accumulated over the blocks in order. Each run meets the same products whatever its batch. With the operator
    as the left factor, each block serves both products while it is in cache: a batch of 15 depth-3 runs at
    n = 100 trained 1.9x faster than with two whole products at m = 5,000 and 1.2x at m = 2,000 (2-core machine;
    bench/README.md, section [4]). A chunk of 48 runs, not 16: the products of a block are bound by reading it,
    so 45 runs (the sensing grid's three depths, which :func:`mcreg_lib.training.train` steps in lockstep) took
    48 ms a step at m = 5,000 against 80 ms as three chunks of 16 and 100 ms as three batches of 15.

    The last chunk is narrower (padded to a multiple of :data:`RUN_ALIGN` only) where :func:`narrow_chunks_agree`
    finds, for this operator's shapes on this machine, every column of the narrower products equal bit for bit to
    the same column of a full chunk: then a batch pays for its runs, not for 48 (the training loop passes only the
    runs still going, so a sweep's last runs do not pay for the finished ones). Elsewhere every chunk is full.
    """
    parts = [flat] if isinstance(flat, torch.Tensor) else list(flat)
    b, d = sum(x.shape[0] for x in parts), parts[0].shape[1]
    m = a.shape[0]
    rows = OPERATOR_BLOCK if a.device.type == "cpu" else m  # a GPU takes the whole operator at once (fewer launches)
    widths = [RUN_CHUNK] * (b // RUN_CHUNK)
    if b % RUN_CHUNK:
        narrow = -(-(b % RUN_CHUNK) // RUN_ALIGN) * RUN_ALIGN
        widths.append(narrow if narrow < RUN_CHUNK and narrow_chunks_agree(a, rows) else RUN_CHUNK)
    padded = parts[0].new_zeros(sum(widths), d)
    torch.cat(parts, out=padded[:b])  # the blocks written in place, the rest zero padding
    starts = [sum(widths[:c]) for c in range(len(widths))]
    cols = [padded[s:s + w].T.contiguous() for s, w in zip(starts, widths)]  # (d, width): runs as columns
    res, r = _chunk_products(a, y, cols, rows)
    # Runs back as rows, each one contiguous: a run's loss (shared_residuals) is then summed along its own row in one
    # order whatever its batch. (Until 2026-12-03 a batch of one chunk came back as a transposed view, and the
    # loss's order of summation depended on the batch's size.)
    return torch.cat([x.T for x in res])[:b], torch.cat([x.T for x in r])[:b]


def _chunk_products(a: torch.Tensor, y: torch.Tensor, cols: Sequence[torch.Tensor], rows: int
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """For each chunk X (d, width): ``res = a X - y`` (m, width) and ``r = a^T res`` (d, width), the operator taken
    in blocks of ``rows`` (each block serving every chunk and both products while in cache), ``r`` accumulated over
    the blocks in order."""
    m = a.shape[0]
    res = [x.new_empty(m, x.shape[1]) for x in cols]
    r = [x.new_zeros(x.shape) for x in cols]
    y_col = y.reshape(-1, 1)
    for k in range(0, m, rows):
        block = a[k:k + rows]
        for x, res_c, r_c in zip(cols, res, r):
            part = torch.mm(block, x, out=res_c[k:k + rows])
            part.sub_(y_col[k:k + rows])
            r_c.addmm_(block.T, part)
    return res, r


_AGREE: dict[tuple, bool] = {}


def narrow_chunks_agree(a: torch.Tensor, rows: int = OPERATOR_BLOCK) -> bool:
    """Whether every column of the operator's products comes out bit for bit the same in a chunk of any width
    ``RUN_ALIGN, 2 RUN_ALIGN, ... < RUN_CHUNK`` as in a full chunk of :data:`RUN_CHUNK`, for an operator of
    ``a``'s shape and dtype taken in blocks of ``rows``, at this thread count. Checked once per such setting, on
    ``a`` itself and seeded random columns: a BLAS picks its kernels and their order of summation by shape, not by
    value, so one check per shape stands for every input (measured with MKL on 2-core machines: widths 8 to 48
    agree, a width of 1 does not). Off a CPU it is not checked: False."""
    if a.device.type != "cpu":
        return False
    key = (tuple(a.shape), a.dtype, rows, torch.get_num_threads(), a.is_contiguous())
    if key not in _AGREE:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(a.shape[1], RUN_CHUNK, generator=g, dtype=torch.float64).to(a.dtype)
        y = torch.randn(a.shape[0], generator=g, dtype=torch.float64).to(a.dtype)
        full_res, full_r = _chunk_products(a, y, [x], rows)
        widths = range(RUN_ALIGN, RUN_CHUNK, RUN_ALIGN)
        res, r = _chunk_products(a, y, [x[:, :w].contiguous() for w in widths], rows)
        _AGREE[key] = all(torch.equal(res_w, full_res[0][:, :w]) and torch.equal(r_w, full_r[0][:, :w])
                          for w, res_w, r_w in zip(widths, res, r))
    return _AGREE[key]


def shared_residuals(observations: Sequence[Observations], ws: Sequence[torch.Tensor]
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(L, R)`` for each batch W of ``ws``, whose Observations share one sensing operator (batches of several
    batch keys stepped in lockstep): one :func:`shared_operator` pass for all their runs, so the operator is read
    once per step. Each batch gets the numbers :meth:`Observations.residual` gives it alone, and each run those it
    has alone (a run's column of the products does not depend on the others, its loss is summed along its own
    row: :func:`shared_operator`)."""
    o0 = observations[0]
    if any(o.kind != "sensing" or o.a is not o0.a for o in observations):
        raise ValueError("shared_residuals needs batches whose Observations share one sensing operator")
    res, r = shared_operator([w.reshape(w.shape[0], -1) for w in ws], o0.a, o0.y)
    out, start = [], 0
    for o, w in zip(observations, ws):
        k = w.shape[0]
        part = res[start:start + k]
        # o.m[:k]: a batch's runs share one problem, so one m; W may hold only the batch's running runs
        out.append((torch.linalg.vecdot(part, part) / o.m[:k], r[start:start + k].view_as(w)))
        start += k
    return out


class Observations:
    """The observations of a batch of problems (same kind and shape) on one device: the loss, its gradient and the
    metrics of :data:`METRICS`. A batch whose runs all share one problem stores it once; a sensing batch holds runs
    on one problem."""

    def __init__(self, problems: Sequence[Problem], dtype: torch.dtype, device: torch.device,
                 operator: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """``operator``: the ``(a, y)`` of another batch's Observations on the same one sensing problem, shared
        instead of copied (runs of several batch keys stepped in lockstep)."""
        p0 = problems[0]
        self.kind, self.shape, self.batch = p0.kind, p0.shape, len(problems)
        unique = [p0] if all(p is p0 for p in problems) else list(problems)

        def stack(fn):
            return torch.stack([fn(p) for p in unique]).to(device=device, dtype=dtype)

        self.m = torch.tensor([float(p.n_observed) for p in problems], dtype=dtype, device=device)
        self.gradient_scale = (2.0 / self.m).view(-1, 1, 1)  # dL/dW = gradient_scale * R
        if self.kind == "completion":
            self.mask = stack(lambda p: p.mask())
            self.neg_observed = stack(lambda p: p.observed_matrix()).neg_()
        else:
            # One operator (m, n_rows * n_cols) for the batch, read once a step for all its runs (shared_operator).
            # Runs on several sensing problems train as one batch per problem (mcreg_lib.training), so that each
            # run meets the same products whatever else trains with it.
            if len(unique) != 1:
                raise ValueError("a sensing batch holds runs on one problem object; mcreg_lib.train makes one batch "
                                 "per problem")
            if operator is not None:
                self.a, self.y = operator
            else:
                self.a = p0.measurements.reshape(p0.n_observed, -1).to(device=device, dtype=dtype)
                self.y = stack(lambda p: p.values)  # (1, m)
        self.target = stack(lambda p: p.target) if all(p.target is not None for p in unique) else None
        self.test = None
        if all(p.test_rows is not None for p in unique):
            self.test = [(p.test_rows.to(device), p.test_cols.to(device), p.test_values.to(device, dtype))
                         for p in unique]

    def residual(self, w: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, R)`` for a batch W (B, n_rows, n_cols): the loss (B,) and R with ``dL/dW = gradient_scale * R``.

        ``out``: a buffer shaped like W for R (completion), so a training loop allocates nothing per step.
        """
        b = w.shape[0]
        if self.kind == "completion":
            r = torch.addcmul(self.neg_observed, self.mask, w, out=out)  # M o W - P_obs(W*), in one fused op
            flat = r.view(b, -1)
            return torch.linalg.vecdot(flat, flat).div_(self.m), r
        return shared_residuals([self], [w])[0]  # one operator for the batch: see shared_operator

    def metrics(self, w: torch.Tensor, layers: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every metric of :data:`METRICS` but the loss and the penalty, for a batch W and its layers."""
        sigma = metrics.singular_values(w)
        out = {
            "effective_rank": metrics.effective_rank(sigma=sigma),
            "nuclear_norm": metrics.nuclear_norm(sigma=sigma),
            "frobenius_norm": metrics.frobenius_norm(sigma=sigma),
        }
        if self.target is not None:
            out["error_all"] = metrics.reconstruction_error(w, self.target)
            if self.kind == "completion":
                out["error_unobserved"] = metrics.reconstruction_error(w, self.target, 1.0 - self.mask)
        if self.test is not None:
            if len(self.test) == 1:
                out["test_mse"] = metrics.completion_loss(w, *self.test[0])
            else:
                out["test_mse"] = torch.stack([metrics.completion_loss(w[b], *t) for b, t in enumerate(self.test)])
        for j, gap in enumerate(metrics.balancedness_gaps(layers), start=1):
            out[f"balancedness_gap_{j}"] = gap
        for i in range(min(N_SIGMAS, sigma.shape[-1])):
            out[f"sigma_{i + 1}"] = sigma[:, i]
        return out

    def loss_and_gradient(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, dL/dW)`` for a batch W (not in place; for checks and small loops)."""
        loss, r = self.residual(w)
        return loss, r * self.gradient_scale


def evaluate(problem: Problem, matrix: torch.Tensor) -> dict[str, float]:
    """The metrics of :data:`METRICS` (train_loss, error_all, error_unobserved, test_mse, effective_rank, ...) of
    any matrix for ``problem``, in float64 on the CPU, by the same definitions as the training loop."""
    w = torch.as_tensor(matrix, dtype=torch.float64).reshape(1, *problem.shape).contiguous()
    obs = Observations([problem], torch.float64, torch.device("cpu"))
    loss, _ = obs.residual(w)
    found = obs.metrics(w, [w])
    found["train_loss"] = loss
    return {k: float(x[0]) for k, x in found.items()}
