import numpy as np
import pytest
import torch

import mcreg_lib as mc


def test_completion_convention():
    p = mc.completion_problem(n=30, rank=3, n_observed=200, seed=1)
    assert p.shape == (30, 30) and p.n_observed == 200
    assert torch.linalg.matrix_norm(p.target).item() == pytest.approx(30.0)
    assert torch.linalg.matrix_rank(p.target).item() == 3
    flat = p.rows * 30 + p.cols
    assert flat.unique().numel() == 200  # distinct entries
    assert torch.equal(p.values, p.target[p.rows, p.cols])
    assert p.mask().sum().item() == 200


def test_rectangular_convention():
    p = mc.completion_problem(n_rows=10, n_cols=40, rank=2, n_observed=50, seed=0)
    assert p.shape == (10, 40)
    assert torch.linalg.matrix_norm(p.target).item() == pytest.approx(np.sqrt(400))


def test_standard_instance_matches_papers_md():
    """Derived from the convention: n = 100, r = 5: effective rank about 4.94, nuclear norm about 221."""
    p = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    assert 4.8 < mc.effective_rank(p.target).item() < 5.0
    assert 200 < mc.nuclear_norm(p.target).item() < 240


def test_same_seed_same_problem_other_seed_other_problem():
    a, b = (mc.completion_problem(n=20, rank=2, n_observed=100, seed=5) for _ in range(2))
    c = mc.completion_problem(n=20, rank=2, n_observed=100, seed=6)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert torch.equal(a.target, b.target)


def test_sensing():
    p = mc.sensing_problem(n=10, rank=2, n_measurements=150, seed=0)
    assert p.measurements.shape == (150, 10, 10)
    assert torch.allclose(p.values, torch.einsum("mij,ij->m", p.measurements, p.target))
    assert p.measurements.std().item() == pytest.approx(0.1, rel=0.1)  # N(0, 1/n^2)


def test_problem_from_observations_roundtrip():
    p = mc.problem_from_observations([0, 1, 2], [2, 0, 1], [1.0, -2.0, 3.5], (3, 4),
                                     test_rows=[0], test_cols=[0], test_values=[7.0])
    assert p.observed_matrix()[1, 0].item() == -2.0
    assert p.test_values.tolist() == [7.0]
    assert p.info["n_observed"] == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=10, rank=11, n_observed=5), "rank=11"),
    (dict(n=10, rank=0, n_observed=5), "rank=0"),
    (dict(n=10, rank=2, n_observed=101), "n_observed=101"),
    (dict(n=10, rank=2, n_observed=0), "n_observed=0"),
    (dict(n=0, rank=1, n_observed=1), "n=0"),
    (dict(n="10", rank=2, n_observed=5), "got type str"),
    (dict(n=10.5, rank=2, n_observed=5), "n=10.5"),
    (dict(n=True, rank=1, n_observed=1), "got type bool"),
    (dict(n=10, rank=2, n_observed=5, seed=-1), "seed=-1"),
    (dict(rank=2, n_observed=5), "give n"),
])
def test_completion_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mc.completion_problem(**kwargs)


@pytest.mark.parametrize("args, kwargs, match", [
    (([0, 5], [0, 1], [1.0, 2.0], (3, 3)), {}, r"rows=.*containing 5.*\[0, 2\]"),
    (([0, 1], [0, -1], [1.0, 2.0], (3, 3)), {}, r"cols=.*containing -1"),
    (([0, 0], [1, 1], [1.0, 2.0], (3, 3)), {}, r"entry \(0, 1\) given 2 times"),
    (([0, 1], [0, 1], [1.0, float("nan")], (3, 3)), {}, "values=.*NaN or infinite"),
    (([0, 1], [0, 1], [1.0, float("inf")], (3, 3)), {}, "values=.*NaN or infinite"),
    (([0, 1], [0, 1, 2], [1.0, 2.0], (3, 3)), {}, "cols=.*length 3"),
    (([0, 1], [0, 1], [1.0], (3, 3)), {}, "values=.*length 1"),
    (([0.5], [0], [1.0], (3, 3)), {}, "rows=.*integer"),
    (([0], [0], [1.0], (3,)), {}, "shape="),
    (([0], [0], [1.0], (3, 3)), {"target": np.zeros((2, 2))}, r"target=.*\(3, 3\)"),
    (([0], [0], [1.0], (3, 3)), {"test_rows": [0], "test_cols": [0], "test_values": [2.0]}, "also observed"),
    (([0], [0], [1.0], (3, 3)), {"test_rows": [1]}, "give all of test_rows"),
])
def test_observations_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mc.problem_from_observations(*args, **kwargs)
