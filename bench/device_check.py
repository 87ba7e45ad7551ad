"""Checks that the library runs on a CUDA device and agrees with the CPU (run where a GPU exists).

    python bench/device_check.py

Prints, for depths 1-4, the largest difference between the CPU and CUDA end-to-end matrices after the same float64
run; trains a batch of runs and a cached sweep on the device; and times a batch of 32 depth-3 100x100 runs on both.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

import mcreg_lib as mc


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
    ok = True
    p = mc.completion_problem(n=40, rank=3, n_observed=600, seed=0)
    for depth in (1, 2, 3, 4):
        for opt, lr, pen in (("gd", 2.0, None), ("adam", 1e-2, "ratio")):
            kw = dict(depth=depth, optimizer=opt, lr=lr, init_scale=1e-2, max_steps=300, dtype="float64",
                      penalty=pen, penalty_weight=1e-3 if pen else 0.0, progress=False)
            a, b = mc.fit(p, device="cpu", **kw), mc.fit(p, device="cuda", **kw)
            diff = (a.matrix - b.matrix).abs().max().item()
            same = a.summary["steps"] == b.summary["steps"] and diff < 1e-8
            ok &= same
            print(f"depth {depth} {opt:5s} penalty={pen}: steps {a.summary['steps']}/{b.summary['steps']}, "
                  f"max |W_cpu - W_cuda| = {diff:.2e} {'ok' if same else 'MISMATCH'}")
    # float32 penalties use the float64 Gram method (mcreg_lib.penalties): the penalty's value and gradient on the
    # same float32 matrices, CPU vs CUDA, and both against a float64 SVD
    from mcreg_lib import penalties

    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(8, 60, 60, dtype=torch.float64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(8, 60, 60, dtype=torch.float64, generator=g))
    w = ((u * torch.logspace(0, -4, 60, dtype=torch.float64)) @ v.mT).float()
    _, exact = penalties.value_and_grad(w.double(), "ratio", {}, method="svd")
    _, g_cpu = penalties.value_and_grad(w, "ratio", {})
    _, g_cuda = penalties.value_and_grad(w.cuda(), "ratio", {})
    errs = [float(((x.double().cpu() - exact).norm() / exact.norm())) for x in (g_cpu, g_cuda)]
    ok &= max(errs) < 1e-6
    print(f"ratio penalty, float32, Gram method, kappa 1e4: rel. error vs float64 SVD cpu {errs[0]:.1e}, "
          f"cuda {errs[1]:.1e}")
    kw = dict(depth=3, optimizer="adam", lr=1e-2, init_scale=1e-2, max_steps=200, penalty="ratio",
              penalty_weight=1e-3, progress=False)
    a, b = mc.fit(p, device="cpu", **kw), mc.fit(p, device="cuda", **kw)
    d = float((a.matrix - b.matrix).abs().max() / a.matrix.abs().max())
    print(f"float32 depth 3 adam + ratio penalty: max |W_cpu - W_cuda| / max |W| = {d:.1e} (float32 rounding differs)")
    s = mc.sensing_problem(n=10, rank=2, n_measurements=150, seed=0)
    a = mc.fit(s, depth=2, lr=0.5, max_steps=200, dtype="float64", device="cpu", progress=False)
    b = mc.fit(s, depth=2, lr=0.5, max_steps=200, dtype="float64", device="cuda", progress=False)
    d = (a.matrix - b.matrix).abs().max().item()
    ok &= d < 1e-8
    print(f"sensing depth 2: max diff {d:.2e}")
    with tempfile.TemporaryDirectory() as cache:
        spec = mc.grid(p, depth=[2, 3], seed=[0, 1], lr=2.0, max_steps=200, dtype="float64")
        first = mc.sweep(spec, device="cuda", cache=cache, progress=False)
        again = mc.sweep(spec, device="cuda", cache=cache, progress=False)
        same = all(torch.equal(x.matrix, y.matrix) for x, y in zip(first.runs, again.runs))
        ok &= same and again.cached == len(spec)
        print(f"cached sweep on cuda: computed {first.computed}, then cached {again.cached}/{len(spec)}, "
              f"identical {same}")
    big = mc.completion_problem(n=100, rank=5, n_observed=2000, seed=0)
    configs = [mc.RunConfig(depth=3, lr=3.0, seed=s, max_steps=2000, stop_loss=0.0) for s in range(32)]
    for dev in ("cpu", "cuda"):
        mc.train(big, configs[:2], device=dev, progress=False)  # warm up
        t = time.perf_counter()
        mc.train(big, configs, device=dev, progress=False)
        if dev == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t
        print(f"batch of 32 depth-3 100x100 runs x 2000 steps on {dev}: {sec:.2f} s ({32 * 2000 / sec:,.0f} run-steps/s)")
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
