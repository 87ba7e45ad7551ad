"""The sensing operator's products at other fixed shapes than the library's (bench/README.md, section [4]).

Prints GFLOP/s of one operator block (rows x 10,000) times a chunk of runs (N columns) repeated on hot operands, for
the block and chunk sizes a future ``SENSING_VERSION`` could choose, and ``objective.shared_operator`` on batches of
15, 32 and 45 runs (one, two, three chunks; the operator streamed from memory) at m = 2,000 and 5,000::

    .venv/bin/python bench/sensing_shapes.py
"""

from __future__ import annotations

import time

import torch

from mcreg_lib.objective import shared_operator

D = 10_000  # n^2 at P3's n = 100


def gflops(fn, flops: float, seconds: float = 0.5, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t, k = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            fn()
            k += 1
        best = min(best, (time.perf_counter() - t) / k)
    return flops / best / 1e9


def main() -> None:
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
            chunks = -(-batch // 16)
            rate = gflops(lambda: shared_operator(flat, a, y), 2 * 2 * m * D * chunks * 16, seconds=3)
            ms = 2 * 2 * m * D * chunks * 16 / rate / 1e6
            print(f"shared_operator, m = {m}, {batch} runs: {ms:.1f} ms a step, {ms / chunks:.1f} ms a chunk, "
                  f"{rate:.0f} GFLOP/s counting the padding", flush=True)


if __name__ == "__main__":
    main()
