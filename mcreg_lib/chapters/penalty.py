"""Chapter "The explicit penalty needs Adam" (notebooks/penalty.md): Zhao 2022.

The ratio penalty ``R(W) = ||W||_* / ||W||_F`` (mcreg_lib.penalties) is invariant to the scale of W, so
``<grad R(W), W> = 0`` and ``||grad R(cW)||_F = ||grad R(W)||_F / c``. The helpers here measure that, trace the step
the penalty makes under a given optimizer, label and count the chapter's runs by outcome, replay the stop rules on
a run's history, and decide the chapter's comparisons:

    table = penalty.scale_check(w, scales=[1e-2, 1, 1e2])        # penalty, gradient norm, cosine with W
    trace = penalty.trace_penalty_step(problem, "adam", lr=1e-3, penalty_weight=1e-3, max_steps=2000)
    spec = penalty.penalty_grid(problem, lrs={"adam": 1e-3, "gd": 1.0}, penalty_weights=[0, 1e-3], seed=[0, 1])
    runs = penalty.run_table(result, spec, tol=1e-2, blowup=10.0)   # + outcome, sigma_1_ratio, scale_ratio
    penalty.counts(runs, by=["depth", "lr"])                       # per cell: recovered / not / blown up / diverged
    penalty.replay_stop(run.history, plateau=1e-3, scale_limit=...) # where the stop rules would end a full run
    penalty.same_outcome(full_runs, stopped_runs, on=[...])          # does the stop rule end where 200k steps do?

**Outcomes** (:func:`classify`), one per run, in this order: ``diverged`` (the loss on the observed entries turned
non-finite or grew a million-fold: ``mcreg_lib.objective``), ``blown up`` (``||W||_F`` above ``blowup`` times the
data's scale, ``mcreg_lib.training.data_scale``: the matrix grew without bound in the unobserved entries while the
observed ones stayed fitted; the same test as the ``stop_scale`` rule), ``recovered`` (error on the unobserved
entries below ``tol``) and ``not recovered``.

Image problems are ``mcreg_lib.data.image_problem``; the classic baselines over many problems
``mcreg_lib.baselines.table``; recovery thresholds ``mcreg_lib.analysis.recovery_threshold``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import _validate as v
from .. import data, models, optimizers, penalties, training
from ..metrics import reconstruction_error
from ..problems import Problem
from ..training import log_steps

from ..book.parameters import (Parameters, choice, dtype, integer, integers, mapping, number, numbers, path,
                               positive)
from ..optimizers import OPTIMIZERS
from ..cache import memoize

IMAGES = ("camera", "moon", "coins", "text", "brick", "grass", "gravel", "page", "clock")
OUTCOMES = ("recovered", "not recovered", "blown up", "diverged")
# optimizers whose step does not scale with the gradient's size (section 2): they run at every Adam step too
STEP_NORMALIZED = (*optimizers.ADAPTIVE, "normalized_gd")

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate). About 2 h 1 min after two interruptions
# (2026-12-02, 7,252 s: 209 runs trained, 74 read); about 7,300 s all told.
# With the loop of commit 56fe0a4 and later, on a second 2-core machine of the same kind (2026-12-03), the
# protocol value below; the build machine's, with the loop of earlier commits, in the comment above.
# Here: about 79.5 min of training in a build stopped at the end of a session, then 176 s after its restart.
COLD_SECONDS = {"protocol": 4770 + 176, "preview": 30}

PARAMETERS = Parameters(
    "penalty",
    integer("n", 100, "the hidden matrix is n x n (Zhao 2022: 100)", minimum=2, preview=16, group="The instance"),
    integer("rank", 5, "its rank (Zhao 2022: 5)", minimum=1, maximum="n", preview=2),
    integer("n_observed", 2000, "observed entries (Zhao 2022: 2000), every section but the sample-complexity one",
            minimum=1, maximum="n * n", preview=120),
    positive("init_scale", 1e-3, "scale of the initialization, end-to-end (Zhao 2022: 1e-3)"),
    integers("seeds", [0, 1, 2], "seeds of every section but the sample-complexity one; a seed draws the matrix, "
             "the entries and the initialization", minimum=0, preview=[0, 1]),
    dtype("float32", "floating-point type of training (Zhao 2022: float32)"),
    positive("penalty_weight", 1e-3, "lambda of eq. (pen-objective) in every section but the weight sweep",
             group="Training"),
    numbers("adam_lrs", [1e-2, 1e-3], "Adam's steps: the released code's 1e-2 and the third-party 1e-3",
            minimum=0.0, strict=True, sort="descending"),
    integer("max_steps", 200_000, "step budget of every Adam run (the released code's 200,000)", minimum=1,
            preview=600),
    number("plateau", 1e-3, "stop rule: a run ends once the smallest objective logged in the second half of the run "
           "is within this fraction of the smallest in the quarter before (0 turns it off)", minimum=0.0, maximum=1.0),
    positive("blowup", 10.0, "stop rule and outcome: a run whose Frobenius norm exceeds this many times the data's "
             "scale is stopped and counted as blown up"),
    positive("gd_lr", 1.0, "step of gradient descent (and ten times that of SGD with momentum)"),
    integer("gd_max_steps", 50_000, "step budget of every gradient-descent run", minimum=1, preview=800),
    integer("plain_adam_steps", 30_000, "step budget of Adam without the penalty (the third party: 3e4)", minimum=1,
            preview=400),
    number("stop_loss", 1e-6, "runs without the penalty stop at this training loss", minimum=0.0),
    positive("recovery_tol", 1e-2, "recovered: error on the unobserved entries below this"),
    integer("reference_steps", 200_000, "steps of the runs that check the stop rule, with no stop rule (the "
            "released code's 200,000)", minimum=1, preview=1200, group="Sections"),
    integer("trace_steps", 2000, "steps of the traced runs of section 2", minimum=2, preview=30),
    integers("depths", [1, 2, 3, 4, 5], "depths of the depth x optimizer x penalty section", minimum=1,
             sort="ascending", preview=[1, 2]),
    numbers("penalty_weights", [1e-4, 1e-3, 1e-2, 1e-1], "lambdas of the weight x step section", minimum=0.0,
            strict=True, sort="ascending", preview=[1e-3, 1e-1]),
    integers("lambda_depths", [1, 2], "depths of the weight x step section", minimum=1, sort="ascending",
             preview=[1, 2]),
    mapping("ablation_lrs", {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2, "normalized_gd": 1e-3,
                             "sgd_momentum": 0.1, "gd": 1.0},
            "optimizers of the ablation with their steps; the step-normalized ones also run at every Adam step",
            keys=OPTIMIZERS, preview={"adam": 1e-3, "normalized_gd": 1e-3, "gd": 1.0}),
    integers("n_observed_grid", [1000, 1500, 2000, 2500, 3000, 3500, 4000],
             "observed entries of the sample-complexity comparison", minimum=1, maximum="n * n", sort="ascending",
             preview=[60, 120]),
    integers("sample_seeds", [0, 1, 2, 3, 4], "seeds of the sample-complexity comparison", minimum=0,
             preview=[0, 1]),
    number("headline_lr", 1e-3, "Adam's step in the sample-complexity comparison", minimum=0.0, strict=True),
    integer("deep_gd_depth", 3, "depth of the deep gradient-descent network compared there", minimum=2, preview=2),
    choice("image", "camera", "a scikit-image sample image (no download)", choices=IMAGES, group="Real data"),
    integer("image_size", 64, "the image is downscaled to image_size x image_size", minimum=4, maximum=256,
            preview=12),
    number("image_fraction", 0.5, "fraction of its pixels observed", minimum=0.0, maximum=1.0, strict=True),
    path("movielens_path", None, "path to MovieLens-100K's u.data; None skips the MovieLens section",
         optional=True),
    positive("movielens_lr", 5e-4, "Adam's step on MovieLens (Zhao 2022's appendix)"),
    integer("movielens_steps", 20_000, "step budget of the MovieLens runs", minimum=1, preview=40),
)


# --- building and reading the runs --------------------------------------------------------------------------------

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


def seeded(problem_of_seed: Any, seeds: Sequence[int], **axes: Any) -> list:
    """A sweep spec pairing seed s's problem (``problem_of_seed(s)``) with runs of init seed s (``mc.grid`` axes)."""
    from ..sweeps import grid

    spec = []
    for s in seeds:
        spec += grid(problem_of_seed(s), seed=int(s), **axes)
    return spec


class RunBook:
    """Every run the chapter has trained, by (problem fingerprint, config): a section whose spec repeats runs of an
    earlier section reuses them, with or without the build's cache (``mc.sweep`` trains the rest, through the cache
    when there is one). ``book.sweep(spec)`` returns a SweepResult in the order of ``spec``."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, Any], Any] = {}

    def sweep(self, spec: Sequence[tuple[Problem, Any]]) -> Any:
        from ..sweeps import SweepResult, sweep, validate

        spec = validate(spec)
        prints: dict[int, str] = {}
        keys = [(prints.setdefault(id(p), p.fingerprint()), c) for p, c in spec]
        todo: dict[tuple[str, Any], int] = {}
        for i, key in enumerate(keys):
            if key not in self.runs and key not in todo:
                todo[key] = i
        if todo:
            result = sweep([spec[i] for i in todo.values()])
            self.runs.update(zip(todo, result.runs))
        return SweepResult([self.runs[k] for k in keys], computed=len(todo), cached=len(keys) - len(todo))


def arm(table: pd.DataFrame) -> pd.Series:
    """A legend label per run: ``optimizer + penalty`` or ``optimizer, no penalty`` (the weight is in the table)."""
    return pd.Series([f"{o} + penalty" if p else f"{o}, no penalty" for o, p in zip(table["optimizer"],
                      table["penalty"].notna() & table["penalty"].astype(bool))], index=table.index, name="arm")


def classify(table: pd.DataFrame, *, tol: float, blowup: float) -> pd.Series:
    """The outcome of each run (module docstring): needs columns diverged, scale_ratio and error_unobserved."""
    tol, blowup = v.positive("tol", tol), v.positive("blowup", blowup)
    missing = [c for c in ("diverged", "scale_ratio", "error_unobserved") if c not in table.columns]
    if missing:
        v.fail("table", f"a table without {missing}", "a table from run_table")
    div = table["diverged"].fillna(False).astype(bool)
    blown = ~div & (table["scale_ratio"] > blowup)
    rec = ~div & ~blown & (table["error_unobserved"] < tol)
    out = np.where(div, "diverged", np.where(blown, "blown up", np.where(rec, "recovered", "not recovered")))
    return pd.Series(out, index=table.index, name="outcome")


def run_table(result: Any, spec: Sequence[tuple[Problem, Any]], *, tol: float, blowup: float) -> pd.DataFrame:
    """``result.table`` (a SweepResult of ``spec``) with, per run: frobenius_norm and sigma_1 of the final matrix,
    sigma_1_ratio ``sigma_1(W) / sigma_1(W*)``, scale_ratio ``||W||_F`` over the data's scale
    (``training.data_scale``), budget_hit (stopped by its step budget), outcome (:func:`classify`) and arm."""
    if len(spec) != len(result.runs):
        v.fail("spec", f"{len(spec)} runs", f"the spec of the sweep ({len(result.runs)} runs)")
    table = result.table
    fro, s1, s1_ratio, scale = [], [], [], []
    for (problem, _), run in zip(spec, result.runs):
        w = torch.nan_to_num(run.matrix.to(torch.float64), nan=0.0, posinf=0.0, neginf=0.0)
        sigma = torch.linalg.svdvals(w)
        fro.append(float(torch.linalg.matrix_norm(w)))
        s1.append(float(sigma[0]))
        s1_ratio.append(float(sigma[0]) / float(torch.linalg.matrix_norm(problem.target, ord=2))
                        if problem.target is not None else math.nan)
        scale.append(fro[-1] / training.data_scale(problem))
    table = table.assign(frobenius_norm=fro, sigma_1=s1, sigma_1_ratio=s1_ratio, scale_ratio=scale,
                         budget_hit=table["stop_reason"] == "max_steps")
    return table.assign(outcome=classify(table, tol=tol, blowup=blowup), arm=arm(table))


def counts(table: pd.DataFrame, by: Sequence[str], y: str = "error_unobserved") -> pd.DataFrame:
    """Per cell of ``by``: runs, the count of each outcome (:data:`OUTCOMES`), runs that hit their step budget, the
    median ``y`` over the runs neither diverged nor blown up, and ``text`` (e.g. "3/3 recovered" or "1/3 recovered,
    2 blown up")."""
    by = list(by)
    rows = []
    for key, g in table.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        n = len(g)
        c = {o: int((g["outcome"] == o).sum()) for o in OUTCOMES}
        finite = g.loc[g["outcome"].isin(["recovered", "not recovered"]), y]
        parts = [f"{c['recovered']}/{n} recovered"]
        parts += [f"{c[o]} {o}" for o in ("not recovered", "blown up", "diverged") if c[o] and o != "not recovered"]
        rows.append({**dict(zip(by, key)), "runs": n, **c, "budget_hit": int(g["budget_hit"].sum()),
                     "median_" + y: float(finite.median()) if len(finite) else math.nan, "text": ", ".join(parts)})
    return pd.DataFrame(rows)


def outcome(table: pd.DataFrame, y: str = "error_unobserved", fmt: str = "{:.2g}") -> pd.Series:
    """A label per run: its ``y`` formatted, or ``diverged @ step k`` / ``blown up @ step k`` (a diverged run is
    reported, not plotted)."""
    if y not in table.columns:
        v.fail("y", y, f"a column of the table: {list(table.columns)}")
    div = table["diverged"].fillna(False).astype(bool) if "diverged" in table.columns else pd.Series(False, table.index)
    kind = table["outcome"] if "outcome" in table.columns else pd.Series("", table.index)
    labels = []
    for d, k, (_, row) in zip(div, kind, table.iterrows()):
        if d:
            labels.append(f"diverged @ step {int(row['diverged_at'])}")
        elif k == "blown up":
            labels.append(f"blown up @ step {int(row['steps'])}")
        else:
            labels.append(fmt.format(row[y]))
    return pd.Series(labels, index=table.index, name="outcome")


# --- the stop rules ---------------------------------------------------------------------------------------------

def replay_stop(history: pd.DataFrame, *, plateau: float, scale_limit: float) -> dict[str, Any]:
    """Where the training loop's stop rules would have ended a run that had neither: the first logged row at which
    ``||W||_F`` exceeds ``scale_limit`` (``stop_scale`` times ``training.data_scale``: reason 'scale') or the
    plateau rule with fraction ``plateau`` fires (``training._plateau``: reason 'plateau'), checked in the loop's
    order. Returns that row (step, reason and the logged metrics), or the last row with reason 'max_steps'."""
    plateau = v.real("plateau", plateau, 0.0, 1.0)
    rows = history.to_dict("records")
    if not rows:
        v.fail("history", "an empty history", "a run's history (run.history)")
    rule = types.SimpleNamespace(stop_plateau=plateau)
    for i, row in enumerate(rows):
        if row["frobenius_norm"] > scale_limit:
            return {**row, "reason": "scale"}
        if plateau > 0 and training._plateau(rows[:i + 1], rule):
            return {**row, "reason": "plateau"}
    return {**rows[-1], "reason": "max_steps"}


def same_outcome(full: pd.DataFrame, stopped: pd.DataFrame, on: Sequence[str], y: str = "error_unobserved",
                 factor: float = 10.0) -> pd.DataFrame:
    """Compare runs with the stop rules (``stopped``) against the same configurations run to their full budget
    (``full``), matched on the columns ``on``: one row per pair with both steps, outcomes and errors, and ``same``:
    the same outcome, and where neither recovered nor blew up nor diverged, errors within ``factor`` of each other
    (two recovered runs are not ordered by their residual errors)."""
    on = list(on)
    cols = on + ["steps", "stop_reason", "outcome", y]
    pairs = full[cols].merge(stopped[cols], on=on, suffixes=("_full", "_stopped"), validate="one_to_one")
    if len(pairs) != len(full):
        v.fail("stopped", f"{len(pairs)} matches", f"one stopped run for each of the {len(full)} full runs")
    a, b = pairs[f"{y}_full"].astype(float), pairs[f"{y}_stopped"].astype(float)
    ratio = np.maximum(a, b) / np.maximum(np.minimum(a, b), 1e-300)
    both_not = (pairs["outcome_full"] == "not recovered") & (pairs["outcome_stopped"] == "not recovered")
    pairs["same"] = (pairs["outcome_full"] == pairs["outcome_stopped"]) & (~both_not | (ratio <= factor))
    pairs["steps_saved"] = 1.0 - pairs["steps_stopped"] / pairs["steps_full"].clip(lower=1)
    return pairs


# --- the headline comparison ------------------------------------------------------------------------------------

def comparable(thresholds: pd.Series, method: str, others: Sequence[str], grid_step: float) -> dict[str, Any]:
    """The sample-complexity verdicts, fixed before running. ``thresholds``: method -> recovery threshold (NaN:
    none in the grid). ``method`` is comparable to ``others`` when its threshold is a number within ``grid_step`` of
    the smallest of theirs; where either recovers nowhere in the grid (NaN) the verdict is "not comparable" (a
    claim is not shown by two failures). Returns the thresholds, the best other, and the verdict."""
    if method not in thresholds.index:
        v.fail("method", method, f"one of {list(thresholds.index)}")
    missing = [o for o in others if o not in thresholds.index]
    if missing or not others:
        v.fail("others", list(others), f"a non-empty list from {list(thresholds.index)}")
    mine = float(thresholds[method])
    theirs = thresholds[list(others)].astype(float)
    best = theirs.dropna()
    best_name = best.idxmin() if len(best) else None
    best_value = float(best.min()) if len(best) else math.nan
    if math.isnan(mine) or math.isnan(best_value):
        holds = False  # a method that recovers nowhere in the grid is not shown comparable to anything
    else:
        holds = abs(mine - best_value) <= grid_step + 1e-9
    return {"threshold": mine, "best_other": best_name, "best_other_threshold": best_value, "holds": bool(holds)}


def better_than(thresholds: pd.Series, method: str, others: Sequence[str]) -> dict[str, Any]:
    """``method`` recovers from fewer entries than each of ``others``: its threshold is a number and strictly below
    each other threshold (an other with no threshold in the grid, NaN, counts as above it)."""
    mine = float(thresholds[method])
    verdict = {o: (not math.isnan(mine)) and (math.isnan(float(thresholds[o])) or mine < float(thresholds[o]))
               for o in others}
    return {"threshold": mine, "per_method": verdict, "holds": bool(verdict) and all(verdict.values())}


# --- real data ------------------------------------------------------------------------------------------------

def movielens(path: str, *, lr: float, penalty_weight: float, max_steps: int, plateau: float, blowup: float,
              init_scale: float = 1e-3, seed: int = 0, dtype: str = "float32", test_fraction: float = 0.2,
              book: RunBook | None = None) -> tuple[Problem, pd.DataFrame]:
    """Zhao (2022)'s MovieLens protocol: a seeded 80/20 split of ``u.data`` (``mcreg_lib.data.load_movielens``),
    depth-1 Adam at step ``lr`` with and without the ratio penalty, each stopped by the chapter's stop rules or its
    step budget. Returns the problem and one row per run (arm, steps, stop_reason, train_loss, test_mse,
    effective_rank, seconds, seconds_per_step)."""
    problem = data.load_movielens(path, test_fraction=test_fraction, seed=seed)
    spec = penalty_grid(problem, lrs={"adam": lr}, penalty_weights=[0.0, penalty_weight], depth=1, seed=seed,
                        max_steps=max_steps, stop_loss=0.0, init_scale=init_scale, dtype=dtype, stop_plateau=plateau,
                        stop_scale=blowup)
    result = (book or RunBook()).sweep(spec)
    table = result.table.assign(arm=lambda t: arm(t))
    table["seconds_per_step"] = table["seconds"] / table["steps"].clip(lower=1)
    return problem, table[["arm", "penalty_weight", "steps", "stop_reason", "train_loss", "test_mse",
                           "effective_rank", "seconds", "seconds_per_step"]]


# --- section 2: the mechanism -------------------------------------------------------------------------------------

def unobserved_block(problem: Problem, n_rows: int = 3) -> tuple[list[int], list[int]]:
    """Rows I (``n_rows`` of them, chosen greedily) and every column J with no observed entry in those rows: a block
    I x J that holds no observed entry (for a uniform sample of density p, about ``n_cols (1 - p)^|I|`` columns)."""
    if not isinstance(problem, Problem) or problem.kind != "completion":
        v.fail("problem", problem, "a completion Problem")
    n_rows = v.integer("n_rows", n_rows, 1, problem.shape[0])
    mask = problem.mask().bool()
    free = torch.ones(problem.shape[1], dtype=torch.bool)
    rows: list[int] = []
    for _ in range(n_rows):  # add the row that keeps the most columns free
        left = torch.tensor([-1 if i in rows else int((free & ~mask[i]).sum()) for i in range(problem.shape[0])])
        best = int(left.argmax())
        rows.append(best)
        free &= ~mask[best]
    return sorted(rows), torch.nonzero(free).flatten().tolist()


def blowup_path(problem: Problem, scales: Sequence[float], n_rows: int = 3) -> pd.DataFrame:
    """The objective along ``W* + c B``, with B the rank-one all-ones matrix on :func:`unobserved_block`'s block
    scaled to ``||B||_F = ||W*||_F``: the data term stays zero (B vanishes on every observed entry) while R falls
    toward 1, below ``R(W*)``. One row per c: scale, train_loss, penalty R, sigma_1 / sigma_1(W*)."""
    if problem.target is None:
        v.fail("problem", problem, "a completion Problem with a known target")
    rows_i, cols_j = unobserved_block(problem, n_rows)
    if not cols_j:
        v.fail("problem", problem.info, "a problem with an all-unobserved block (fewer observed entries)")
    target = problem.target.to(torch.float64)
    block = torch.zeros_like(target)
    block[np.ix_(rows_i, cols_j)] = 1.0
    block *= torch.linalg.matrix_norm(target) / torch.linalg.matrix_norm(block)
    sigma_star = float(torch.linalg.matrix_norm(target, ord=2))
    out = []
    for c in v.real_list("scales", scales, 0.0):
        w = target + c * block
        loss = float(((w[problem.rows, problem.cols] - problem.values.to(torch.float64)) ** 2).mean())
        out.append({"scale": c, "train_loss": loss, "penalty": float(penalties.value(w, "ratio")),
                    "sigma_1_ratio": float(torch.linalg.matrix_norm(w, ord=2)) / sigma_star,
                    "block": f"{len(rows_i)} x {len(cols_j)}"})
    return pd.DataFrame(out)


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


# --- the second seed set (``python -m mcreg_lib.book seed-sets penalty``) ---------------------------------------------

SECOND_SEEDS = {"seeds": [3, 4, 5], "sample_seeds": [5, 6, 7, 8, 9]}
