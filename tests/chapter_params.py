"""Small papermill parameters for each chapter: the tests execute every chapter with these (seconds each).

One entry per chapter notebook (notebooks/NAME.md). ``claims_path`` is added by the tests.
"""

SMALL = {
    "getting_started": {"n": 20, "rank": 2, "n_observed": 200, "depths": [1, 2], "max_steps": 300},
    "depth": {"n": 20, "rank": 2, "n_observed": 150, "depths": [1, 2], "max_steps": 300, "flow_steps": 60,
              "init_depths": [2, 3], "init_scales": [1e-2, 1e-3], "init_observed": [150], "seeds": [0],
              "ngd_steps": 200, "observed_depths": [1, 2], "observed_values": [100, 200], "nnm_observed": [200],
              "sensing_n": 8, "sensing_rank": 1, "sensing_measurements": [30, 60], "sensing_steps": 100, "movielens_steps": 20},
}
