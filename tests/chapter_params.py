"""Small papermill parameters for each chapter: the tests execute every chapter with these (seconds each).

One entry per chapter notebook (notebooks/NAME.md). ``claims_path`` is added by the tests.
"""

from pathlib import Path

SMALL = {
    "getting_started": {"n": 20, "rank": 2, "n_observed": 200, "depths": [1, 2], "max_steps": 300},
    "depth": {"n": 20, "rank": 2, "n_observed": 150, "depths": [1, 2], "max_steps": 300, "flow_steps": 60,
              "init_depths": [2, 3], "init_scales": [1e-2, 1e-3], "init_observed": [150], "seeds": [0],
              "ngd_steps": 200, "observed_depths": [1, 2], "observed_values": [100, 200], "nnm_observed": [200],
              "sensing_n": 8, "sensing_rank": 1, "sensing_measurements": [30, 60], "sensing_steps": 100, "movielens_steps": 20},
    "balancedness": {"n": 10, "rank": 2, "n_observed": 60, "depths": [2, 3], "max_steps": 200, "flow_time": 20.0,
                     "flow_lrs": [0.5, 1.0], "identity_instances": 3, "relu_input_dim": 20, "relu_widths": [8, 8],
                     "relu_output_dim": 3, "relu_points": 30, "relu_steps": 50, "fact_rows": 6, "fact_cols": 5,
                     "fact_rank": 2, "decay_steps": 200, "rank1_steps": 60, "seeds": [0, 1]},
    "norms": {"n": 16, "rank": 2, "n_observed": [90, 200], "depths": [2], "init_scales": [1e-2, 1e-3],
              "seeds": [0], "max_steps": 1500, "depths_2x2": [2, 3], "p4_max_steps": 20_000, "depth2_lrs": [3e-3, 1e-3],
              "epsilons": [0.1, 0.5]},
    "penalty": {
        "n": 16, "rank": 2, "n_observed": 120, "max_steps": 150, "gd_max_steps": 200, "seeds": [0, 1, 2],
        "n_observed_grid": [50, 120], "trace_steps": 30, "sweep_n": 12, "sweep_rank": 2, "sweep_n_observed": 70,
        "depths": [1, 2], "penalty_weights": [1e-3, 1e-1], "adam_lrs": [3e-3],
        "optimizer_lrs": {"adam": 3e-3, "gd": 3.0}, "image_size": 12, "movielens_steps": 20,
        "movielens_path": str(Path(__file__).resolve().parent / "data" / "u_small.data"),
    },
}
