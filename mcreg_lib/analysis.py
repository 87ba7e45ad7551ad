"""Reading results: the statistics the chapters compute from tables of runs, one definition each.

* :func:`degrees_of_freedom`: ``r (n_rows + n_cols - r)``, the dimension of the rank-r matrices; no method can
  recover a generic rank-r matrix from fewer observations.
* :func:`spread`: mean, geometric mean (``scipy.stats.gmean``), min, max and count of a metric over seeds.
* :func:`recovery_threshold`: the smallest number of observations from which a method recovers, by one of two
  stated rules (:data:`RECOVERY_RULES`); every chapter that reports a threshold names its rule.
* :func:`log_linear_rate` and :func:`loglog_slope`: least-squares fits of a linear rate and of a power law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import _validate as v

RECOVERY_RULES = {
    "mean": "the mean of the metric over the runs at that number of observations is below the tolerance",
    "every_run": "every run at that number of observations has the metric below the tolerance and did not diverge",
}


def degrees_of_freedom(n_rows: int, n_cols: int, rank: int) -> int:
    """``r (n_rows + n_cols - r)``: the dimension of the rank-r matrices; ``r (2n - r)`` for a square matrix."""
    return int(rank * (n_rows + n_cols - rank))


def spread(table: pd.DataFrame, by: Sequence[str], value: str = "error_all") -> pd.DataFrame:
    """Mean, geometric mean, min, max and count of ``value`` over the rows of each group of ``by`` (e.g. over seeds).

    The geometric mean clips values below 1e-300 (an exact zero would make it zero)."""
    by = list(by)
    g = table.groupby(by)[value]
    out = g.agg(mean="mean", min="min", max="max", n="count")
    out["geomean"] = g.apply(lambda x: float(stats.gmean(np.clip(x.to_numpy(float), 1e-300, None))))
    return out.reset_index()


def recovery_threshold(table: pd.DataFrame, *, by: Sequence[str], x: str, y: str, tol: float,
                       rule: str) -> pd.DataFrame:
    """Per group of ``by``: the smallest ``x`` from which a method recovers at that ``x`` and at every larger ``x`` of
    the grid (NaN where none does), where "recovers at x" is decided by ``rule`` (:data:`RECOVERY_RULES`):

    * ``"mean"``: the mean of ``y`` over the group's runs at x is below ``tol`` (a NaN, e.g. from a diverged run,
      makes the mean NaN: not recovered);
    * ``"every_run"``: every run at x has a finite ``y`` below ``tol`` and (if the table has ``diverged``) did not
      diverge.

    Columns: ``by``, threshold, tested_max (the largest x of the grid), recovered_fraction (of the group's runs,
    each judged alone: finite y below tol, not diverged).
    """
    tol = v.positive("tol", tol)
    rule = v.choice("rule", rule, RECOVERY_RULES)
    by = list(by)
    missing = [c for c in [*by, x, y] if c not in table.columns]
    if missing:
        v.fail("table", f"a table without columns {missing}", f"a table with columns {[*by, x, y]}")
    t = table.copy()
    ok = (t[y] < tol) & np.isfinite(t[y].astype(float))
    if "diverged" in t.columns:
        ok &= ~t["diverged"].fillna(False).astype(bool)
    t["_ok"] = ok
    rows = []
    for key, group in t.groupby(by, sort=False):
        if rule == "mean":
            per_x = (group.groupby(x)[y].mean() < tol).sort_index()
        else:
            per_x = group.groupby(x)["_ok"].all().sort_index()
        threshold = math.nan
        for xv in per_x.index[::-1]:  # walk down from the largest x while the method recovers
            if not per_x[xv]:
                break
            threshold = float(xv)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "threshold": threshold, "tested_max": float(per_x.index.max()),
                     "recovered_fraction": float(group["_ok"].mean())})
    return pd.DataFrame(rows)


def log_linear_rate(steps: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """Least-squares fit ``log(loss) = a + b * step``: returns slope b (per step), rate ``exp(b)`` and r_squared."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if steps.size < 3 or steps.size != losses.size or np.any(losses <= 0) or not np.all(np.isfinite(losses)):
        v.fail("losses", f"{losses.size} values", "at least 3 positive finite losses, one per step")
    fit = stats.linregress(steps, np.log(losses))
    return {"slope": float(fit.slope), "rate": float(math.exp(fit.slope)), "r_squared": float(fit.rvalue**2)}


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of the least-squares line through (log x, log y); all values must be positive and finite."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or x.size != y.size or np.any(x <= 0) or np.any(y <= 0) or not np.all(np.isfinite(y)):
        v.fail("y", list(y), "at least 2 positive finite values, one per x")
    return float(stats.linregress(np.log(x), np.log(y)).slope)
