"""mcreg_lib: implicit and explicit low-rank regularization in deep matrix factorization.

Front door::

    import mcreg_lib as mc
    prob = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    run = mc.fit(prob, depth=3, optimizer="gd", lr=3.0, init_scale=1e-3, max_steps=100_000, seed=0)
    run.matrix; run.history; run.summary
"""

from . import _validate as validate
from . import baselines, cache, claims, data, metrics, models, optimizers, penalties, plots
from . import balance, depth, explicit, norms
from .claims import Claims
from .metrics import balancedness_gaps, effective_rank, end_to_end, nuclear_norm, relative_error, schatten
from .problems import Problem, completion_problem, problem_from_observations, sensing_problem
from .training import Run, RunConfig, fit, log_steps, summaries, train
from .cache import RunCache
from .sweeps import SweepResult, grid, sweep

__version__ = "0.1.0"


def __getattr__(name: str):  # ``mc.chapters`` on first use: ``python -m mcreg_lib.chapters`` then runs it only once
    if name == "chapters":
        import importlib

        return importlib.import_module(".chapters", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Claims", "Problem", "Run", "RunCache", "RunConfig", "SweepResult", "balance", "balancedness_gaps", "baselines",
    "cache", "chapters", "claims", "completion_problem", "data", "depth", "effective_rank", "end_to_end", "explicit", "fit",
    "grid",
    "log_steps", "metrics", "models", "norms", "nuclear_norm", "optimizers", "penalties", "plots",
    "problem_from_observations", "relative_error", "schatten", "sensing_problem", "summaries", "sweep", "train",
    "validate",
]
