"""Chapter "The explicit penalty needs Adam" (notebooks/penalty.md): Zhao 2022.

The ratio penalty ``R(W) = ||W||_* / ||W||_F`` (mcreg_lib.penalties) is invariant to the scale of W, so
``<grad R(W), W> = 0`` and ``||grad R(cW)||_F = ||grad R(W)||_F / c``. The helpers here measure that, trace the step
the penalty makes under a given optimizer, and label the chapter's runs:

    table = penalty.scale_check(w, scales=[1e-2, 1, 1e2])        # penalty, gradient norm, cosine with W
    trace = penalty.trace_penalty_step(problem, "adam", lr=3e-3, penalty_weight=1e-3, max_steps=2000)
    spec = penalty.penalty_grid(problem, lrs={"adam": 1e-3, "gd": 3.0}, penalty_weights=[0, 1e-3], seed=[0, 1])

Image problems are ``mcreg_lib.data.image_problem``; the classic baselines over many problems
``mcreg_lib.baselines.table``; recovery thresholds ``mcreg_lib.analysis.recovery_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from .. import _validate as v
from .. import models, optimizers, penalties
from ..metrics import reconstruction_error
from ..problems import Problem
from ..training import log_steps

from ..book.parameters import (Parameters, choice, dtype, integer, integers, mapping, number, numbers, path,
                               positive)
from ..optimizers import OPTIMIZERS
from ..cache import memoize

IMAGES = ("camera", "moon", "coins", "text", "brick", "grass", "gravel", "page", "clock")

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate).
COLD_SECONDS = {"protocol": 195, "preview": 70}

PARAMETERS = Parameters(
    "penalty",
    integer("n", 100, "the main instance: an n x n matrix", minimum=2, preview=16),
    integer("rank", 5, "the main instance's rank", minimum=1, maximum="n", preview=2),
    integer("n_observed", 2000, "the main instance's observed entries (sections 1, 2 and 7's comparison)",
            minimum=1, maximum="n * n", preview=120),
    positive("init_scale", 1e-3, "scale of the initialization (end-to-end)"),
    positive("penalty_weight", 1e-3, "lambda of eq. (pen-objective) for the main runs"),
    positive("adam_lr", 3e-3, "Adam's step (PyTorch defaults otherwise)"),
    positive("gd_lr", 3.0, "gradient descent's step on the mean squared error"),
    positive("deep_gd_lr", 10.0, "the step of depth-3 gradient descent in section 6"),
    integer("max_steps", 12_000, "steps of every penalized run (each needs a matrix decomposition)", minimum=1,
            preview=150),
    integer("gd_max_steps", 30_000, "steps of gradient descent without the penalty (stops at stop_loss)",
            minimum=1, preview=200),
    number("stop_loss", 1e-6, "runs without the penalty stop at this training loss", minimum=0.0),
    integers("seeds", [0, 1, 2], "seeds of the comparison with classic methods (problem and initialization)",
             minimum=0),
    integers("n_observed_grid", [1500, 2000, 3000], "numbers of observed entries compared with classic methods",
             minimum=1, maximum="n * n", sort="ascending", preview=[50, 120]),
    positive("recovery_tol", 1e-2, "recovered: error on unobserved entries below this, for every seed"),
    positive("nnm_eps", 1e-3, "SCS tolerance of nuclear-norm minimization (1e-6 is the library default)"),
    integer("trace_steps", 2000, "steps of the traced runs of section 2", minimum=2, preview=30),
    integer("sweep_n", 50, "the sweep instance (sections 3-5): a smaller matrix, so the sweeps fit the budget",
            minimum=2, preview=12),
    integer("sweep_rank", 3, "rank of the sweep instance", minimum=1, maximum="sweep_n", preview=2),
    integer("sweep_n_observed", 600, "observed entries of the sweep instance", minimum=1,
            maximum="sweep_n * sweep_n", preview=70),
    integers("depths", [1, 2, 3], "depths of section 3", minimum=1, sort="ascending", preview=[1, 2]),
    numbers("penalty_weights", [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "lambdas of section 4", minimum=0.0, strict=True,
            sort="ascending", preview=[1e-3, 1e-1]),
    numbers("adam_lrs", [1e-3, 3e-3], "Adam steps of section 4", minimum=0.0, strict=True, sort="ascending",
            preview=[3e-3]),
    mapping("optimizer_lrs", {"adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3, "adagrad": 0.1, "sgd_momentum": 0.3,
                              "normalized_gd": 1e-2, "gd": 3.0},
            "section 5: each optimizer with its step", keys=OPTIMIZERS, preview={"adam": 3e-3, "gd": 3.0}),
    choice("image", "camera", "a scikit-image sample image (no download)", choices=IMAGES),
    integer("image_size", 64, "the image is downscaled to image_size x image_size", minimum=4, maximum=256,
            preview=12),
    number("image_fraction", 0.5, "fraction of its pixels observed", minimum=0.0, maximum=1.0, strict=True),
    path("movielens_path", None, "path to MovieLens-100K's u.data; None skips the MovieLens section",
         optional=True),
    integer("movielens_steps", 2000, "steps of the MovieLens runs", minimum=1, preview=20),
    dtype("float32", "floating-point type of training"),
)


def penalty_grid(problems: Problem | Sequence[Problem], *, lrs: dict[str, float], penalty_weights: Sequence[float],
                 **axes: Any) -> list:
    """A sweep spec (for ``mc.sweep``): each optimizer of ``lrs`` with its own learning rate, times each penalty
    weight (0 means no penalty; a positive weight the ratio penalty), times the other ``axes`` of ``mc.grid``."""
    from ..sweeps import grid

    if not isinstance(lrs, dict) or not lrs:
        v.fail("lrs", lrs, "a non-empty dict {optimizer: learning rate}")
    weights = v.real_list("penalty_weights", penalty_weights, 0.0)
    spec = []
    for optimizer, lr in lrs.items():
        for weight in weights:
            penalty = "ratio" if weight > 0 else None
            spec += grid(problems, optimizer=optimizer, lr=lr, penalty=penalty, penalty_weight=weight, **axes)
    return spec


def arm(table: pd.DataFrame) -> pd.Series:
    """A legend label per run: ``optimizer`` or ``optimizer + penalty`` (the weight is in the table)."""
    return pd.Series([f"{o} + penalty" if p else f"{o}, no penalty" for o, p in zip(table["optimizer"],
                      table["penalty"].notna() & table["penalty"].astype(bool))], index=table.index, name="arm")


def scale_check(w: torch.Tensor, scales: Sequence[float]) -> pd.DataFrame:
    """The ratio penalty at ``c W`` for each c in ``scales``; w is one (n_rows, n_cols) matrix.

    Columns: scale c, frobenius_norm ``||cW||_F``, penalty ``R(cW)``, grad_norm ``||grad R(cW)||_F``,
    grad_norm_times_frobenius (constant when the gradient shrinks like ``1 / ||W||_F``) and cosine, the cosine of
    the angle between ``grad R(cW)`` and W (zero when the gradient is orthogonal to W).
    """
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        v.fail("w", getattr(w, "shape", w), "a 2-D torch tensor (one matrix)")
    scales = v.real_list("scales", scales, 0.0, strict_minimum=True)
    w = w.to(torch.float64)
    rows = []
    for c in scales:
        wc = (c * w)[None]
        val, grad = penalties.value_and_grad(wc, "ratio", {})
        fro = float(torch.linalg.matrix_norm(wc[0]))
        gnorm = float(torch.linalg.matrix_norm(grad[0]))
        cosine = float((grad[0] * w).sum() / (gnorm * float(torch.linalg.matrix_norm(w))))
        rows.append({"scale": c, "frobenius_norm": fro, "penalty": float(val[0]), "grad_norm": gnorm,
                     "grad_norm_times_frobenius": gnorm * fro, "cosine": cosine})
    return pd.DataFrame(rows)


@memoize
def trace_penalty_step(
    problem: Problem,
    optimizer: str,
    *,
    lr: float,
    penalty_weight: float,
    max_steps: int,
    init_scale: float = 1e-3,
    seed: int = 0,
    dtype: str = "float64",
    optimizer_options: dict[str, float] | None = None,
    logs_per_decade: int = 10,
) -> pd.DataFrame:
    """Depth-1 training of ``MSE + penalty_weight * R(W)`` on a completion problem, logging the penalty's step.

    At depth 1 the data term has zero gradient on the unobserved entries, so whatever moves them is the penalty's
    doing under any optimizer. Logged at log-spaced steps t (one row each):

    * ``unobserved_step``: ``||P_unobs(W_{t+1} - W_t)||_F``, the step the optimizer actually takes there;
    * ``gd_penalty_step``: ``lr * penalty_weight * ||P_unobs grad R(W_t)||_F``, what plain GD with this lr would take;
    * ``relative_step``: ``unobserved_step / ||W_t||_F`` (R is scale-invariant, so only the relative step counts);
    * ``frobenius_norm``, ``penalty_grad_norm`` ``||grad R(W_t)||_F``, ``error_unobserved`` (mc.metrics).

    The update is the library's (mc.optimizers, mc.penalties), so the trajectory is mc.fit's at depth 1.
    """
    if not isinstance(problem, Problem) or problem.kind != "completion" or problem.target is None:
        v.fail("problem", problem, "a completion Problem with a known target (e.g. mc.completion_problem)")
    opts = optimizers.options(optimizer, optimizer_options)
    lr = v.positive("lr", lr)
    penalty_weight = v.real("penalty_weight", penalty_weight, 0.0)
    max_steps = v.integer("max_steps", max_steps, 1)
    dt = v.dtype(dtype)
    w = models.init_layers(problem.shape, 1, "gaussian", init_scale, seed)[0].to(dt)[None].contiguous()
    opt = optimizers.make(optimizer, [w], opts)
    mask = problem.mask().to(dt)[None]
    unobserved = 1.0 - mask
    observed = problem.observed_matrix().to(dt)[None]
    target = problem.target.to(dt)
    lr_t = torch.tensor(lr, dtype=dt).view(1, 1, 1)
    logged = set(log_steps(max_steps, logs_per_decade).tolist()) | {max_steps - 1}
    rows = []
    for t in range(max_steps):
        _, pen_grad = penalties.value_and_grad(w, "ratio", {})
        grad = (w - observed) * mask * (2.0 / problem.n_observed) + penalty_weight * pen_grad
        before = w.clone() if t in logged else None
        opt.step([w], [grad], lr_t)
        if not bool(torch.isfinite(w).all()):
            raise FloatingPointError(f"trace_penalty_step diverged at step {t} ({optimizer}, lr={lr}, "
                                     f"penalty_weight={penalty_weight}): lower lr or penalty_weight")
        if before is not None:
            fro = float(torch.linalg.matrix_norm(before[0]))
            step = float(torch.linalg.matrix_norm((w - before)[0] * unobserved[0]))
            rows.append({
                "step": t, "optimizer": optimizer, "lr": lr, "penalty_weight": penalty_weight,
                "unobserved_step": step,
                "gd_penalty_step": lr * penalty_weight * float(torch.linalg.matrix_norm(pen_grad[0] * unobserved[0])),
                "relative_step": step / fro, "frobenius_norm": fro,
                "penalty_grad_norm": float(torch.linalg.matrix_norm(pen_grad[0])),
                "error_unobserved": float(reconstruction_error(before[0], target, unobserved[0])),
            })
    return pd.DataFrame(rows)


def outcome(table: pd.DataFrame, y: str = "error_unobserved", fmt: str = "{:.2g}") -> pd.Series:
    """A label per run: its ``y`` formatted, or ``diverged @ step k`` (a diverged run is reported, not plotted)."""
    if y not in table.columns:
        v.fail("y", y, f"a column of the table: {list(table.columns)}")
    div = table["diverged"].fillna(False).astype(bool) if "diverged" in table.columns else pd.Series(False, table.index)
    labels = [f"diverged @ step {int(row['diverged_at'])}" if d else fmt.format(row[y])
              for d, (_, row) in zip(div, table.iterrows())]
    return pd.Series(labels, index=table.index, name="outcome")
