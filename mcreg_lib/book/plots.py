"""One look for every figure of the book: a seaborn theme and a few helpers that keep notebook cells short."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..training import Run


def use_book_style() -> None:
    """The book's figure style (seaborn whitegrid, readable fonts, a colorblind palette) and table display
    (full cell text, four significant digits)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": 12, "legend.frameon": False})
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.float_format", "{:.4g}".format)


def histories(runs: Sequence[Run], *, by: Sequence[str] = ("depth",)) -> pd.DataFrame:
    """The histories of several runs in one tidy table, with the config fields named in ``by`` as columns."""
    frames = []
    for run in runs:
        h = run.history.copy()
        cfg = run.config.as_dict()
        for key in by:
            h[key] = cfg[key] if key in cfg else run.problem_info.get(key)
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def singular_values_long(history: pd.DataFrame, id_vars: Sequence[str] = ("step",)) -> pd.DataFrame:
    """Reshape the ``sigma_i`` columns of a history into long form: one row per (step, index)."""
    cols = [c for c in history.columns if c.startswith("sigma_")]
    out = history.melt(id_vars=list(id_vars), value_vars=cols, var_name="index", value_name="singular_value")
    out["index"] = out["index"].str.removeprefix("sigma_").astype(int)
    return out


def step_axis(ax: plt.Axes, label: str = "step") -> plt.Axes:
    """A log-like x axis for training steps that keeps step 0 (linear below 1, logarithmic above)."""
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel(label)
    return ax


def threshold_text(x: float) -> str:
    """A recovery threshold (``mcreg_lib.analysis.recovery_threshold``) in prose: ``2,000`` or "none in the grid"."""
    return "none in the grid" if math.isnan(x) else f"{int(x):,}"
