"""mcreg_lib.nnm.solve against cvxpy on the same program (min ||Z||_* s.t. |A(Z)_i - y_i| <= tol, tol = 1e-3).

References: cvxpy + SCS at eps = 1e-8 where SCS gets there in about a second, else cvxpy + Clarabel (interior point,
about 1e-8 relative; SCS needs 5 to 30 s at eps <= 1e-7 on those). Stated tolerances:

* objective: within OBJ_RTOL = 1e-5 relative of the reference (measured: 3e-9 to 4e-8); the certified interval
  ``objective_bounds`` contains the reference objective (to the reference's own accuracy, 1e-7 relative);
* error_all: within ERR_RTOL = 1% relative of the reference (measured: 1e-5 relative below recovery to 0.25% in
  the recovery regime, where error_all ~ 1e-6 is set by tol); cases are ones whose minimizer is unique (all solvers
  agree); where it is not (n = 20, rank 2, m = 60) only the objective is compared;
* feasibility: every constraint within tol + FEAS_SLACK (the solver's default stopping rule, 1e-6).
"""

import warnings

import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import nnm

TOL = 1e-3
OBJ_RTOL = 1e-5
ERR_RTOL = 1e-2
FEAS_SLACK = 1e-6


def cvxpy_reference(problem, solver):
    import cvxpy as cp

    n_rows, n_cols = problem.shape
    z = cp.Variable((n_rows, n_cols))
    if problem.kind == "completion":
        lhs = cp.vec(z, order="C")[(problem.rows * n_cols + problem.cols).numpy()]
    else:
        lhs = problem.measurements.numpy().reshape(problem.n_observed, -1) @ cp.vec(z, order="C")
    prob = cp.Problem(cp.Minimize(cp.normNuc(z)), [cp.abs(lhs - problem.values.numpy()) <= TOL])
    opts = {"eps": 1e-8, "max_iters": 100_000} if solver == "SCS" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver=solver, **opts)
    assert prob.status == "optimal", prob.status
    w = torch.as_tensor(z.value, dtype=torch.float64)
    return float(torch.linalg.svdvals(w).sum()), mc.reconstruction_error(w, problem.target).item()


def violation(problem, z):
    if problem.kind == "completion":
        lhs = z[problem.rows, problem.cols]
    else:
        lhs = problem.measurements.reshape(problem.n_observed, -1) @ z.reshape(-1)
    return float(((lhs - problem.values).abs() - TOL).clamp_min(0).max())


# (kind, n, rank, m, reference solver, recovers?, unique minimizer?); degrees of freedom r (2n - r)
CASES = [
    ("completion", 20, 3, 90, "SCS", False, True),  # dof 111 > m
    ("completion", 30, 4, 200, "SCS", False, True),  # dof 224 > m
    ("completion", 20, 2, 60, "SCS", False, False),  # dof 76 > m; minimizers with error_all 0.61 to 0.72
    ("completion", 20, 3, 300, "CLARABEL", True, True),  # dof 111
    ("completion", (30, 20), 2, 400, "CLARABEL", True, True),  # not square: dof r (n1 + n2 - r) = 96
    ("sensing", 10, 2, 25, "SCS", False, True),  # dof 36 > m
    ("sensing", 10, 2, 80, "CLARABEL", True, True),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-n{c[1] if isinstance(c[1], int) else 'x'.join(map(str, c[1]))}-r{c[2]}-m{c[3]}")
def case(request):
    kind, n, rank, m, solver, recovers, unique = request.param
    make = mc.completion_problem if kind == "completion" else mc.sensing_problem
    shape = {"n_rows": n[0], "n_cols": n[1]} if isinstance(n, tuple) else {"n": n}
    problem = make(rank=rank, seed=0, **shape, **{"n_observed" if kind == "completion" else "n_measurements": m})
    z, info = nnm.solve(problem, TOL)
    return problem, z, info, cvxpy_reference(problem, solver), recovers, unique


def test_agrees_with_cvxpy(case):
    problem, z, info, (ref_obj, ref_err), _, unique = case
    assert info["status"] == "optimal"
    assert info["objective"] == pytest.approx(ref_obj, rel=OBJ_RTOL)
    assert float(torch.linalg.svdvals(z).sum()) == pytest.approx(info["objective"], rel=1e-12)
    lo, hi = info["objective_bounds"]
    assert lo <= ref_obj * (1 + 1e-7)
    if hi is not None:
        assert hi >= ref_obj * (1 - 1e-7)
    if unique:
        assert mc.reconstruction_error(z, problem.target).item() == pytest.approx(ref_err, rel=ERR_RTOL)


def test_feasible_and_certified(case):
    problem, z, info, _, _, _ = case
    assert violation(problem, z) <= FEAS_SLACK
    assert violation(problem, z) == pytest.approx(info["violation"], abs=1e-12)
    assert info["gap"] <= 1e-5 and info["dual_bound"] <= info["objective"] * (1 + 1e-12)


def test_recovery_above_degrees_of_freedom_only(case):
    problem, z, _, _, recovers, _ = case
    err = mc.reconstruction_error(z, problem.target).item()
    if recovers:
        assert err < 1e-5  # exact up to the tol = 1e-3 box: about 1e-6
    else:
        assert err > 0.1


def test_warm_start_same_answer_fewer_iterations():
    p = mc.completion_problem(30, 3, 600, seed=0)  # dof 171
    z, info = nnm.solve(p)
    # from its own solution: stops at the first check, same matrix
    z2, info2 = nnm.solve(p, warm_start=(z, info["dual"], info["rho"]))
    assert info2["status"] == "optimal" and info2["iterations"] == 10
    assert torch.linalg.matrix_norm(z2 - z) <= 1e-6 * torch.linalg.matrix_norm(z)
    # a nearby program (tol 1e-3 -> 1.2e-3): same answer as a cold start, in fewer than half the iterations
    cold, info_cold = nnm.solve(p, 1.2e-3)
    warm, info_warm = nnm.solve(p, 1.2e-3, warm_start=(z, info["dual"], info["rho"]))
    assert info_warm["status"] == info_cold["status"] == "optimal"
    assert info_warm["iterations"] < info_cold["iterations"] / 2
    assert info_warm["objective"] == pytest.approx(info_cold["objective"], rel=OBJ_RTOL)
    assert torch.linalg.matrix_norm(warm - cold) <= 1e-4 * torch.linalg.matrix_norm(cold)
    # the multiplier matrix of a smaller problem warm-starts a larger one with the same seed (nested entries)
    bigger = mc.completion_problem(30, 3, 606, seed=0)
    zb, info_b = nnm.solve(bigger, warm_start=(z, info["dual"]))
    assert info_b["status"] == "optimal" and info_b["objective"] == pytest.approx(nnm.solve(bigger)[1]["objective"],
                                                                                   rel=OBJ_RTOL)


def test_max_iters_reports_status():
    p = mc.completion_problem(20, 3, 300, seed=0)
    z, info = nnm.solve(p, max_iters=15)
    assert info["status"] == "max_iters" and info["iterations"] == 15 and z.shape == (20, 20)


@pytest.mark.parametrize("kwargs, name", [
    ({"tol": -1.0}, "tol=-1.0"),
    ({"rel_gap": 0.0}, "rel_gap=0.0"),
    ({"feas_slack": -1e-6}, "feas_slack=-1e-06"),
    ({"max_iters": 0}, "max_iters=0"),
    ({"check_every": 0}, "check_every=0"),
    ({"rho": -2.0}, "rho=-2.0"),
    ({"warm_start": "zeros"}, "warm_start='str'"),
    ({"warm_start": (torch.zeros(3, 3), None)}, r"warm_start\[0\]"),
    ({"warm_start": (torch.zeros(8, 8), torch.zeros(5))}, r"warm_start\[1\]"),
    ({"warm_start": (torch.zeros(8, 8), None, 0.0)}, r"warm_start\[2\]=0.0"),
])
def test_bad_input_names_the_parameter(kwargs, name):
    p = mc.completion_problem(8, 1, 30, seed=0)
    with pytest.raises(ValueError, match=name):
        nnm.solve(p, **kwargs)


def test_bad_problem_names_the_parameter():
    with pytest.raises(ValueError, match="problem='dict'"):
        nnm.solve({"kind": "completion"})
    s = mc.sensing_problem(6, 1, 20, seed=0)
    with pytest.raises(ValueError, match=r"warm_start\[1\]"):
        nnm.solve(s, warm_start=(torch.zeros(6, 6), torch.zeros(6, 6)))
