import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mcreg_lib as mc
from mcreg_lib import cache as cache_mod

ROOT = Path(__file__).resolve().parent.parent


def _spec():
    p = mc.completion_problem(n=10, rank=2, n_observed=50, seed=0)
    return mc.grid(p, depth=2, lr=1.0, init_scale=1e-2, seed=[0, 1, 2], max_steps=60, stop_loss=1e-4)


def test_roundtrip_and_reuse(tmp_path):
    spec = _spec()
    first = mc.sweep(spec, cache=tmp_path, progress=False, device="cpu")
    assert (first.computed, first.cached) == (3, 0)
    again = mc.sweep(spec, cache=tmp_path, progress=False, device="cpu")
    assert (again.computed, again.cached) == (0, 3)
    for a, b in zip(first.runs, again.runs):
        assert torch.equal(a.matrix, b.matrix)
        assert all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))
        assert a.history.equals(b.history)
        assert a.summary == b.summary and a.config == b.config and a.problem_info == b.problem_info
    assert first.table.equals(again.table)


def test_key_depends_on_config_problem_and_version(monkeypatch):
    p = mc.completion_problem(n=10, rank=2, n_observed=50, seed=0)
    q = mc.completion_problem(n=10, rank=2, n_observed=50, seed=1)
    c = mc.RunConfig(depth=2, lr=1.0)
    k = cache_mod.run_key(p, c)
    assert k == cache_mod.run_key(p, mc.RunConfig(depth=2, lr=1.0))
    assert k != cache_mod.run_key(q, c)
    assert k != cache_mod.run_key(p, mc.RunConfig(depth=2, lr=1.0, seed=1))
    assert k != cache_mod.run_key(p, c, device="cuda")
    monkeypatch.setattr(cache_mod, "RESULTS_VERSION", "test")
    assert k != cache_mod.run_key(p, c)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_or_partial_entry_is_recomputed(tmp_path, damage):
    spec = _spec()
    first = mc.sweep(spec, cache=tmp_path, progress=False, device="cpu")
    store = mc.RunCache(tmp_path)
    victim = store.file(store.keys()[1])
    raw = bytearray(victim.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray()
    victim.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt or partial"):
        again = mc.sweep(spec, cache=tmp_path, progress=False, device="cpu")
    assert (again.computed, again.cached) == (1, 2)
    for a, b in zip(first.runs, again.runs):
        assert torch.equal(a.matrix, b.matrix)
    assert mc.RunCache(tmp_path).get(victim.stem) is not None  # rewritten, readable again


def test_a_killed_sweep_resumes_without_recomputing_finished_runs(tmp_path):
    """Runs with budgets 1500..12000 steps share one batch; each is cached the moment it stops. Kill mid-batch."""
    script = textwrap.dedent(f"""
        import torch, mcreg_lib as mc
        torch.set_num_threads(1)
        p = mc.completion_problem(n=20, rank=2, n_observed=150, seed=0)
        spec = mc.grid(p, depth=3, lr=0.5, init_scale=1e-2, seed=[0, 1],
                       max_steps=[1500, 3000, 4500, 6000, 7500, 9000, 10500, 12000], stop_loss=0.0)
        mc.sweep(spec, cache={str(tmp_path)!r}, progress=False, device="cpu")
        print("finished", flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MCREG_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(list(tmp_path.glob("*.run"))) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = set(mc.RunCache(tmp_path).keys())
    assert 4 <= len(finished) < 16, "kill the sweep halfway: some runs finished, some not"

    p = mc.completion_problem(n=20, rank=2, n_observed=150, seed=0)
    spec = mc.grid(p, depth=3, lr=0.5, init_scale=1e-2, seed=[0, 1],
                   max_steps=[1500, 3000, 4500, 6000, 7500, 9000, 10500, 12000], stop_loss=0.0)
    computed = []
    resumed = mc.sweep(spec, cache=tmp_path, progress=False, device="cpu")
    assert resumed.cached == len(finished) and resumed.computed == 16 - len(finished)
    assert len(mc.RunCache(tmp_path).keys()) == 16
    keys = [cache_mod.run_key(pp, c) for pp, c in spec]
    reference = mc.sweep(spec, progress=False, device="cpu")
    for key, a, b in zip(keys, resumed.runs, reference.runs):
        computed.append(key not in finished)
        assert a.summary["steps"] == b.summary["steps"] == a.config.max_steps
        assert torch.allclose(a.matrix, b.matrix, rtol=1e-5, atol=1e-7)
    # the runs that finished before the kill are exactly the shortest ones (cached as each stopped)
    assert sorted(c.max_steps for (_, c), new in zip(spec, computed) if not new)[-1] <= min(
        c.max_steps for (_, c), new in zip(spec, computed) if new)


def test_cache_argument_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("MCREG_CACHE", str(tmp_path / "env"))
    assert mc.cache.as_cache(True).path == tmp_path / "env"
    assert mc.cache.as_cache(None) is None and mc.cache.as_cache(False) is None
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mc.RunCache(f)


def test_memoized_values_round_trip_and_corrupt_entries_are_recomputed(tmp_path, monkeypatch):
    import pandas as pd

    from mcreg_lib.cache import memoize

    calls = []

    @memoize
    def compute(problem, scale, table):
        calls.append(scale)
        return {"matrix": problem.target * scale, "frame": table.assign(y=table.x * scale),
                "info": ("ok", None, [1, 2.5]), "array": np.arange(3.0)}

    monkeypatch.setenv("MCREG_CACHE", str(tmp_path))
    p = mc.completion_problem(n=5, rank=1, n_observed=10, seed=0)
    t = pd.DataFrame({"x": [1.0, 2.0], "name": ["a", None]})
    first = compute(p, 2.0, t)
    again = compute(p, 2.0, t)
    assert calls == [2.0]
    assert torch.equal(again["matrix"], first["matrix"]) and again["info"] == ("ok", None, [1, 2.5])
    pd.testing.assert_frame_equal(again["frame"], first["frame"])
    np.testing.assert_array_equal(again["array"], np.arange(3.0))
    compute(p, 3.0, t)
    assert calls == [2.0, 3.0], "another argument is another entry"
    for f in tmp_path.glob("*.val"):
        f.write_bytes(f.read_bytes()[:-10])  # truncate every entry
    with pytest.warns(UserWarning, match="corrupt or partial"):
        compute(p, 2.0, t)
    assert calls == [2.0, 3.0, 2.0]
    monkeypatch.delenv("MCREG_CACHE")
    compute(p, 2.0, t)
    assert calls[-1] == 2.0 and len(calls) == 4, "no cache without MCREG_CACHE"


def test_audits_recompute_cached_results_and_catch_stale_ones(tmp_path, monkeypatch):
    import json

    from mcreg_lib import cache as cache_mod
    from mcreg_lib.cache import StaleCacheError

    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("MCREG_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("MCREG_EVENTS", str(events))
    p = mc.completion_problem(n=6, rank=1, n_observed=15, seed=0)
    spec = mc.grid(p, depth=2, lr=0.5, seed=list(range(12)), max_steps=30)
    first = mc.sweep(spec, progress=False, device="cpu")
    assert first.computed == 12
    monkeypatch.setenv("MCREG_AUDIT", "2")
    monkeypatch.setattr(cache_mod, "AUDITOR", cache_mod._Auditor())
    second = mc.sweep(spec, progress=False, device="cpu")
    assert second.cached == 12
    log = [json.loads(x) for x in events.read_text().splitlines()]
    audits = [e for e in log if e["event"] == "audited"]
    assert len(audits) == 2 and all(e["ok"] and e["max_rel_diff"] == 0.0 for e in audits)
    assert sum(e["event"] == "trained" for e in log) == 12 and sum(e["event"] == "read" for e in log) == 12
    # a stored run that the library would not produce now: the audit fails with the configuration
    store = mc.RunCache(tmp_path / "c")
    audited = audits[0]["key"]
    run = store.get(audited)
    run.summary["error_all"] *= 1.5
    store.put(audited, run)
    monkeypatch.setattr(cache_mod, "AUDITOR", cache_mod._Auditor())
    with pytest.raises(StaleCacheError, match="RunConfig"):
        mc.sweep(spec, progress=False, device="cpu")
    # a run that took longer to train than MCREG_AUDIT_MAX_SECONDS is not re-trained (the stale one goes unseen)
    monkeypatch.setenv("MCREG_AUDIT_MAX_SECONDS", "0")
    monkeypatch.setattr(cache_mod, "AUDITOR", cache_mod._Auditor())
    events.write_text("")
    assert mc.sweep(spec, progress=False, device="cpu").cached == 12
    assert not [x for x in events.read_text().splitlines() if '"audited"' in x]


def test_fit_goes_through_the_build_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MCREG_CACHE", str(tmp_path))
    p = mc.completion_problem(n=6, rank=1, n_observed=15, seed=0)
    a = mc.fit(p, depth=2, lr=0.5, max_steps=20, progress=False)
    assert len(list(tmp_path.glob("*.run"))) == 1
    b = mc.fit(p, depth=2, lr=0.5, max_steps=20, progress=False)
    assert torch.equal(a.matrix, b.matrix)


def test_two_processes_sharing_one_cache_lose_nothing_and_corrupt_nothing(tmp_path):
    """Two builds at once on one cache folder: both finish, every entry is whole, and both get the same numbers."""
    script = textwrap.dedent(f"""
        import json, sys, warnings
        warnings.simplefilter("error")  # a corrupt entry would warn: make it fail
        import mcreg_lib as mc
        p = mc.completion_problem(n=8, rank=2, n_observed=30, seed=0)
        spec = mc.grid(p, depth=[1, 2], lr=0.5, seed=list(range(10)), max_steps=400, stop_loss=0.0)
        result = mc.sweep(spec, cache={str(tmp_path / "cache")!r}, progress=False, device="cpu", max_batch=3)
        print(json.dumps([r.summary["train_loss"] for r in result.runs]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MCREG_PROGRESS": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    first, second = (json.loads(out) for out, _ in outs)
    assert first == second
    store = mc.RunCache(tmp_path / "cache")
    assert len(store.keys()) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(store.get(k) is not None for k in store.keys())
    assert not list((tmp_path / "cache").glob("*.tmp")), "no temporary file left behind"


class _Stop(RuntimeError):
    pass


def _same_runs(a, b):
    assert a.summary["steps"] == b.summary["steps"] and a.summary["stop_reason"] == b.summary["stop_reason"]
    assert torch.equal(a.matrix, b.matrix)
    for x, y in zip(a.layers, b.layers):
        assert torch.equal(x, y)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)


@pytest.mark.parametrize("case", ["completion gd", "completion normalized_gd", "sensing normalized_gd",
                                  "completion adam + ratio penalty"])
def test_a_killed_batch_goes_on_from_its_checkpoints(tmp_path, monkeypatch, case):
    """Killed at step 40 (the first run stops there and its callback fails), the other runs go on from their
    checkpoints in a new call and end with the numbers of an uninterrupted batch, bit for bit."""
    monkeypatch.setenv("MCREG_CHECKPOINT_SECONDS", "0")
    kind, optimizer = case.split()[:2]
    p = (mc.sensing_problem(n=6, rank=1, n_measurements=30, seed=0) if kind == "sensing"
         else mc.completion_problem(n=6, rank=1, n_observed=20, seed=0))
    extra = dict(penalty="ratio", penalty_weight=1e-2) if "penalty" in case else {}
    cfgs = [mc.RunConfig(depth=3, optimizer=optimizer, lr=0.05 if optimizer != "adam" else 1e-2, init_scale=0.3,
                         seed=s, max_steps=40 if s == 0 else 90, stop_loss=0.0, **extra) for s in range(4)]
    whole = mc.train(p, cfgs, progress=False)
    store = cache_mod.RunCache(tmp_path)
    keys = [cache_mod.run_key(p, c) for c in cfgs]

    def fail(b, run):
        raise _Stop("killed")

    with pytest.raises(_Stop):
        mc.train(p, cfgs, progress=False, on_finish=fail, checkpoints=cache_mod.Checkpoints(store, keys))
    # a part on another thread is stopped where it is (if it had not taken a step yet, it has no checkpoint: 0)
    steps = {i: (store.get_checkpoint(keys[i]) or {"t": 0})["t"] for i in range(1, 4)}
    assert steps[2] == 40
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("MCREG_EVENTS", str(events))
    for t in set(steps.values()):  # runs resume together from one step (the sweep groups them so)
        idx = [i for i in steps if steps[i] == t]
        resumed = mc.train(p, [cfgs[i] for i in idx], progress=False,
                           checkpoints=cache_mod.Checkpoints(store, [keys[i] for i in idx]))
        for i, run in zip(idx, resumed):
            _same_runs(run, whole[i])
    assert '"resumed"' in events.read_text() and '"step": 40' in events.read_text()
    assert not any(store.file(k, ".ckpt").exists() for k in keys[1:])  # dropped as each run stopped


def test_a_killed_sweep_resumes_its_unfinished_runs(tmp_path, monkeypatch):
    """A sweep killed mid-batch keeps its finished runs in the cache and its unfinished ones as checkpoints; run
    again, it reads the first, goes on with the second from their step, and matches a sweep never interrupted.
    The sensing runs of both depths share one problem, so they train in lockstep: killed at step 30, every
    unfinished run of both depths resumes from there."""
    monkeypatch.setenv("MCREG_CHECKPOINT_SECONDS", "0")
    p = mc.sensing_problem(n=6, rank=1, n_measurements=30, seed=0)
    spec = mc.grid(p, depth=[2, 3], optimizer="normalized_gd", lr=0.05, init_scale=0.3, seed=[0, 1, 2],
                   max_steps=120, stop_loss=0.0)
    spec = [(q, dataclasses.replace(c, max_steps=30) if c.seed == 0 else c) for q, c in spec]
    fresh = mc.sweep(spec, cache=False, progress=False).runs
    real_put = cache_mod.RunCache.put

    def put_then_die(self, key, run):
        real_put(self, key, run)
        if run.config.depth == 3:
            raise _Stop("killed")

    monkeypatch.setattr(cache_mod.RunCache, "put", put_then_die)
    with pytest.raises(_Stop):
        mc.sweep(spec, cache=tmp_path, progress=False)
    monkeypatch.setattr(cache_mod.RunCache, "put", real_put)
    unfinished = [cache_mod.run_key(q, c) for q, c in spec if c.seed > 0]
    assert [store_step(tmp_path, k) for k in unfinished] == [30, 30, 30, 30]
    again = mc.sweep(spec, cache=tmp_path, progress=False)
    assert again.cached == 2 and again.computed == 4
    for a, b in zip(again.runs, fresh):
        _same_runs(a, b)
    assert not list(tmp_path.glob("*.ckpt"))  # the finished run's too (its callback failed before dropping it)


def store_step(folder, key):
    return cache_mod.RunCache(folder).get_checkpoint(key)["t"]
