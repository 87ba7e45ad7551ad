"""mcreg_lib: implicit and explicit low-rank regularization in deep matrix factorization.

Front door::

    import mcreg_lib as mc
    prob = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    run = mc.fit(prob, depth=3, optimizer="gd", lr=3.0, init_scale=1e-3, max_steps=100_000, seed=0)
    run.matrix; run.history; run.summary

The package has three layers:

* the engine, at the top level: ``problems``, ``data``, ``models``, ``objective``, ``metrics``, ``penalties``,
  ``optimizers``, ``training``, ``small``, ``sweeps``, ``cache``, ``baselines``, ``analysis``;
* ``mcreg_lib.chapters``: one module per chapter notebook, the science each chapter needs beyond the engine;
* ``mcreg_lib.book``: the build (the papermill runner, chapter parameters, claims, the ledger, plots).
"""

import importlib

from . import _validate as validate
from . import analysis, baselines, cache, data, metrics, models, objective, optimizers, penalties, small
from .cache import RunCache
from .metrics import balancedness_gaps, effective_rank, nuclear_norm, reconstruction_error, schatten
from .models import end_to_end
from .problems import Problem, completion_problem, problem_from_observations, sensing_problem
from .sweeps import SweepResult, grid, sweep
from .training import Run, RunConfig, fit, log_steps, summaries, train

__version__ = "0.1.0"

_LAZY = ("book", "chapters")  # imported on first use: they pull in the notebook toolchain and the chapters' helpers


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in ("Claims", "plots", "claims"):  # the book's helpers, under the names the chapters use
        book = importlib.import_module(".book", __name__)
        return getattr(book, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Claims", "Problem", "Run", "RunCache", "RunConfig", "SweepResult", "analysis", "balancedness_gaps", "baselines",
    "book", "cache", "chapters", "claims", "completion_problem", "data", "effective_rank", "end_to_end", "fit", "grid",
    "log_steps", "metrics", "models", "nuclear_norm", "objective", "optimizers", "penalties", "plots",
    "problem_from_observations", "reconstruction_error", "schatten", "sensing_problem", "small", "summaries",
    "sweep", "train", "validate",
]
