"""Chapter "Getting started" (notebooks/getting_started.md): a tour of the library in one experiment (Arora et al.
2019's completion problem at depths 1, 2, 3). It needs nothing beyond the engine; this module declares its
parameters."""

from ..book.parameters import Parameters, dtype, integer, integers, number, positive

# Cold wall time (nothing cached) on the 2-core build machine, for the build's estimate; the build remembers
# its own measurements after a cold build (mcreg_lib.book.build.estimate).
COLD_SECONDS = {"protocol": 9, "preview": 25}

PARAMETERS = Parameters(
    "getting_started",
    integer("n", 100, "the hidden matrix is n x n", minimum=2, preview=20),
    integer("rank", 5, "rank of the hidden matrix", minimum=1, maximum="n", preview=2),
    integer("n_observed", 2000, "number of observed entries", minimum=1, maximum="n * n", preview=200),
    integers("depths", [1, 2, 3], "depths of the factorizations to compare", minimum=1, preview=[1, 2]),
    positive("init_scale", 1e-3, "scale of the initialization, end to end"),
    positive("lr", 3.0, "gradient-descent step on the mean squared error"),
    integer("max_steps", 30_000, "step budget per run", minimum=1, preview=300),
    number("stop_loss", 1e-6, "stop when the training loss reaches this", minimum=0.0),
    integer("seed", 0, "seeds the hidden matrix, the observed entries and the initialization", minimum=0),
    dtype("float32", "floating-point precision"),
)
