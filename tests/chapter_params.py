"""Small papermill parameters for each chapter: the tests execute every chapter with these (seconds each).

One entry per chapter notebook (notebooks/NAME.md). ``claims_path`` is added by the tests.
"""

from pathlib import Path

SMALL = {
    "getting_started": {"n": 20, "rank": 2, "n_observed": 200, "depths": [1, 2], "max_steps": 300},
    "penalty": {
        "n": 16, "rank": 2, "n_observed": 120, "max_steps": 150, "gd_max_steps": 200, "seeds": [0, 1, 2],
        "n_observed_grid": [50, 120], "trace_steps": 30, "sweep_n": 12, "sweep_rank": 2, "sweep_n_observed": 70,
        "depths": [1, 2], "penalty_weights": [1e-3, 1e-1], "adam_lrs": [3e-3],
        "optimizer_lrs": {"adam": 3e-3, "gd": 3.0}, "image_size": 12, "movielens_steps": 20,
        "movielens_path": str(Path(__file__).resolve().parent / "data" / "u_small.data"),
    },
}
