"""Sweeps: many (problem, config) runs in, tidy tables out; runs of the same shape train together as one batch.

    problem = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    spec = mc.grid(problem, depth=[2, 3], init_scale=[1e-3, 1e-4], seed=[0, 1, 2], optimizer="normalized_gd",
                   lr=1e-3, max_steps=50_000)
    result = mc.sweep(spec)
    result.table        # one row per run: configuration, problem parameters, summary
    result.histories    # one row per logged step per run, with the run's configuration
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch

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


def batches(spec: Sequence[tuple[Problem, RunConfig]], max_batch: int = 64) -> list[list[int]]:
    """Indices of the runs that can train together, in order of first appearance, at most ``max_batch`` a batch."""
    groups: dict[tuple, list[int]] = {}
    for i, (problem, config) in enumerate(spec):
        key = (problem.kind, problem.shape, problem.n_observed if problem.kind == "sensing" else 0,
               config.batch_key())
        groups.setdefault(key, []).append(i)
    return [idx[k:k + max_batch] for idx in groups.values() for k in range(0, len(idx), max_batch)]


@dataclass
class SweepResult:
    runs: list[Run]

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


def sweep(spec: Sequence[tuple[Problem, RunConfig]], *, device: str | torch.device | None = None,
          progress: bool | None = None, max_batch: int = 64) -> SweepResult:
    """Train every (problem, config) of ``spec``, batching runs of the same shape, depth, optimizer and penalty."""
    spec = validate(spec)
    runs: list[Run | None] = [None] * len(spec)
    for idx in batches(spec, max_batch):
        problems = [spec[i][0] for i in idx]
        configs = [spec[i][1] for i in idx]
        c = configs[0]
        label = f"depth {c.depth} {c.optimizer}" + (f" + {c.penalty}" if c.penalty else "")
        for i, run in zip(idx, train(problems, configs, device=device, progress=progress, description=label)):
            runs[i] = run
    return SweepResult([r for r in runs if r is not None])
