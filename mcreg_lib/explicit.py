"""The explicit penalty of Zhao (2022): why it needs Adam, and how it compares with classic completion methods.

The ratio penalty ``R(W) = ||W||_* / ||W||_F`` (mcreg_lib.penalties) is invariant to the scale of W, so
``<grad R(W), W> = 0`` and ``||grad R(cW)||_F = ||grad R(W)||_F / c``. The helpers here measure that, trace the step
the penalty makes under a given optimizer, build inpainting problems from real images, run the classic baselines
over many problems, and read recovery thresholds off a table of runs.

    table = explicit.scale_check(w, scales=[1e-2, 1, 1e2])        # penalty, gradient norm, cosine with W
    trace = explicit.trace_penalty_step(problem, "adam", lr=3e-3, penalty_weight=1e-3, max_steps=2000)
    prob  = explicit.image_problem(skimage.data.camera(), size=64, fraction=0.5, seed=0)
    base  = explicit.baselines_table([prob1, prob2], methods=("soft_impute",))
    explicit.recovery_threshold(table, by=["method"], tol=1e-2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import _validate as v
from . import baselines, models, optimizers, penalties
from .metrics import relative_error
from .problems import Problem, problem_from_observations
from .training import log_steps

METHODS = ("nuclear_norm_minimization", "soft_impute")


def penalty_grid(problems: Problem | Sequence[Problem], *, lrs: dict[str, float], penalty_weights: Sequence[float],
                 **axes: Any) -> list:
    """A sweep spec (for ``mc.sweep``): each optimizer of ``lrs`` with its own learning rate, times each penalty
    weight (0 means no penalty; a positive weight the ratio penalty), times the other ``axes`` of ``mc.grid``."""
    from .sweeps import grid

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
                "error_unobserved": float(relative_error(before[0], target, unobserved[0])),
            })
    return pd.DataFrame(rows)


def image_problem(image: Any, size: int = 64, fraction: float = 0.5, seed: int = 0, *,
                  name: str = "image") -> Problem:
    """Inpainting as completion: a grayscale image resized to ``size x size`` (anti-aliased), scaled to RMS pixel 1
    (the book's convention for targets), with a seeded uniform ``fraction`` of its pixels observed.

    image: a 2-D array (e.g. ``skimage.data.camera()``). The full scaled image is the problem's target, so
    ``error_unobserved`` is the relative error on the missing pixels.
    """
    from skimage.transform import resize

    arr = np.asarray(image)
    if arr.ndim != 2:
        v.fail("image", f"array of shape {arr.shape}", "a 2-D grayscale image")
    if not np.all(np.isfinite(arr.astype(np.float64))):
        v.fail("image", "array with NaN or infinite values", "finite pixel values")
    size = v.integer("size", size, 2)
    fraction = v.real("fraction", fraction, 0.0, 1.0, strict_minimum=True)
    seed = v.integer("seed", seed, 0)
    small = resize(arr.astype(np.float64), (size, size), anti_aliasing=True)
    rms = math.sqrt(float(np.mean(small**2)))
    if rms == 0.0:
        v.fail("image", "an all-zero image", "an image with some non-zero pixel")
    target = small / rms
    n_obs = max(1, int(round(fraction * size * size)))
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(size * size, generator=g)[:n_obs].sort().values.numpy()
    rows, cols = flat // size, flat % size
    info = {"maker": "image_problem", "image": name, "size": size, "fraction": fraction, "seed": seed,
            "n_observed": n_obs}
    return problem_from_observations(rows, cols, target[rows, cols], (size, size), target=target, info=info)


def baselines_table(problems: Sequence[Problem], methods: Sequence[str] = METHODS,
                    options: dict[str, dict[str, Any]] | None = None, *, keep_matrices: bool = False) -> pd.DataFrame:
    """Run each classic method of ``methods`` on each problem; one row per (problem, method) with the problem's
    parameters (``problem_*``), the method, and the same metrics as trained runs (error_unobserved, ...).
    ``keep_matrices`` adds a column ``matrix`` with each completed (n_rows, n_cols) float64 tensor."""
    if isinstance(methods, (str, dict)):
        v.fail("methods", methods, f"a list of method names from {METHODS} (pass options by keyword)")
    methods = [v.choice("methods", m, METHODS) for m in methods]
    if not methods:
        v.fail("methods", methods, f"a non-empty list of {METHODS}")
    options = options or {}
    rows = []
    for problem in problems:
        if not isinstance(problem, Problem):
            v.fail("problems", problem, "a list of mcreg_lib Problems")
        for method in methods:
            result = getattr(baselines, method)(problem, **options.get(method, {}))
            row = {f"problem_{k}": val for k, val in problem.info.items()}
            row.update(result.summary)
            row["method"] = method
            if keep_matrices:
                row["matrix"] = result.matrix
            rows.append(row)
    return pd.DataFrame(rows)


def recovery_threshold(table: pd.DataFrame, *, by: Sequence[str], x: str = "problem_n_observed",
                       y: str = "error_unobserved", tol: float = 1e-2) -> pd.DataFrame:
    """For each group of ``by``: the smallest x from which on every run (every seed, every larger x of the grid)
    has ``y < tol`` and did not diverge; NaN where no x qualifies. Columns: ``by``, threshold, recovered_fraction."""
    tol = v.positive("tol", tol)
    missing = [c for c in [*by, x, y] if c not in table.columns]
    if missing:
        v.fail("table", f"a table without columns {missing}", f"a table with columns {[*by, x, y]}")
    t = table.copy()
    ok = (t[y] < tol) & np.isfinite(t[y])
    if "diverged" in t.columns:
        ok &= ~t["diverged"].fillna(False).astype(bool)
    t["_ok"] = ok
    out = []
    for key, group in t.groupby(list(by), sort=False):
        per_x = group.groupby(x)["_ok"].all().sort_index()
        threshold = math.nan
        for xv in per_x.index[::-1]:  # walk down from the largest x while every run recovers
            if not per_x[xv]:
                break
            threshold = float(xv)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), "threshold": threshold, "recovered_fraction": float(group["_ok"].mean())})
    return pd.DataFrame(out)


def outcome(table: pd.DataFrame, y: str = "error_unobserved", fmt: str = "{:.2g}") -> pd.Series:
    """A label per run: its ``y`` formatted, or ``diverged @ step k`` (a diverged run is reported, not plotted)."""
    if y not in table.columns:
        v.fail("y", y, f"a column of the table: {list(table.columns)}")
    div = table["diverged"].fillna(False).astype(bool) if "diverged" in table.columns else pd.Series(False, table.index)
    labels = [f"diverged @ step {int(row['diverged_at'])}" if d else fmt.format(row[y])
              for d, (_, row) in zip(div, table.iterrows())]
    return pd.Series(labels, index=table.index, name="outcome")
