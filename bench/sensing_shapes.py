"""The sensing operator's products at other fixed shapes than the library's (bench/README.md, section [4]).

Prints GFLOP/s of one operator block (rows x 10,000) times a chunk of runs (N columns) repeated on hot operands, for
the block and chunk sizes a future ``SENSING_VERSION`` could choose, and ``objective.shared_operator`` on batches of
15, 32 and 45 runs (the operator streamed from memory) at m = 2,000 and 5,000, then the depth chapter's 45 runs of
one instance trained in lockstep (one ``train`` call) against its three depth batches one after another::

    .venv/bin/python bench/sensing_shapes.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, so that bench is the package
from bench.bench import best  # noqa: E402

import mcreg_lib as mc  # noqa: E402
from mcreg_lib import objective  # noqa: E402
from mcreg_lib.objective import shared_operator  # noqa: E402

D = 10_000  # n^2 at P3's n = 100


def gflops(fn, flops: float, seconds: float = 0.5, repeats: int = 3) -> float:
    """GFLOP/s of ``fn`` (``flops`` a call): the best of ``repeats`` timings of as many calls as fill ``seconds``."""
    calls = max(1, round(seconds / best(fn, 2)))

    def many() -> None:
        for _ in range(calls):
            fn()

    return flops * calls / best(many, repeats) / 1e9


def grid_configs(steps: int) -> list[mc.RunConfig]:
    """The depth chapter's sensing runs of one instance: depths 2, 3, 4, each 5 inits x 3 seeds (``steps`` each)."""
    return [mc.RunConfig(depth=d, optimizer="normalized_gd", lr=1e-3, init_scale=s, seed=k, max_steps=steps,
                         stop_loss=0.0, logs_per_decade=1)
            for d in (2, 3, 4) for s in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7) for k in range(3)]


def lockstep(m: int, steps: int) -> None:
    """The library's lockstep (one ``train`` call for the three depths) against the three depths' batches one
    after another (three calls), per step of all 45 runs, and the runs' matrices compared bit for bit."""
    problem = mc.sensing_problem(n=100, rank=5, n_measurements=m, seed=0)
    configs = grid_configs(steps)
    by_depth = [[c for c in configs if c.depth == d] for d in (2, 3, 4)]
    runs: dict[str, list[mc.Run]] = {}
    ways = {"one after another": lambda: [r for part in by_depth for r in mc.train(problem, part, progress=False)],
            "in lockstep": lambda: mc.train(problem, configs, progress=False)}
    ms = {name: best(lambda: runs.__setitem__(name, way()), 2) / steps * 1e3 for name, way in ways.items()}
    same = all(torch.equal(a.matrix, b.matrix) for a, b in zip(runs["one after another"], runs["in lockstep"]))
    print(f"m = {m}, depths 2, 3, 4 x 15 runs: one batch after another {ms['one after another']:.1f} ms a step, "
          f"in lockstep {ms['in lockstep']:.1f} ms ({ms['one after another'] / ms['in lockstep']:.2f}x); "
          f"matrices bitwise equal after {steps} steps: {same}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lockstep-steps", type=int, default=100, help="steps timed in the lockstep part (0: skip it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    a, b = torch.randn(1000, 1000), torch.randn(1000, 1000)
    print(f"square 1000 x 1000 float32 product: {gflops(lambda: a @ b, 2e9):.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    op = torch.randn(2000, D)
    for rows in (128, 256, 512, 1024, 2000):
        for n in (16, 32, 48):
            x, r, blk = torch.randn(D, n), torch.randn(rows, n), op[:rows].contiguous()
            fwd = gflops(lambda: blk @ x, 2 * rows * D * n)
            bwd = gflops(lambda: blk.T @ r, 2 * rows * D * n)
            print(f"block of {rows:4d} rows x {n} columns, hot: A x {fwd:4.0f}, A^T r {bwd:4.0f} GFLOP/s", flush=True)
    for m in (2000, 5000):
        a, y = torch.randn(m, D), torch.randn(m)
        for batch in (15, 32, 45):
            flat = torch.randn(batch, D) * 0.01
            chunks = -(-batch // objective.RUN_CHUNK)
            padded = 2 * 2 * m * D * chunks * objective.RUN_CHUNK
            rate = gflops(lambda: shared_operator(flat, a, y), padded, seconds=3)
            ms = padded / rate / 1e6
            print(f"shared_operator, m = {m}, {batch} runs: {ms:.1f} ms a step, {ms / chunks:.1f} ms a chunk, "
                  f"{rate:.0f} GFLOP/s counting the padding", flush=True)
    if args.lockstep_steps:
        for m in (2000, 5000):
            lockstep(m, args.lockstep_steps)


if __name__ == "__main__":
    main()
