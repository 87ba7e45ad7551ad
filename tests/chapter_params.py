"""Small papermill parameters for each chapter: the tests execute every chapter with these (seconds each).

One entry per chapter notebook (notebooks/NAME.md). ``claims_path`` is added by the tests.
"""

SMALL = {
    "getting_started": {"n": 20, "rank": 2, "n_observed": 200, "depths": [1, 2], "max_steps": 300},
}
