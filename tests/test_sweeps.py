import math

import pytest
import torch

import mcreg_lib as mc


def _mixed_spec():
    p = mc.completion_problem(n=12, rank=2, n_observed=60, seed=0)
    q = mc.completion_problem(n=12, rank=2, n_observed=90, seed=1)
    return mc.grid([p, q], depth=3, optimizer="normalized_gd", lr=[1e-3, 3e-3], init_scale=[1e-2, 1e-3],
                   seed=[0, 1], max_steps=300, stop_loss=1e-5, dtype="float64")


def test_runs_in_a_mixed_batch_equal_the_same_runs_fitted_alone():
    spec = _mixed_spec()
    result = mc.sweep(spec, progress=False)
    assert len(result.runs) == len(spec) == 16 and result.computed == 16 and result.cached == 0
    assert set(result.table["batch_size"]) == {16}  # one batch of mixed problems, lrs, scales and seeds
    for (problem, cfg), run in zip(spec, result.runs):
        alone = mc.fit(problem, depth=cfg.depth, optimizer=cfg.optimizer, lr=cfg.lr, init_scale=cfg.init_scale,
                       seed=cfg.seed, max_steps=cfg.max_steps, stop_loss=cfg.stop_loss, dtype="float64",
                       progress=False)
        assert run.summary["steps"] == alone.summary["steps"]
        assert torch.allclose(run.matrix, alone.matrix, rtol=1e-10, atol=1e-13)
        assert run.history["train_loss"].to_numpy() == pytest.approx(alone.history["train_loss"].to_numpy(),
                                                                     rel=1e-9)


def test_a_diverging_run_is_marked_and_does_not_poison_the_batch():
    p = mc.completion_problem(n=15, rank=2, n_observed=100, seed=0)
    spec = mc.grid(p, depth=2, lr=[1.0, 1e5, 2.0], init_scale=1e-2, max_steps=200, seed=0)
    result = mc.sweep(spec, progress=False)
    t = result.table
    assert list(t["diverged"]) == [False, True, False]
    bad = result.runs[1].summary
    assert bad["stop_reason"] == "diverged" and 0 < bad["diverged_at"] == bad["steps"] < 200
    assert math.isnan(bad["error_all"])
    for i, lr in [(0, 1.0), (2, 2.0)]:
        alone = mc.fit(p, depth=2, lr=lr, init_scale=1e-2, max_steps=200, seed=0, progress=False)
        assert torch.allclose(result.runs[i].matrix, alone.matrix, rtol=1e-5, atol=1e-7)
        assert math.isfinite(result.runs[i].summary["error_all"])


def test_grouping_keeps_spec_order_and_splits_by_key():
    p = mc.completion_problem(n=8, rank=1, n_observed=30, seed=0)
    spec = mc.grid(p, depth=[2, 3], seed=[0, 1, 2], lr=0.5, max_steps=20)
    assert mc.sweeps.batches(spec, max_batch=2) == [[0, 1], [2], [3, 4], [5]]
    result = mc.sweep(spec, progress=False, max_batch=2)
    assert list(result.table["depth"]) == [2, 2, 2, 3, 3, 3]
    assert list(result.table["seed"]) == [0, 1, 2, 0, 1, 2]
    assert list(result.histories["run"].unique()) == list(range(6))


def test_progress_bar_over_the_whole_sweep(capsys, monkeypatch):
    p = mc.completion_problem(n=8, rank=1, n_observed=30, seed=0)
    spec = mc.grid(p, depth=[2, 3], seed=[0, 1], lr=0.5, max_steps=1500, stop_loss=0.0)
    mc.sweep(spec, progress=True)
    err = capsys.readouterr().err
    assert "sweep" in err and "runs 4/4" in err and "6.00k/6.00k" in err
    assert "left if every run takes its whole step budget" in err  # the time left is not a forecast
    monkeypatch.setenv("MCREG_PROGRESS", "0")
    mc.sweep(spec)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MCREG_PROGRESS", "1")
    mc.sweep(spec, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("processes", [None, 2])
def test_the_progress_file_counts_the_steps_taken(tmp_path, monkeypatch, processes):
    """The build reads the sweep's progress from a file: the budget used up (a stopped run's whole budget) and the
    run-steps taken (a stopped run's own steps), whichever backend trains the batches."""
    from mcreg_lib import settings

    monkeypatch.setenv("MCREG_PROGRESS_FILE", str(tmp_path / "progress.json"))
    p = mc.completion_problem(n=8, rank=1, n_observed=30, seed=0)
    spec = mc.grid(p, depth=[2, 3], seed=[0, 1], lr=0.5, init_scale=1e-2, max_steps=5_000, stop_loss=1e-6)
    result = mc.sweep(spec, progress=False, processes=processes)
    state = settings.read_progress(tmp_path / "progress.json")
    took = sum(r.summary["steps"] for r in result.runs)
    assert took < 4 * 5_000
    assert state["steps"] == state["total"] == 4 * 5_000 and state["runs"] == 4 and state["taken"] == took


def test_process_pool_gives_the_same_numbers(tmp_path):
    p = mc.completion_problem(n=10, rank=2, n_observed=50, seed=0)
    spec = mc.grid(p, depth=[2, 3], seed=[0, 1], lr=1.0, init_scale=1e-2, max_steps=100)
    local = mc.sweep(spec, progress=False)
    pooled = mc.sweep(spec, progress=False, processes=2, cache=tmp_path)
    for a, b in zip(local.runs, pooled.runs):
        assert torch.equal(a.matrix, b.matrix)
        assert a.history.equals(b.history)
    assert len(mc.RunCache(tmp_path).keys()) == 4  # the workers cached each run


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_batch=0), "max_batch=0"),
    (dict(processes=0), "processes=0"),
    (dict(processes=2, client="tcp://127.0.0.1:1"), "at most one"),
    (dict(cache=3.5), "cache=3.5"),
    (dict(client=42), "client=42"),
])
def test_bad_sweep_arguments(kwargs, match):
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match=match):
        mc.sweep(mc.grid(p, max_steps=5), progress=False, **kwargs)


def test_bad_config_fails_before_any_run():
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    with pytest.raises(ValueError, match=r"run 1 .*lr=-1"):
        mc.grid(p, lr=[0.1, -1.0], max_steps=5)


def test_a_config_is_validated_once(monkeypatch):
    """grid validates every config; the cache key and train take it as validated (no second check)."""
    from mcreg_lib import optimizers

    p = mc.completion_problem(n=6, rank=1, n_observed=15, seed=0)
    spec = mc.grid(p, depth=[1, 2], lr=0.5, max_steps=5)
    calls = []
    real = optimizers.options
    monkeypatch.setattr(optimizers, "options", lambda *a, **k: calls.append(a) or real(*a, **k))
    mc.sweep(spec, cache=False, progress=False)
    from mcreg_lib.cache import run_key

    run_key(*spec[0])
    assert calls == [], "a validated config was validated again"
    assert spec[0][1] == mc.RunConfig(depth=1, lr=0.5, max_steps=5).validated()  # equality ignores the mark


def test_sensing_batches_on_one_problem_train_in_one_call(monkeypatch):
    """A sweep's sensing batches on one problem (equal fingerprints, even as separate objects) go to one train
    call, in lockstep; other batches train alone. The numbers are those of batches trained one by one."""
    p = mc.sensing_problem(n=6, rank=1, n_measurements=40, seed=0)
    same = mc.sensing_problem(n=6, rank=1, n_measurements=40, seed=0)  # another object, the same data
    other = mc.sensing_problem(n=6, rank=1, n_measurements=40, seed=1)
    q = mc.completion_problem(n=6, rank=1, n_observed=20, seed=0)
    spec = (mc.grid(p, depth=2, lr=0.1, seed=[0, 1], max_steps=30)
            + mc.grid(same, depth=3, lr=0.1, seed=0, max_steps=40)
            + mc.grid(other, depth=4, lr=0.1, seed=0, max_steps=30)
            + mc.grid(q, depth=[2, 3], lr=0.1, max_steps=30))
    groups = mc.sweeps.batches(spec)
    assert groups == [[0, 1], [2], [3], [4], [5]]
    assert mc.sweeps.lockstep_sets(spec, groups) == [[0, 1, 2], [3], [4], [5]]
    mixed = mc.grid([p, other], depth=2, lr=0.1, max_steps=30) + mc.grid(p, depth=3, lr=0.1, max_steps=30)
    assert mc.sweeps.batches(mixed) == [[0], [1], [2]]  # a sensing batch shares one operator
    assert mc.sweeps.lockstep_sets(mixed, mc.sweeps.batches(mixed)) == [[0, 2], [1]]
    for run, (prob, cfg) in zip(mc.sweep(mixed, progress=False, cache=False).runs, mixed):
        assert torch.equal(run.matrix, mc.train(prob, [cfg], progress=False)[0].matrix)  # each on its own problem
    calls = []
    real = mc.sweeps.train

    def counting(problems, configs, **kw):
        calls.append(len(configs))
        return real(problems, configs, **kw)

    monkeypatch.setattr(mc.sweeps, "train", counting)
    result = mc.sweep(spec, progress=False, cache=False)
    assert calls == [3, 1, 1, 1]
    for i, (prob, cfg) in enumerate(spec):
        alone = real(prob, [cfg], progress=False)[0]
        assert torch.equal(result.runs[i].matrix, alone.matrix)
