"""The sensing operator's products at other fixed shapes than the library's (bench/README.md, section [4]).

Prints GFLOP/s of one operator block (rows x 10,000) times a chunk of runs (N columns) repeated on hot operands, for
the block and chunk sizes a future ``SENSING_VERSION`` could choose, and ``objective.shared_operator`` on batches of
15, 32 and 45 runs (one, two, three chunks; the operator streamed from memory) at m = 2,000 and 5,000::

    .venv/bin/python bench/sensing_shapes.py
"""

from __future__ import annotations

import argparse
import time

import torch

import mcreg_lib as mc
from mcreg_lib import objective, training
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


def depth_batches(problem: mc.Problem) -> list[training.Batch]:
    """The depth chapter's sensing batches of one instance: depths 2, 3, 4, each 5 inits x 3 seeds."""
    out = []
    for depth in (2, 3, 4):
        configs = [c for _, c in mc.grid(problem, depth=depth, optimizer="normalized_gd", lr=1e-3,
                                         init_scale=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7], seed=[0, 1, 2],
                                         max_steps=10**6, stop_loss=1e-6, dtype="float32")]
        out.append(training.Batch([problem] * len(configs), configs, torch.device("cpu")))
    return out


def one_after_another(batches: list[training.Batch], steps: int) -> None:
    for t in range(steps):
        for b in batches:
            w = b.forward()
            _, r, penalty = b.loss(w, t)
            b.step(r, penalty)


def in_lockstep(batches: list[training.Batch], steps: int) -> None:
    """One operator pass per step for every batch (the loss and R as Observations.residual computes them)."""
    obs = batches[0].obs
    for t in range(steps):
        ws = [b.forward() for b in batches]
        res, r = shared_operator(torch.cat([w.reshape(w.shape[0], -1) for w in ws]), obs.a, obs.y)
        start = 0
        for b, w in zip(batches, ws):
            k = w.shape[0]
            part = res[start:start + k]
            if t == 0:
                loss = torch.linalg.vecdot(part, part) / b.obs.m
                b.limit = objective.divergence_limit(loss, b.divergence_factor).cpu().double().numpy()
                b._refresh()
            b.step(r[start:start + k].view_as(w), None)
            start += k


def lockstep(m: int, steps: int) -> None:
    problem = mc.sensing_problem(n=100, rank=5, n_measurements=m, seed=0)
    best = {}
    for _ in range(2):
        for name, fn in (("one after another", one_after_another), ("in lockstep", in_lockstep)):
            batches = depth_batches(problem)
            t = time.perf_counter()
            fn(batches, steps)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / steps * 1e3)
    a, b = depth_batches(problem), depth_batches(problem)
    one_after_another(a, 5)
    in_lockstep(b, 5)
    same = all(torch.equal(x, y) for ba, bb in zip(a, b) for x, y in zip(ba.layers, bb.layers))
    print(f"m = {m}, depths 2, 3, 4 x 15 runs: one batch after another {best['one after another']:.1f} ms a step, "
          f"in lockstep {best['in lockstep']:.1f} ms ({best['one after another'] / best['in lockstep']:.2f}x); "
          f"layers bitwise equal after 5 steps: {same}", flush=True)


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
            chunks = -(-batch // 16)
            rate = gflops(lambda: shared_operator(flat, a, y), 2 * 2 * m * D * chunks * 16, seconds=3)
            ms = 2 * 2 * m * D * chunks * 16 / rate / 1e6
            print(f"shared_operator, m = {m}, {batch} runs: {ms:.1f} ms a step, {ms / chunks:.1f} ms a chunk, "
                  f"{rate:.0f} GFLOP/s counting the padding", flush=True)
    if args.lockstep_steps:
        for m in (2000, 5000):
            lockstep(m, args.lockstep_steps)


if __name__ == "__main__":
    main()
