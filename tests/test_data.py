"""mcreg_lib.data: the MovieLens loader on a small generated file in the u.data format; image problems."""

import numpy as np
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import data


def write_u_data(path, n_users=15, n_items=11, n_ratings=80, seed=0):
    rng = np.random.default_rng(seed)
    flat = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    users, items = flat // n_items + 1, flat % n_items + 1
    ratings = rng.integers(1, 6, size=n_ratings)
    lines = [f"{u}\t{i}\t{r}\t{881250949 + k}" for k, (u, i, r) in enumerate(zip(users, items, ratings))]
    path.write_text("\n".join(lines) + "\n")
    return users, items, ratings


def test_load_movielens_split(tmp_path):
    path = tmp_path / "u.data"
    users, items, ratings = write_u_data(path)
    prob = mc.data.load_movielens(path, test_fraction=0.25, seed=3)
    assert prob.shape == (len(np.unique(users)), len(np.unique(items)))
    assert prob.n_observed == 60 and prob.test_values.numel() == 20
    assert sorted(np.concatenate([prob.values.numpy(), prob.test_values.numpy()])) == sorted(ratings.astype(float))
    train = set(zip(prob.rows.tolist(), prob.cols.tolist()))
    test = set(zip(prob.test_rows.tolist(), prob.test_cols.tolist()))
    assert not train & test
    again = mc.data.load_movielens(path, test_fraction=0.25, seed=3)
    assert again.fingerprint() == prob.fingerprint()
    other = mc.data.load_movielens(path, test_fraction=0.25, seed=4)
    assert other.fingerprint() != prob.fingerprint()


def test_load_movielens_n_train(tmp_path):
    """P3's protocol: exactly n_train random ratings observed, every other rating held out; seeded."""
    path = tmp_path / "u.data"
    users, items, ratings = write_u_data(path)
    prob = mc.data.load_movielens(path, n_train=30, seed=1)
    assert prob.n_observed == 30 and prob.test_values.numel() == 50
    assert prob.info["n_train"] == 30 and "test_fraction" not in prob.info
    assert sorted(np.concatenate([prob.values.numpy(), prob.test_values.numpy()])) == sorted(ratings.astype(float))
    train = set(zip(prob.rows.tolist(), prob.cols.tolist()))
    test = set(zip(prob.test_rows.tolist(), prob.test_cols.tolist()))
    assert len(train) == 30 and len(test) == 50 and not train & test
    assert mc.data.load_movielens(path, n_train=30, seed=1).fingerprint() == prob.fingerprint()
    assert mc.data.load_movielens(path, n_train=30, seed=2).fingerprint() != prob.fingerprint()
    assert mc.data.load_movielens(path).info["test_fraction"] == 0.2


def test_load_movielens_n_train_rejects_bad_input(tmp_path):
    path = tmp_path / "u.data"
    write_u_data(path)
    with pytest.raises(ValueError, match="not allowed together"):
        mc.data.load_movielens(path, test_fraction=0.2, n_train=10)
    with pytest.raises(ValueError, match="n_train=80"):
        mc.data.load_movielens(path, n_train=80)
    with pytest.raises(ValueError, match="n_train=0"):
        mc.data.load_movielens(path, n_train=0)


def test_movielens_run_reports_test_mse(tmp_path):
    path = tmp_path / "u.data"
    write_u_data(path)
    prob = mc.data.load_movielens(path)
    run = mc.fit(prob, depth=2, optimizer="gd", lr=1.0, init_scale=1e-2, max_steps=50)
    assert np.isfinite(run.summary["test_mse"])
    assert run.summary["train_loss"] < 10.0


def test_load_movielens_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="path="):
        mc.data.load_movielens(tmp_path / "missing.data")
    bad = tmp_path / "bad.data"
    bad.write_text("1\tx\t3\t4\n")
    with pytest.raises(ValueError, match="not a MovieLens"):
        mc.data.load_movielens(bad)
    path = tmp_path / "u.data"
    write_u_data(path)
    with pytest.raises(ValueError, match="test_fraction"):
        mc.data.load_movielens(path, test_fraction=1.0)


def test_image_problem_scales_and_samples():
    img = np.add.outer(np.arange(40.0), np.arange(30.0))
    p = data.image_problem(img, size=16, fraction=0.25, seed=2, name="ramp")
    assert p.shape == (16, 16) and p.n_observed == 64
    assert float(p.target.square().mean()) == pytest.approx(1.0)
    assert torch.equal(p.values, p.target[p.rows, p.cols])
    assert p.info["image"] == "ramp"
    q = data.image_problem(img, size=16, fraction=0.25, seed=2)
    assert torch.equal(p.rows, q.rows) and torch.equal(p.cols, q.cols)
    with pytest.raises(ValueError, match="fraction=0"):
        data.image_problem(img, size=16, fraction=0.0)
    with pytest.raises(ValueError, match="image="):
        data.image_problem(np.zeros((4, 4, 3)), size=4)
