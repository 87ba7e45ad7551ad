"""Chapter "Getting started" (notebooks/getting_started.md): a tour of the library in one experiment, P3's Table 1
(Arora, Cohen, Hu & Luo 2019, as published in the authors' blog post): reconstruction error at m = 2000 on a
100 x 100 rank-5 matrix for nuclear-norm minimization and depths 2 and 3, plus depth 1.

The protocol is that of the runs behind the table: the post's Table 1 numbers for depths 2 and 3 are the titles of
its dynamics figure, whose runs are plain gradient descent from ``W(0) = 1e-3 I`` stopped at training MSE 1e-6
(the authors' code: ``configs/dynamics.toml``, ``initialization = "identity"``). What "our number reproduces the
published one" means is fixed here, before any run, by :func:`reproduces`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import _validate as v
from ..book.parameters import Parameters, choice, dtype, integer, integers, number, positive

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate). Measured 2026-12-02 on the idle machine
# (2 torch threads): protocol 44 s with the Douglas-Rachford nuclear-norm solver (379 s earlier with cvxpy + SCS on
# the machine shared with other sessions); preview 14 s.
# With the loop of commit 56fe0a4 and later, on a second 2-core machine of the same kind (2026-12-03), the
# protocol value below; the build machine's, with the loop of earlier commits, in the comment above.
# Here: 18 s (a make book that trained 33 runs and 4 other results, read 6).
COLD_SECONDS = {"protocol": 18, "preview": 14}

# The second seed set (``python -m mcreg_lib.book seed-sets CHAPTER``): every seed of the chapter moved to values its
# defaults do not use; a paper claim whose verdict changes there depends on the seeds.
SECOND_SEEDS = {"seeds": [10, 11, 12, 13, 14], "check_seeds": [15, 16, 17, 18, 19]}

# P3's Table 1 as published [blog: the authors' post "Understanding implicit regularization in deep learning by
# analyzing trajectories of gradient descent", offconvex.org, 2019-07-10]; depth 1 from the title of the same post's
# dynamics figure (its Figure 3), which is not in the table.
PUBLISHED = {"nuclear norm": 1.06e-1, "depth 2": 5.92e-2, "depth 3": 2.58e-5}
PUBLISHED_FIGURE = {"depth 1": 0.819}
METHOD_ORDER = ("nuclear norm", "depth 1", "depth 2", "depth 3", "depth 4", "depth 5")

PARAMETERS = Parameters(
    "getting_started",
    integer("n", 100, "the hidden matrix is n x n", minimum=2, preview=20),
    integer("rank", 5, "rank of the hidden matrix", minimum=1, maximum="n", preview=2),
    integer("n_observed", 2000, "number of observed entries", minimum=1, maximum="n * n", preview=200),
    integers("depths", [1, 2, 3], "depths of the factorizations to compare", minimum=1, preview=[1, 2, 3]),
    choice("init", "identity", "initialization; P3's Table 1 runs start at init_scale times the identity",
           choices=("identity", "gaussian", "orthogonal", "balanced")),
    positive("init_scale", 1e-3, "scale of the initialization, end to end"),
    positive("lr", 3.0, "gradient-descent step on the mean squared error (P3: 0.01; see the text)"),
    integer("max_steps", 100_000, "step budget per run", minimum=1, preview=500),
    positive("step_check", 10.0, "rerun the first instance with a step this many times smaller (and as many times "
             "the budget); 1 skips it"),
    number("stop_loss", 1e-6, "stop when the training loss reaches this (P3: 1e-6)", minimum=0.0),
    integers("seeds", [0, 1, 2, 3, 4], "instances: each seeds a hidden matrix and its observed entries",
             minimum=0, preview=[0, 1]),
    integers("check_seeds", [5, 6, 7, 8, 9], "a second set of instances, on which every claim is decided again",
             minimum=0, empty=True, preview=[2, 3]),
    dtype("float32", "floating-point precision (P3: float32)"),
)


def reproduces(published: float, ours: Sequence[float]) -> dict[str, float | bool]:
    """Does our spread of results over instances reproduce one published number?

    The published number comes from one instance (one random hidden matrix and one set of observed entries) of the
    same distribution as ours. Rule, fixed before running: it is reproduced when it lies within a factor F of the
    median of our instances, where F is the spread of our instances themselves (largest over smallest): a new instance
    rarely lies farther from the median than the whole range of the others. Needs at least two positive numbers.

    Returns median, factor F, the interval [median / F, median * F], the published number's ratio to the median and
    ``holds``.
    """
    ours = np.asarray([float(x) for x in ours])
    if ours.size < 2 or not np.all(np.isfinite(ours)) or np.any(ours <= 0):
        v.fail("ours", list(ours), "at least two positive finite errors (one per instance)")
    published = v.positive("published", published)
    median = float(np.median(ours))
    factor = float(ours.max() / ours.min())
    ratio = published / median
    return {"median": median, "factor": factor, "low": median / factor, "high": median * factor, "ratio": ratio,
            "holds": bool(1 / factor <= ratio <= factor)}


def method_name(depth: int | None) -> str:
    """The row label of a method: "nuclear norm" for nuclear-norm minimization, else "depth N"."""
    return "nuclear norm" if depth is None else f"depth {int(depth)}"


def error_table(errors: pd.DataFrame) -> pd.DataFrame:
    """P3's Table 1 beside ours: one row per method with our median, min and max over instances (column
    ``error_all`` of ``errors``, one row per (method, seed)), the published value and :func:`reproduces`."""
    rows = []
    for method in [m for m in METHOD_ORDER if m in set(errors.method)]:
        e = errors[errors.method == method].error_all.to_numpy()
        published = PUBLISHED.get(method, PUBLISHED_FIGURE.get(method, math.nan))
        row = {"method": method, "instances": len(e), "ours (median)": float(np.median(e)),
               "ours (min)": float(e.min()), "ours (max)": float(e.max()), "P3 (published)": published,
               "source": "Table 1" if method in PUBLISHED else "Figure 3 title" if method in PUBLISHED_FIGURE else ""}
        if math.isfinite(published) and len(e) >= 2 and (e > 0).all():
            r = reproduces(published, e)
            row.update({"within a factor": r["factor"], "published / ours": r["ratio"], "reproduced": r["holds"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def error_figure(errors: pd.DataFrame, *, n: int, rank: int, n_observed: int, ax: plt.Axes | None = None
                 ) -> plt.Figure:
    """The chapter's one figure: the error on all entries of each method (dots: our instances; bar: their median)
    against P3's published numbers (red stars), on a log axis. ``errors``: one row per (method, seed)."""
    methods = [m for m in METHOD_ORDER if m in set(errors.method)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
    fig = ax.figure
    rng = np.random.default_rng(0)
    for i, method in enumerate(methods):
        e = errors[errors.method == method].error_all.to_numpy()
        color = "grey" if method == "nuclear norm" else plt.cm.viridis(0.15 + 0.7 * i / max(len(methods) - 1, 1))
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(e)), e, s=28, color=color, alpha=0.8, zorder=3)
        ax.hlines(np.median(e), i - 0.28, i + 0.28, color=color, lw=3, zorder=2)
        published = PUBLISHED.get(method, PUBLISHED_FIGURE.get(method))
        if published is not None:
            ax.scatter([i + 0.32], [published], marker="*", s=190, color="crimson", zorder=4,
                       label="P3, published" if not ax.get_legend_handles_labels()[1].count("P3, published") else None)
    ax.scatter([], [], s=28, color="black", alpha=0.8, label="ours (one dot per instance, bar: median)")
    ax.set_xticks(range(len(methods)), ["nuclear-norm\nminimization" if m == "nuclear norm" else m for m in methods])
    ax.set_yscale("log")
    low = min(float(errors.error_all.min()), *(PUBLISHED.get(m, np.inf) for m in methods))
    ax.set_ylim(low / 4, 2.0)
    ax.set_ylabel("error on all entries\n$\\|W - W^\\star\\|_F^2 / \\|W^\\star\\|_F^2$")
    ax.set_title(f"Filling in a {n} x {n} matrix of rank {rank} from {n_observed:,} of its entries")
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig


CLAIMS = {
    "nuclear norm": "Reconstruction error of nuclear-norm minimization at m = 2000: 0.106",
    "depth 2": "Reconstruction error of depth 2 at m = 2000: 0.0592",
    "depth 3": "Reconstruction error of depth 3 at m = 2000: 2.58e-5",
    "recovers": "Depth 3 recovers the matrix where depth 2 and nuclear-norm minimization do not",
    "order": "Depth 2's error is below nuclear-norm minimization's",
}


def decide(errors: pd.DataFrame) -> dict[str, dict]:
    """The chapter's paper claims decided on one set of instances. ``errors``: one row per (method, seed) with
    ``error_all``. Returns, for each key of :data:`CLAIMS` that the methods present allow, a dict with ``holds``,
    ``ours`` (what the claim records) and ``detail``. Rules (fixed before running):

    * a published number is reproduced as :func:`reproduces` says;
    * "recovers": on every instance depth 3's error is more than 10x below both depth 2's and nuclear-norm
      minimization's (the book compares errors only when they are more than 10x apart or one run did not recover);
    * "order": our median error of depth 2 is below our median of nuclear-norm minimization (neither recovers).
    """
    per_seed = errors.pivot_table(index="seed", columns="method", values="error_all")
    out: dict[str, dict] = {}
    for method in PUBLISHED:
        if method in per_seed and per_seed[method].notna().sum() >= 2:
            e = per_seed[method].dropna().to_numpy()
            r = reproduces(PUBLISHED[method], e)
            out[method] = {"holds": r["holds"], "ours": {"median": r["median"], "factor F": r["factor"],
                                                         "published / median": r["ratio"]},
                           "detail": f"ours over {len(e)} instances: {e.min():.3g} to {e.max():.3g}"}
    if {"depth 3", "depth 2", "nuclear norm"} <= set(per_seed.columns):
        gap = np.minimum(per_seed["depth 2"], per_seed["nuclear norm"]) / per_seed["depth 3"]
        out["recovers"] = {"holds": bool((gap > 10).all()), "ours": [float(x) for x in gap],
                           "detail": "per instance: the smaller of depth 2's and nuclear-norm minimization's errors "
                                     "over depth 3's"}
        below = per_seed["depth 2"] < per_seed["nuclear norm"]
        med2, med_n = float(per_seed["depth 2"].median()), float(per_seed["nuclear norm"].median())
        out["order"] = {"holds": med2 < med_n, "ours": {"depth 2": med2, "nuclear norm": med_n},
                        "detail": f"depth 2 below on {int(below.sum())} of {len(below)} instances"}
    return out


def describe(ours: dict | list | float) -> str:
    """A claim's recorded numbers in words: ``median 0.0309, factor F 3.2`` or a list joined by commas."""
    if isinstance(ours, dict):
        return ", ".join(f"{k} {val:.3g}" for k, val in ours.items())
    if isinstance(ours, (list, tuple)):
        return ", ".join(f"{val:.3g}" for val in ours)
    return f"{ours:.3g}"
