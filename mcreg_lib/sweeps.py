"""Sweeps: many (problem, config) runs in, tidy tables out; runs of the same shape train together as one batch.

    problem = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    spec = mc.grid(problem, depth=[2, 3], init_scale=[1e-3, 1e-4], seed=[0, 1, 2], optimizer="normalized_gd",
                   lr=1e-3, max_steps=50_000)
    result = mc.sweep(spec)
    result.table        # one row per run: configuration, problem parameters, summary
    result.histories    # one row per logged step per run, with the run's configuration

    mc.sweep(spec, cache=".mcreg_cache")           # finished runs are stored and reused; a killed sweep resumes
    mc.sweep(spec, processes=2)                    # batches spread over a local process pool
    mc.sweep(spec, client="tcp://host:8786")       # or a dask.distributed Client: batches run on a Dask cluster

Every backend trains the same batches with the same code, so it gives the same numbers. The batches of sensing
runs on one problem (any depths) go to one ``train`` call, stepped in lockstep over their shared measurement
operator (:func:`lockstep_sets`).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch

from . import cache as cache_mod
from . import settings
from .problems import Problem
from .training import Run, RunConfig, summaries, train

CONFIG_FIELDS = tuple(f.name for f in fields(RunConfig))


def grid(problems: Problem | Sequence[Problem], **axes: Any) -> list[tuple[Problem, RunConfig]]:
    """The product of ``problems`` and every list-valued axis; scalar axes are fixed for all runs.

    Axes are RunConfig fields (depth, optimizer, lr, init_scale, seed, ...). Every config is validated here, so a
    bad value fails before any run starts, naming the run and the parameter.
    """
    problems = [problems] if isinstance(problems, Problem) else list(problems)
    unknown = sorted(set(axes) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"grid axes {unknown} are not allowed: axes must be RunConfig fields {list(CONFIG_FIELDS)}")
    names = list(axes)
    values = [v if isinstance(v, (list, tuple)) and k not in ("optimizer_options", "penalty_options") else [v]
              for k, v in axes.items()]
    spec = []
    for problem in problems:
        for combo in itertools.product(*values):
            spec.append((problem, RunConfig(**dict(zip(names, combo)))))
    return validate(spec)


def validate(spec: Sequence[tuple[Problem, RunConfig]]) -> list[tuple[Problem, RunConfig]]:
    """Validate every config of a sweep up front; the error names the run and the parameter."""
    out = []
    for i, (problem, config) in enumerate(spec):
        if not isinstance(problem, Problem):
            raise ValueError(f"run {i}: problem={problem!r} is not allowed: it must be a mcreg_lib Problem")
        if not isinstance(config, RunConfig):
            raise ValueError(f"run {i}: config={config!r} is not allowed: it must be a RunConfig")
        try:
            out.append((problem, config.validated(problem.shape)))
        except ValueError as exc:
            raise ValueError(f"run {i} ({config}): {exc}") from None
    return out


def batches(spec: Sequence[tuple[Problem, RunConfig]], max_batch: int = 64,
            resume_steps: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of the runs that can train together, in order of first appearance, at most ``max_batch`` a batch.
    ``resume_steps``: the step each run's checkpoint holds (0: none); runs resume together only from one step.
    Sensing runs batch by problem object (as ``train`` would split them): a batch shares one operator, whose
    products are taken in fixed shapes, so a run's numbers do not depend on its batch."""
    groups: dict[tuple, list[int]] = {}
    for i, (problem, config) in enumerate(spec):
        key = (problem.kind, problem.shape, id(problem) if problem.kind == "sensing" else 0,
               config.batch_key(), resume_steps[i] if resume_steps is not None else 0)
        groups.setdefault(key, []).append(i)
    return [idx[k:k + max_batch] for idx in groups.values() for k in range(0, len(idx), max_batch)]


def lockstep_sets(spec: Sequence[tuple[Problem, RunConfig]], groups: Sequence[list[int]],
                  resume_steps: Mapping[int, int] | Sequence[int] | None = None,
                  fingerprints: dict[int, str] | None = None) -> list[list[int]]:
    """Batches of :func:`batches` (indices into ``spec``) that train in one ``train`` call: the batches whose runs
    are all sensing runs on one problem (one fingerprint) in one dtype, resuming from one step, go together (in
    lockstep, one pass of their shared measurement operator per step); every other batch trains alone. Order of
    first appearance. ``resume_steps``: the step each run's checkpoint holds, by index into ``spec``;
    ``fingerprints``: problem fingerprints already computed, by ``id(problem)``."""
    prints = {} if fingerprints is None else fingerprints
    sets: dict[Any, list[int]] = {}
    for n, idx in enumerate(groups):
        problem, config = spec[idx[0]]
        found = {_fingerprint(spec[i][0], prints) for i in idx} if problem.kind == "sensing" else set()
        if len(found) == 1:
            key: Any = ("sensing", found.pop(), config.dtype, resume_steps[idx[0]] if resume_steps is not None else 0)
        else:
            key = n
        sets.setdefault(key, []).extend(idx)
    return list(sets.values())


def _fingerprint(problem: Problem, prints: dict[int, str]) -> str:
    if id(problem) not in prints:
        prints[id(problem)] = problem.fingerprint()
    return prints[id(problem)]


def _one_problem(problems: list[Problem], prints: dict[int, str]) -> list[Problem]:
    """Sensing runs on one problem (equal fingerprints: the same data, maybe as several objects) as one object, so
    their operator is held once and their batches may train in lockstep; any other list as it is."""
    if problems[0].kind != "sensing" or len({_fingerprint(p, prints) for p in problems}) > 1:
        return problems
    return [problems[0]] * len(problems)


@dataclass
class SweepResult:
    """The runs of a sweep, in the order of its spec; ``computed`` were trained now, ``cached`` read from the cache."""

    runs: list[Run]
    computed: int = 0
    cached: int = 0

    @property
    def table(self) -> pd.DataFrame:
        """One row per run (in the order of the spec): configuration, ``problem_*`` parameters and summary."""
        t = summaries(self.runs)
        t.insert(0, "run", range(len(self.runs)))
        return t

    @property
    def histories(self) -> pd.DataFrame:
        """Every run's history in long form, with the run's index, configuration and problem parameters."""
        frames = []
        for i, run in enumerate(self.runs):
            h = run.history.copy()
            h.insert(0, "run", i)
            for key, value in run.config.as_dict().items():
                if not isinstance(value, dict):
                    h[key] = value
            for key, value in run.problem_info.items():
                h[f"problem_{key}"] = value
            frames.append(h)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class _Progress:
    """One bar over the whole sweep, in run-steps (each run counts its step budget), with runs done and time left.

    With ``$MCREG_PROGRESS_FILE`` set (the book's build), the same counts are also written to that file about once a
    second, so the build can draw the bar of a chapter that runs in another process, with ``taken``: the run-steps
    actually taken (a stopped run counts the steps it took, not its budget), from which the build tells the rate
    of work."""

    def __init__(self, configs: Sequence[Any], enabled: bool, done_runs: int, label: str = "sweep") -> None:
        self.total_runs = len(configs)
        self.runs = done_runs
        self.steps = self.taken = 0
        self.total = sum(max(c.max_steps, 1) for c in configs)
        self.label, self.written = label, 0.0
        self.file = os.environ.get("MCREG_PROGRESS_FILE")
        self.bar = None
        if enabled:
            self.bar = settings.sweep_bar(total=self.total, desc="sweep", unit="step", unit_scale=True,
                                          smoothing=0.05)
            self._post()
        self._write(force=True)

    def _post(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"runs {self.runs}/{self.total_runs}", refresh=True)

    def _write(self, force: bool = False) -> None:
        now = time.time()
        if self.file and (force or now - self.written >= 1.0):
            self.written = now
            settings.write_progress(self.file, label=self.label, steps=self.steps, total=self.total,
                                    runs=self.runs, total_runs=self.total_runs, taken=self.taken)

    def __call__(self, steps: int, runs: int, taken: int) -> None:
        """``steps``: run-steps of the budget used up (a stopped run's whole budget); ``taken``: run-steps taken."""
        self.runs += runs
        self.steps += steps
        self.taken += taken
        if self.bar is not None:
            self.bar.work.add(self.taken)
            self.bar.update(steps)
            self._post()
        self._write()

    def close(self) -> None:
        self._write(force=True)
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_counter(configs: Sequence[Any], label: str, progress: bool | None = None) -> _Progress:
    """The progress of a batch trained outside :func:`sweep` (P4's tensors: ``tensors.train_cp``), counted as a
    sweep counts its own: pass it as the trainer's ``on_progress`` inside a ``with`` block. ``configs``: anything
    with ``max_steps``. It draws a bar (``progress``, default ``$MCREG_PROGRESS``) and writes
    ``$MCREG_PROGRESS_FILE``, so the book's build shows the batch like a sweep."""
    return _Progress(list(configs), settings.progress_default() if progress is None else bool(progress), 0, label)


def _label(c: RunConfig, configs: Sequence[RunConfig] = ()) -> str:
    depths = sorted({x.depth for x in configs})
    where = f"depths {', '.join(map(str, depths))}" if len(depths) > 1 else f"depth {c.depth}"
    return f"{where} {c.optimizer}" + (f" + {c.penalty}" if c.penalty else "")


def _train_batch(problems: list[Problem], configs: list[RunConfig], device: str | None, keys: list[str] | None,
                 cache_path: str | None, threads: int | None) -> list[Run]:
    """Worker entry point (process pool or Dask): train one batch, caching each run as it stops if asked."""
    if threads:
        torch.set_num_threads(threads)
    store = cache_mod.RunCache(cache_path) if cache_path is not None else None

    def on_finish(b: int, run: Run) -> None:
        if store is not None and keys is not None:
            store.put(keys[b], run)

    checkpoints = cache_mod.Checkpoints(store, keys) if store is not None and keys is not None else None
    return train(problems, configs, device=device, progress=False, on_finish=on_finish, checkpoints=checkpoints)


def _connect(client: Any, timeout: float):
    """A dask.distributed Client from a Client or a scheduler address; a clear error if it cannot be reached."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is pinned in requirements.txt
        raise ImportError("client= needs dask.distributed: pip install 'dask[distributed]'") from exc
    if isinstance(client, Client):
        return client, False
    if not isinstance(client, str):
        raise ValueError(f"client={client!r} is not allowed: give a scheduler address such as "
                         "'tcp://127.0.0.1:8786' or a distributed.Client")
    try:
        return Client(client, timeout=timeout, set_as_default=False), True
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"could not reach the Dask scheduler at {client!r} within {timeout:g} s ({exc}); "
                              "start one (`dask scheduler`) or pass a running distributed.Client") from None


def _audit(spec: Sequence[tuple[Problem, RunConfig]], runs: list[Run | None], keys: list[str],
           device: torch.device) -> None:
    """Re-train the cached runs the auditor picks (``$MCREG_AUDIT``, mcreg_lib.cache) and compare them with the
    stored ones; a mismatch raises StaleCacheError naming the run's configuration."""
    for i, run in enumerate(runs):
        if run is not None and cache_mod.AUDITOR.pick(keys[i], run.summary.get("seconds")):
            fresh = train([spec[i][0]], [spec[i][1]], device=device, progress=False)[0]
            what = f"run {i} of a sweep ({spec[i][1]}; problem {spec[i][0].info})"
            cache_mod.record_audit("run", keys[i], what, cache_mod.run_difference(run, fresh))


def sweep(spec: Sequence[tuple[Problem, RunConfig]], *, device: str | torch.device | None = None,
          progress: bool | None = None, max_batch: int = 64, cache: Any = "auto", processes: int | None = None,
          client: Any = None, connect_timeout: float = 5.0, run_on: str | None = None) -> SweepResult:
    """Train every (problem, config) of ``spec``, batching runs of the same shape, depth, optimizer and penalty.

    cache: ``"auto"`` (default: the build's ``$MCREG_CACHE`` when set, else none), None or False (no cache), True
        (``$MCREG_CACHE`` or ``.mcreg_cache/``), a folder or a ``RunCache``. Finished runs are read from it instead of
        trained, and each new run is written to it as soon as it stops.
    processes: train batches in a pool of this many local processes (each with ``cpu_count // processes`` threads).
    client: a ``distributed.Client`` or a scheduler address: train batches as tasks on that Dask cluster (results
        come back to this process, which writes the cache). ``connect_timeout`` seconds to reach an address.
        Without ``processes`` and ``client``, ``run_on`` decides (the forms of ``$MCREG_RUN_ON``,
        mcreg_lib.settings), and without it ``$MCREG_RUN_ON`` (default: this process).
    device: default ``$MCREG_DEVICE``, else CUDA when available, else CPU.
    progress: one bar over the whole sweep (run-steps, runs done, time left); default from ``MCREG_PROGRESS``.
    """
    spec = validate(spec)
    if processes is None and client is None:
        where = settings.run_on(run_on)
        processes = where.processes
        client = where.address
    max_batch = int(max_batch)
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch} is not allowed: it must be an integer >= 1")
    if processes is not None and (not isinstance(processes, int) or processes < 1):
        raise ValueError(f"processes={processes!r} is not allowed: give None or an integer >= 1")
    if processes is not None and client is not None:
        raise ValueError("give at most one of processes= and client=")
    if client is not None and not isinstance(client, str) and type(client).__name__ != "Client":
        raise ValueError(f"client={client!r} is not allowed: give a scheduler address such as "
                         "'tcp://127.0.0.1:8786' or a dask.distributed Client")
    store = cache_mod.as_cache(cache)
    dev = settings.device() if device is None else torch.device(device)
    runs: list[Run | None] = [None] * len(spec)
    keys: list[str] | None = None
    prints: dict[int, str] = {}  # problem fingerprints by id(problem)
    if store is not None:
        keys = [cache_mod.run_key(p, c, dev, _fingerprint(p, prints)) for p, c in spec]
        for i, key in enumerate(keys):
            runs[i] = store.get(key)
            if runs[i] is not None:
                settings.log_event("read", kind="run", key=key, what=_label(spec[i][1]))
                store.drop_checkpoint(key)  # left when a sweep was killed between storing a run and dropping it
        _audit(spec, runs, keys, dev)
    n_cached = sum(r is not None for r in runs)
    todo = [i for i, r in enumerate(runs) if r is None]
    sub = [spec[i] for i in todo]
    resume = None
    if store is not None and keys is not None:  # runs a killed sweep left with checkpoints go on from there
        states = [store.get_checkpoint(keys[i]) for i in todo]
        resume = [int(s["t"]) if s is not None else 0 for s in states]
    groups = [[todo[k] for k in idx] for idx in batches(sub, max_batch, resume)]
    groups = lockstep_sets(spec, groups, None if resume is None else dict(zip(todo, resume)), prints)
    label = _label(sub[0][1], [c for _, c in sub]) if sub else "sweep"
    bar = _Progress([c for _, c in sub], settings.progress_default() if progress is None else bool(progress), 0,
                    label)
    if bar.bar is not None and n_cached:
        bar.bar.write(f"sweep: {n_cached} of {len(spec)} runs read from {store.path}")

    def trained(i: int, run: Run, store_it: bool) -> None:
        runs[i] = run
        if store is not None and keys is not None:
            if store_it:
                store.put(keys[i], run)
            settings.log_event("trained", kind="run", key=keys[i], what=_label(run.config),
                               seconds=run.summary.get("seconds"), steps=run.summary.get("steps"))

    def done(idx: list[int], batch_runs: list[Run], report: bool) -> None:
        for i, run in zip(idx, batch_runs):
            if report:  # a worker's runs (the local loop stores each run as it stops)
                trained(i, run, store_it=True)
            runs[i] = run
        if report:
            bar(sum(max(spec[i][1].max_steps, 1) for i in idx), len(idx),
                sum(int(run.summary["steps"]) for run in batch_runs))

    try:
        if client is None and processes is None:
            for idx in groups:
                problems = _one_problem([spec[i][0] for i in idx], prints)
                configs = [spec[i][1] for i in idx]

                def on_finish(b: int, run: Run, idx=idx) -> None:
                    trained(idx[b], run, store_it=True)

                checkpoints = None if store is None or keys is None else \
                    cache_mod.Checkpoints(store, [keys[i] for i in idx])
                batch_runs = train(problems, configs, device=dev, progress=False,
                                   description=_label(configs[0], configs), on_finish=on_finish, on_progress=bar,
                                   checkpoints=checkpoints)
                done(idx, batch_runs, report=False)
        elif processes is not None:
            threads = max(1, (os.cpu_count() or 1) // processes)
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
                futures = {pool.submit(_train_batch, _one_problem([spec[i][0] for i in idx], prints),
                                       [spec[i][1] for i in idx], str(dev),
                                       None if keys is None else [keys[i] for i in idx],
                                       None if store is None else str(store.path), threads): idx for idx in groups}
                for fut in cf.as_completed(futures):
                    idx = futures[fut]
                    done(idx, fut.result(), report=True)
        else:
            from distributed import as_completed

            dask_client, own = _connect(client, connect_timeout)
            try:
                futures = {}
                for idx in groups:
                    fut = dask_client.submit(_train_batch, _one_problem([spec[i][0] for i in idx], prints),
                                             [spec[i][1] for i in idx],
                                             str(dev), None, None, None, pure=False)
                    futures[fut] = idx
                for fut in as_completed(list(futures), loop=dask_client.loop) if futures else []:
                    done(futures[fut], fut.result(), report=True)
            finally:
                if own:
                    dask_client.close()
    finally:
        bar.close()
    assert all(r is not None for r in runs)
    return SweepResult([r for r in runs if r is not None], computed=len(todo), cached=n_cached)
