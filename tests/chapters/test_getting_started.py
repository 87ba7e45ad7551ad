"""Getting started (mcreg_lib.chapters.getting_started): the rule that decides "reproduces", the claims of P3's
Table 1 decided on a set of instances, the table and the figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mcreg_lib.chapters import getting_started as gs  # noqa: E402


def _errors(nnm, d2, d3, d1=None):
    rows = []
    for method, values in (("nuclear norm", nnm), ("depth 2", d2), ("depth 3", d3), ("depth 1", d1)):
        for seed, e in enumerate(values or []):
            rows.append({"method": method, "seed": seed, "error_all": e})
    return pd.DataFrame(rows)


def test_reproduces_within_the_spread_of_the_instances():
    r = gs.reproduces(2.58e-5, [2e-5, 4e-5, 3e-5])
    assert r["median"] == pytest.approx(3e-5) and r["factor"] == pytest.approx(2.0)
    assert r["holds"] and r["low"] == pytest.approx(1.5e-5) and r["high"] == pytest.approx(6e-5)
    assert gs.reproduces(6e-5, [2e-5, 4e-5, 3e-5])["holds"]  # the edge counts
    assert not gs.reproduces(6.1e-5, [2e-5, 4e-5, 3e-5])["holds"]
    assert not gs.reproduces(0.106, [0.05, 0.017, 0.03, 0.054, 0.031])["holds"]  # 3.4x the median, spread 3.2
    with pytest.raises(ValueError, match="ours="):
        gs.reproduces(1.0, [0.5])
    with pytest.raises(ValueError, match="ours="):
        gs.reproduces(1.0, [0.5, 0.0])
    with pytest.raises(ValueError, match="published="):
        gs.reproduces(-1.0, [0.5, 1.0])


def test_decide_applies_each_rule():
    errors = _errors(nnm=[0.05, 0.1, 0.2], d2=[0.04, 0.06, 0.08], d3=[2e-5, 3e-5, 5e-5])
    d = gs.decide(errors)
    assert set(d) == set(gs.CLAIMS)
    assert d["depth 3"]["holds"] and d["depth 2"]["holds"] and d["nuclear norm"]["holds"]
    assert d["recovers"]["holds"] and d["recovers"]["ours"] == pytest.approx([0.04 / 2e-5, 0.06 / 3e-5, 0.08 / 5e-5])
    assert d["order"]["holds"] and d["order"]["detail"] == "depth 2 below on 3 of 3 instances"
    worse = gs.decide(_errors(nnm=[0.05, 0.1, 0.2], d2=[0.04, 0.06, 0.08], d3=[2e-5, 3e-5, 0.01]))
    assert not worse["recovers"]["holds"]  # one instance where depth 3 is only 4x better: not ordered
    only_depths = gs.decide(_errors(nnm=None, d2=[0.04, 0.06], d3=[2e-5, 3e-5]))
    assert set(only_depths) == {"depth 2", "depth 3"}


def test_error_table_and_figure():
    errors = _errors(nnm=[0.05, 0.03], d2=[0.04, 0.06], d3=[2e-5, 3e-5], d1=[0.8, 0.81])
    table = gs.error_table(errors)
    assert list(table.index) == ["nuclear norm", "depth 1", "depth 2", "depth 3"]
    assert table.loc["depth 1", "source"] == "Figure 3 title" and table.loc["depth 3", "source"] == "Table 1"
    assert table.loc["depth 3", "ours (median)"] == pytest.approx(2.5e-5)
    assert bool(table.loc["depth 3", "reproduced"])
    fig = gs.error_figure(errors, n=100, rank=5, n_observed=2000)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_xticks()) == 4
    assert sorted(set(ax.get_legend_handles_labels()[1])) == ["P3, published", "ours (one dot per instance, bar: median)"]


def test_describe():
    assert gs.describe({"median": 0.0309, "factor F": 3.2}) == "median 0.0309, factor F 3.2"
    assert gs.describe([1.0, 2e-5]) == "1, 2e-05"
    assert gs.describe(np.float64(0.5)) == "0.5"
