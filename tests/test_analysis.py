"""mcreg_lib.analysis: degrees of freedom, spreads, the one recovery-threshold function and its two rules, fits."""

import math

import numpy as np
import pandas as pd
import pytest

import mcreg_lib as mc
from mcreg_lib import analysis


def test_degrees_of_freedom():
    assert analysis.degrees_of_freedom(100, 100, 5) == 975
    assert analysis.degrees_of_freedom(100, 100, 10) == 1900
    assert analysis.degrees_of_freedom(3, 7, 1) == 9


def test_recovery_threshold_mean_rule_needs_every_larger_m():
    table = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4,
        "n_observed": [100, 200, 300, 400] * 2,
        "error_all": [0.5, 1e-3, 0.2, 1e-4, 0.9, 0.8, 0.7, 0.6],
    })
    out = analysis.recovery_threshold(table, by=["method"], x="n_observed", y="error_all", tol=1e-2,
                                      rule="mean").set_index("method")
    assert out.loc["a", "threshold"] == 400  # 200 recovers, but 300 does not: recovery must persist
    assert out.loc["a", "tested_max"] == 400
    assert math.isnan(out.loc["b", "threshold"])
    with pytest.raises(ValueError, match="tol"):
        analysis.recovery_threshold(table, by=["method"], x="n_observed", y="error_all", tol=0, rule="mean")
    with pytest.raises(ValueError, match="rule='median' is not allowed"):
        analysis.recovery_threshold(table, by=["method"], x="n_observed", y="error_all", tol=1e-2, rule="median")


def test_the_two_rules_differ_where_one_seed_fails():
    t = pd.DataFrame({
        "method": ["a"] * 6 + ["b"] * 2,
        "problem_n_observed": [100, 100, 200, 200, 300, 300, 100, 300],
        "error_unobserved": [1e-4, 1.5e-2, 1e-4, 1e-4, 1e-5, 1e-5, 0.9, 0.9],
    })
    kw = dict(by=["method"], x="problem_n_observed", y="error_unobserved", tol=1e-2)
    every = analysis.recovery_threshold(t, rule="every_run", **kw).set_index("method")
    mean = analysis.recovery_threshold(t, rule="mean", **kw).set_index("method")
    assert every.loc["a", "threshold"] == 200  # one seed at m = 100 misses the tolerance
    assert mean.loc["a", "threshold"] == 100  # ... but the mean over seeds is below it
    assert math.isnan(every.loc["b", "threshold"]) and math.isnan(mean.loc["b", "threshold"])
    assert every.loc["a", "recovered_fraction"] == pytest.approx(5 / 6)
    t["diverged"] = [False] * 4 + [True, False] + [False] * 2
    assert math.isnan(analysis.recovery_threshold(t, rule="every_run", **kw).set_index("method").loc["a", "threshold"])
    with pytest.raises(ValueError, match="table="):
        analysis.recovery_threshold(t, rule="every_run", **{**kw, "by": ["nope"]})


def test_spread_uses_the_geometric_mean():
    table = pd.DataFrame({"depth": [2, 2, 3, 3], "error_all": [1e-2, 1e-4, 1.0, 1.0]})
    out = analysis.spread(table, ["depth"]).set_index("depth")
    assert out.loc[2, "geomean"] == pytest.approx(1e-3)
    assert out.loc[2, "min"] == 1e-4 and out.loc[2, "max"] == 1e-2 and out.loc[2, "n"] == 2
    assert out.loc[3, "mean"] == 1.0


def test_fits():
    steps = np.arange(10.0)
    fit = analysis.log_linear_rate(steps, 3.0 * 0.5**steps)
    assert fit["rate"] == pytest.approx(0.5) and fit["r_squared"] == pytest.approx(1.0)
    assert analysis.loglog_slope([1, 10, 100], [2, 200, 20_000]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="losses="):
        analysis.log_linear_rate(steps[:2], [1.0, 0.5])
    with pytest.raises(ValueError, match="y="):
        analysis.loglog_slope([1, 2], [1, -1])


def test_front_door_exposes_analysis():
    assert mc.analysis is analysis
