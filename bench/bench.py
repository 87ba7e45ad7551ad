"""Speed benchmarks (``make bench``): three ratios, each measured in this one run on this machine.

1. ``mc.fit`` (one run, logging on) vs a plain ~30-line autograd loop on the same problem: target >= 1.5x.
2. A batch of 32 depth-3 100x100 runs in one ``mc.train``: achieved GFLOP/s as a fraction of the matmul peak
   (the best of large float32 matmuls) measured in the same run: target >= 65%; at ``--batch-steps`` with sparse
   and default logging, and at five times that (one repetition) with default logging. Also the same 32 runs one
   after another.
3. The ratio penalty's value and gradient for 32 runs, one batched call vs one SVD per run: target >= 3x per run;
   with the gradient's error against a float64 SVD, for both, on these and on matrices of known condition.

Timings are the best of ``--repeats`` interleaved repetitions (the machine may be shared; on a shared machine
``--threads 1 --clock cpu`` times by this process's CPU time, which other processes do not inflate).
Flops count only the matrix products of a step: for depth N, (N - 1) forward and 2 (N - 1) backward
products of 2 n^3 each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import mcreg_lib as mc
from mcreg_lib import penalties
from mcreg_lib.models import init_layers

DEVICE = "cpu"  # the benchmarks measure the CPU (mc.fit would pick CUDA where there is one)
CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time of this process (for a shared machine)


def plain_autograd_loop(problem: mc.Problem, depth: int, lr: float, init_scale: float, steps: int) -> float:
    """The reference: torch.optim.SGD on the observed-entry MSE, autograd through the product. Returns steps/s."""
    layers = [x.float().requires_grad_() for x in init_layers(problem.shape, depth, "gaussian", init_scale, 0)]
    rows, cols, values = problem.rows, problem.cols, problem.values.float()
    opt = torch.optim.SGD(layers, lr=lr)
    start = CLOCK()
    for _ in range(steps):
        w = layers[0]
        for layer in layers[1:]:
            w = layer @ w
        loss = (w[rows, cols] - values).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (CLOCK() - start)


def fit_speed(problem: mc.Problem, depth: int, lr: float, init_scale: float, steps: int) -> float:
    start = CLOCK()
    run = mc.fit(problem, depth=depth, lr=lr, init_scale=init_scale, max_steps=steps, stop_loss=0.0, progress=False,
                 device=DEVICE)
    seconds = CLOCK() - start
    assert run.summary["steps"] == steps and len(run.history) > 50  # logging on: about 20 rows a decade
    return steps / seconds


def matmul_peak(repeats: int = 5) -> float:
    """The best GFLOP/s of large float32 matmuls (1024^2 and 2048^2; many tries, since the machine may be shared)."""
    best = 0.0
    for n, tries in ((1024, 8 * repeats), (2048, 2 * repeats)):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = max(best, 2 * n**3 / min(_timed(lambda: a @ b) for _ in range(tries)) / 1e9)
    return best


def bmm_speed(batch: int, n: int, repeats: int = 50) -> float:
    a, b = torch.randn(batch, n, n), torch.randn(batch, n, n)
    out = torch.empty(batch, n, n)
    torch.bmm(a, b, out=out)
    best = min(_timed(lambda: torch.bmm(a, b, out=out)) for _ in range(repeats))
    return 2 * batch * n**3 / best / 1e9


def _timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def batch_speed(problem: mc.Problem, configs: list[mc.RunConfig]) -> float:
    """Run-steps per second of one batched ``mc.train`` call."""
    start = CLOCK()
    runs = mc.train(problem, configs, progress=False, device=DEVICE)
    seconds = CLOCK() - start
    assert all(r.summary["steps"] == c.max_steps for r, c in zip(runs, configs))
    return sum(c.max_steps for c in configs) / seconds


def sequential_speed(problem: mc.Problem, configs: list[mc.RunConfig]) -> float:
    start = CLOCK()
    for c in configs:
        mc.train(problem, [c], progress=False, device=DEVICE)
    return sum(c.max_steps for c in configs) / (CLOCK() - start)


def one_svd_ratio(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the ratio penalty of one matrix from its SVD, in the caller's thread and W's precision (the
    library's SVD method on a batch of one, without its worker threads)."""
    val, grad = penalties._value_and_grad(w[None], "ratio", {}, "svd")
    return val[0], grad[0]


def penalty_speed(ws: torch.Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per run of the ratio penalty's value and gradient: one SVD per run (the reference), the
    library's batched call (auto = the float64 Gram method for float32), the batched SVD method, and the Gram
    method on one thread."""
    def per_run(fn):
        return min(_timed(fn) for _ in range(repeats)) / len(ws) * 1e3

    out = {
        "one_svd_per_run_caller_threads": per_run(lambda: [one_svd_ratio(w) for w in ws]),
        "batched": per_run(lambda: penalties.value_and_grad(ws, "ratio", {})),
        "batched_svd": per_run(lambda: penalties.value_and_grad(ws, "ratio", {}, method="svd")),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out["one_svd_per_run_one_thread"] = per_run(lambda: [one_svd_ratio(w) for w in ws])
    # the reference at its best: small SVDs are often faster on one thread than on several
    out["one_svd_per_run"] = min(out["one_svd_per_run_caller_threads"], out["one_svd_per_run_one_thread"])
    out["batched_one_thread"] = per_run(lambda: penalties.value_and_grad(ws, "ratio", {}))
    # the floor: the decompositions alone, one thread, no products (float64 Gram eigendecomposition; float32 SVD)
    grams = torch.bmm(ws.double().mT, ws.double())
    out["eigh_alone_one_thread"] = per_run(lambda: torch.linalg.eigh(grams))
    out["svd_alone_one_thread"] = per_run(lambda: torch.linalg.svd(ws, full_matrices=False))
    torch.set_num_threads(threads)
    return out


def gradient_errors(ws: torch.Tensor) -> tuple[float, float]:
    """Largest relative Frobenius error of the gradient against the float64 SVD of the same float32 matrices:
    the library's batched call, and one float32 SVD per run."""
    _, exact = penalties.value_and_grad(ws.double(), "ratio", {}, method="svd")
    _, batched = penalties.value_and_grad(ws, "ratio", {})
    single = torch.stack([one_svd_ratio(w)[1] for w in ws])

    def rel(g: torch.Tensor) -> float:
        return float(((g.double() - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).max())

    return rel(batched), rel(single)


def with_condition(kappa: float, n: int, batch: int) -> torch.Tensor:
    """float32 matrices with singular values log-spaced from 1 to 1 / kappa."""
    u, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64))
    s = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), n, dtype=torch.float64)
    return ((u * s) @ v.mT).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit-steps", type=int, default=3000)
    ap.add_argument("--batch-steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (with --threads 1: robust when shared)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, depth, batch = 100, 3, 32
    problem = mc.completion_problem(n=n, rank=5, n_observed=2000, seed=0)
    out: dict[str, float | str] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock",
    }
    print(f"machine: {out['machine']}")

    # 1. fit vs plain autograd, interleaved
    plain, fit = [], []
    for _ in range(args.repeats):
        plain.append(plain_autograd_loop(problem, depth, 3.0, 1e-3, args.fit_steps))
        fit.append(fit_speed(problem, depth, 3.0, 1e-3, args.fit_steps))
    out.update(plain_steps_per_s=max(plain), fit_steps_per_s=max(fit), fit_vs_plain=max(fit) / max(plain))
    print(f"[1] plain autograd loop {max(plain):8.0f} steps/s | fit (logging on) {max(fit):8.0f} steps/s | "
          f"ratio {out['fit_vs_plain']:.2f}x (target >= 1.5x)")

    # 2. a batch of 32 vs the same 32 one after another, as a fraction of the matmul peak
    flops_per_run_step = 3 * (depth - 1) * 2 * n**3
    peak = max(matmul_peak() for _ in range(args.repeats))
    bmm = max(bmm_speed(batch, n) for _ in range(args.repeats))
    out.update(matmul_peak_gflops=peak, bmm_gflops=bmm)
    print(f"[2] matmul peak (1024^2/2048^2 float32) {peak:.0f} GFLOP/s; bmm of {batch} {n}x{n}: {bmm:.0f} GFLOP/s "
          f"({bmm / peak:.0%} of peak)")
    # The logging SVDs cost about the same per logged step whatever the horizon (about 20 logged steps a decade),
    # so their share shrinks as runs grow longer: short runs at both logging settings, and the book's typical
    # horizon (the chapters' runs are 10^4 to 10^6 steps) at the default.
    long_steps = 5 * args.batch_steps
    for lpd, steps, name in [(1, args.batch_steps, "logs_per_decade=1"),
                             (20, args.batch_steps, "default logging (20 per decade)"),
                             (20, long_steps, "default logging (20 per decade)")]:
        configs = [mc.RunConfig(depth=depth, lr=3.0, init_scale=1e-3, seed=s, max_steps=steps,
                                stop_loss=0.0, logs_per_decade=lpd) for s in range(batch)]
        speed = max(batch_speed(problem, configs) for _ in range(args.repeats if steps == args.batch_steps else 1))
        gflops = speed * flops_per_run_step / 1e9
        key = f"lpd{lpd}" + ("" if steps == args.batch_steps else f"_{steps}steps")
        out[f"batch_gflops_{key}"] = gflops
        out[f"batch_fraction_of_peak_{key}"] = gflops / peak
        print(f"    batch of {batch}, {steps:,} steps, {name}: {speed:8.0f} run-steps/s = {gflops:.0f} GFLOP/s = "
              f"{gflops / peak:.0%} of peak (target >= 65%)")
    configs = [mc.RunConfig(depth=depth, lr=3.0, init_scale=1e-3, seed=s, max_steps=args.batch_steps // 4,
                            stop_loss=0.0) for s in range(batch)]
    seq = sequential_speed(problem, configs)
    out.update(sequential_gflops=seq * flops_per_run_step / 1e9)
    print(f"    the same {batch} runs one after another: {seq:8.0f} run-steps/s = "
          f"{seq * flops_per_run_step / 1e9:.0f} GFLOP/s = {seq * flops_per_run_step / 1e9 / peak:.0%} of peak; "
          f"batch speed-up {out['batch_gflops_lpd20'] / out['sequential_gflops']:.1f}x")

    # 3. the ratio penalty's value and gradient: batched vs one SVD per run
    runs = mc.train(problem, [mc.RunConfig(depth=depth, optimizer="adam", lr=0.01, init_scale=1e-3, seed=s,
                                           penalty="ratio", penalty_weight=1e-3, max_steps=300, stop_loss=0.0)
                              for s in range(batch)], progress=False, device=DEVICE)
    ws = torch.stack([r.matrix for r in runs])
    t = penalty_speed(ws, args.repeats)
    ratio = t["one_svd_per_run"] / t["batched"]
    out.update({f"penalty_ms_{k}": x for k, x in t.items()}, penalty_ratio=ratio)
    print(f"[3] ratio penalty value+gradient, {batch} W's from P1-style runs (float32): one SVD per run "
          f"{t['one_svd_per_run']:.3f} ms/run (the faster of {t['one_svd_per_run_caller_threads']:.3f} on "
          f"{torch.get_num_threads()} threads and {t['one_svd_per_run_one_thread']:.3f} on one), batched "
          f"{t['batched']:.3f} ms/run: ratio {ratio:.2f}x (target >= 3x)")
    print(f"    batched with the SVD method {t['batched_svd']:.3f} ms/run; batched on one thread "
          f"{t['batched_one_thread']:.3f} ms/run ({t['one_svd_per_run'] / t['batched_one_thread']:.2f}x)")
    floor = min(t["eigh_alone_one_thread"], t["svd_alone_one_thread"]) / max(1, torch.get_num_threads())
    out["penalty_ratio_bound"] = t["one_svd_per_run"] / floor
    print(f"    the decompositions alone, one thread: eigh of W^T W (float64) {t['eigh_alone_one_thread']:.3f} ms, "
          f"SVD (float32) {t['svd_alone_one_thread']:.3f} ms per matrix; on {torch.get_num_threads()} threads "
          f"no batched method built on either can beat {floor:.3f} ms/run = {out['penalty_ratio_bound']:.2f}x")
    print("    gradient error vs the float64 SVD (largest relative Frobenius error; batched = float64 Gram method, "
          "reference = float32 SVD):")
    for name, mats in [("P1-style W's", ws)] + [(f"kappa = {k:.0e}", with_condition(k, n, batch))
                                               for k in (1e3, 1e5, 1e7)]:
        e_batched, e_svd = gradient_errors(mats)
        key = name.split()[0] if name.startswith("P1") else f"kappa{name.split()[-1]}"
        out[f"penalty_err_batched_{key}"], out[f"penalty_err_svd_{key}"] = e_batched, e_svd
        print(f"      {name:>14}: batched {e_batched:.1e} | one float32 SVD per run {e_svd:.1e}")
    sigma = torch.linalg.svdvals(ws.double())
    cond = (sigma[:, 0] / sigma[:, -1]).median().item()
    below = (sigma < torch.finfo(torch.float32).eps * sigma[:, :1]).sum(-1).float().mean().item()
    out.update(penalty_w_median_condition=cond, penalty_w_sigmas_below_float32_resolution=below)
    print(f"    the P1-style W's: median condition number {cond:.1e}; on average {below:.0f} of {n} singular values "
          f"lie below float32 resolution (eps * sigma_1), where U V^T is set by rounding, not by W")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
