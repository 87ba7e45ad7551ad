"""Speed benchmarks (``make bench``): ratios, each measured in this one run on this machine, and where the time goes.

1. ``mc.fit`` (one run, logging on) vs a plain ~30-line autograd loop on the same problem: target >= 1.5x.
2. A batch of 32 depth-3 100x100 runs in one ``mc.train``, 10,000 steps, default logging: GFLOP/s as a fraction of
   the matmul peak measured in the same run (target >= 65%), with a breakdown of the loop's time (matrix products,
   elementwise work, decompositions, Python; and by phase: forward, loss, logging, update), so a regression shows
   where it is; and the same runs one after another.
3. A penalized batch (32 runs, Adam + the ratio penalty, float32): time per run-step against the decomposition floor
   (one float64 eigendecomposition of W^T W per run, on one thread, divided by the threads), target <= 1.3x; the
   penalty's gradient error against a float64 SVD; and the old reference, one SVD per run.
4. Sensing at P3's size (n = 100, rank 5): a batch of runs sharing one measurement operator as a fraction of the
   peak (target >= 50%) against the same runs one after another.
5. Nuclear-norm minimization: seconds per solve of the library's solver against cvxpy + SCS (the papers' code) on
   the same problem, and the projected time of the book's volume.
6. Tensor CP completion (P4, order 4, 8^4): a batch against the same runs one after another.
7. Side by side with the papers' code paths: our sweep against a loop written as P3's code does it (autograd
   through bias-free linear layers, GroupRMSprop, one run at a time), and our penalized step against one written as
   P1's released code does it (autograd through ``matrix_norm(W, 'nuc') / matrix_norm(W, 'fro')``, Adam).

Timings are the best of ``--repeats`` repetitions (the machine may be shared; on a shared machine ``--threads 1
--clock cpu`` times by this process's CPU time, which other processes do not inflate). Flops count only the matrix
products of a step: for depth N, (N - 1) forward and 2 (N - 1) backward products of 2 n^3 each; sensing adds
2 * 2 m n^2 for the operator and its adjoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections import defaultdict

import torch

import mcreg_lib as mc
from mcreg_lib import objective, penalties, training
from mcreg_lib.models import init_layers

DEVICE = "cpu"  # the benchmarks measure the CPU (mc.fit would pick CUDA where there is one)
CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time of this process (for a shared machine)
PRODUCTS = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::matmul", "aten::baddbmm_", "aten::addmm_")
DECOMPOSITIONS = ("aten::_linalg_svd", "aten::linalg_svd", "aten::_linalg_eigh", "aten::linalg_eigh",
                  "aten::linalg_svdvals")


def _timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def best(fn, repeats: int) -> float:
    return min(_timed(fn) for _ in range(repeats))


# --- 1. fit vs plain autograd -----------------------------------------------------------------------------------

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
                 device=DEVICE, cache=False)
    seconds = CLOCK() - start
    assert run.summary["steps"] == steps and len(run.history) > 20  # logging on: about 20 rows a decade
    return steps / seconds


# --- 2. the batch at its peak, and where its time goes ------------------------------------------------------------

def matmul_peak(repeats: int = 5) -> float:
    """The best GFLOP/s of large float32 matmuls (1024^2 and 2048^2; many tries, since the machine may be shared)."""
    peak = 0.0
    for n, tries in ((1024, 8 * repeats), (2048, 2 * repeats)):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        peak = max(peak, 2 * n**3 / best(lambda: a @ b, tries) / 1e9)
    return peak


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


def phase_breakdown(problem: mc.Problem, configs: list[mc.RunConfig]) -> dict[str, float]:
    """Shares of the loop's time by phase (training.Batch's methods, timed from outside) and by kind of op
    (torch.profiler's self times: matrix products, decompositions, other aten ops; the rest is Python). A batch
    split across k threads (training._chunks) is measured in thread-seconds, k times the wall; its kinds of op
    are profiled on one thread's sub-batch run alone on one thread (the profiler does not see worker threads)."""
    from torch.profiler import ProfilerActivity, profile

    chunks = training._chunks([problem], configs, torch.device(DEVICE))
    spent: dict[str, float] = defaultdict(float)
    lock = threading.Lock()
    originals = {name: getattr(training.Batch, name) for name in ("forward", "loss", "log", "step")}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    spent[name] += time.perf_counter() - t0
        return wrapper

    for name, fn in originals.items():
        setattr(training.Batch, name, timed(name, fn))
    shared = objective.shared_residuals  # batches in lockstep: their losses in one operator pass, the loss phase
    objective.shared_residuals = timed("loss", shared)
    try:
        t0 = time.perf_counter()
        mc.train(problem, configs, progress=False, device=DEVICE)
        wall = (time.perf_counter() - t0) * len(chunks)
    finally:
        for name, fn in originals.items():
            setattr(training.Batch, name, fn)
        objective.shared_residuals = shared
    out = {f"phase_{k}": spent[k] / wall for k in originals}
    out["phase_loop_and_bookkeeping"] = 1.0 - sum(spent.values()) / wall
    part = [configs[i] for i in chunks[0]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if len(chunks) > 1 else threads)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            mc.train(problem, part, progress=False, device=DEVICE)
            wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    kinds: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        kind = "products" if e.key in PRODUCTS else "decompositions" if e.key in DECOMPOSITIONS else \
            "elementwise_and_other_ops" if e.key.startswith("aten::") else None
        if kind:
            kinds[kind] += e.self_cpu_time_total / 1e6
    out.update({f"ops_{k}": v / wall for k, v in kinds.items()})
    out["ops_python_and_overhead"] = max(0.0, 1.0 - sum(kinds.values()) / wall)
    out["split_threads"] = len(chunks)
    return out


def bmm_alone(batch: int, n: int, repeats: int) -> float:
    """GFLOP/s of one batched product of the step's shape, repeated on the same operands (hot in the caches): the
    best the loop's products can do on this machine."""
    a, b = torch.randn(batch, n, n), torch.randn(batch, n, n)
    out = torch.empty(batch, n, n)

    def many():
        for _ in range(200):
            torch.bmm(a, b, out=out)

    many()
    return 200 * batch * 2 * n**3 / best(many, repeats) / 1e9


def operator_alone(problem: mc.Problem, batch: int, repeats: int) -> float:
    """GFLOP/s of the sensing step's two operator products alone (``objective.shared_operator`` on a batch of
    ``batch`` matrices, the operator read from memory each call as in the loop): the ceiling of a sensing batch."""
    from mcreg_lib.objective import shared_operator

    m = problem.n_observed
    a = problem.measurements.reshape(m, -1).to(torch.float32).contiguous()
    y = problem.values.to(torch.float32)
    flat = torch.randn(batch, a.shape[1]) * 1e-3
    calls = 20

    def many():
        for _ in range(calls):
            shared_operator(flat, a, y)

    many()
    return calls * batch * 2 * 2 * m * a.shape[1] / best(many, repeats) / 1e9


# --- 3. the penalized step against the decomposition floor --------------------------------------------------------

def one_svd_ratio(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The old reference: the ratio penalty of one matrix from its SVD, in the caller's thread and W's precision."""
    val, grad = penalties._value_and_grad(w[None], "ratio", {}, "svd")
    return val[0], grad[0]


def decomposition_floor(ws: torch.Tensor, repeats: int) -> float:
    """Milliseconds per matrix of the float64 eigendecomposition of W^T W alone, on one thread, divided by the
    threads: no method built on one decomposition per run can take less per run-step."""
    grams = torch.bmm(ws.double().mT, ws.double())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = best(lambda: torch.linalg.eigh(grams), repeats) / len(ws) * 1e3
    finally:
        torch.set_num_threads(threads)
    return one / max(1, threads)


def penalized_step_ms(problem: mc.Problem, depth: int, steps: int, batch: int) -> float:
    configs = [mc.RunConfig(depth=depth, optimizer="adam", lr=0.01, init_scale=1e-3, seed=s, penalty="ratio",
                            penalty_weight=1e-3, max_steps=steps, stop_loss=0.0, logs_per_decade=1)
               for s in range(batch)]
    return 1e3 / batch_speed(problem, configs)


def gradient_errors(ws: torch.Tensor) -> dict[str, float]:
    """Relative Frobenius errors of the gradient against the float64 SVD of the same float32 matrices, for the
    library's batched call ("ours") and one float32 SVD per run ("svd"): the median and the largest over the batch,
    and the condition number of the matrix where ours is largest (the Gram method's error grows like
    eps64 * kappa^2, so one near-singular matrix sets the largest)."""
    _, exact = penalties.value_and_grad(ws.double(), "ratio", {}, method="svd")
    _, batched = penalties.value_and_grad(ws, "ratio", {})
    single = torch.stack([one_svd_ratio(w)[1] for w in ws])

    def rel(g: torch.Tensor) -> torch.Tensor:
        return (g.double() - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)

    ours, svd = rel(batched), rel(single)
    sigma = torch.linalg.svdvals(ws.double())
    worst = int(ours.argmax())
    return {"ours_median": float(ours.median()), "ours_max": float(ours.max()),
            "svd_median": float(svd.median()), "svd_max": float(svd.max()),
            "kappa_at_ours_max": float(sigma[worst, 0] / sigma[worst, -1])}


def with_condition(kappa: float, n: int, batch: int) -> torch.Tensor:
    """float32 matrices with singular values log-spaced from 1 to 1 / kappa."""
    u, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64))
    s = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), n, dtype=torch.float64)
    return ((u * s) @ v.mT).float()


# --- 7. the papers' code paths ------------------------------------------------------------------------------------

def p3_code_path(problem: mc.Problem, depth: int, init_scale: float, lr: float, steps: int) -> float:
    """Steps/s of a loop written as P3's released code does it: bias-free linear layers, autograd, the mean squared
    error on observed entries, "GroupRMSprop" (one adaptive step for all parameters), one run at a time."""
    n = problem.shape[0]
    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[torch.nn.Linear(n, n, bias=False) for _ in range(depth)])
    with torch.no_grad():
        for layer, w in zip(layers, init_layers(problem.shape, depth, "gaussian", init_scale, 0)):
            layer.weight.copy_(w.float())
    eye = torch.eye(n)
    rows, cols, values = problem.rows, problem.cols, problem.values.float()
    params = list(layers.parameters())
    v, beta, eps = torch.zeros(()), 0.99, 1e-4
    start = CLOCK()
    for t in range(1, steps + 1):
        w = layers(eye).T  # the end-to-end matrix as P3's model computes it (the product applied to I)
        loss = (w[rows, cols] - values).square().mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            v = beta * v + (1 - beta) * sum(g.square().sum() for g in grads)
            step = lr / ((v / (1 - beta**t)).sqrt() + eps)
            for p, g in zip(params, grads):
                p.sub_(step * g)
    return steps / (CLOCK() - start)


def p1_code_path(problem: mc.Problem, depth: int, steps: int) -> float:
    """Milliseconds per step of a loop written as P1's released code does it: autograd through the end-to-end
    product and ``matrix_norm(W, 'nuc') / matrix_norm(W, 'fro')``, torch.optim.Adam, one run at a time."""
    layers = [x.float().requires_grad_() for x in init_layers(problem.shape, depth, "gaussian", 1e-3, 0)]
    rows, cols, values = problem.rows, problem.cols, problem.values.float()
    opt = torch.optim.Adam(layers, lr=0.01)
    start = CLOCK()
    for _ in range(steps):
        w = layers[0]
        for layer in layers[1:]:
            w = layer @ w
        loss = (w[rows, cols] - values).square().mean() + 1e-3 * (
            torch.linalg.matrix_norm(w, "nuc") / torch.linalg.matrix_norm(w, "fro"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (CLOCK() - start) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit-steps", type=int, default=3000)
    ap.add_argument("--batch-steps", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that every section runs (no timing)")
    ap.add_argument("--sections", default="1234567", help="which sections to run, e.g. 23")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (with --threads 1: robust when shared)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["MCREG_PROGRESS"] = "0"
    torch.manual_seed(0)
    quick = args.quick
    n, depth, batch = (30, 3, 4) if quick else (100, 3, 32)
    reps = 1 if quick else args.repeats
    steps = 200 if quick else args.batch_steps
    problem = mc.completion_problem(n=n, rank=5, n_observed=min(2000, n * n // 2), seed=0)
    out: dict[str, float | str] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock",
    }
    print(f"machine: {out['machine']}" + (" (--quick: tiny sizes, the numbers mean nothing)" if quick else ""))
    flops_per_run_step = 3 * (depth - 1) * 2 * n**3
    peak = max(matmul_peak(1 if quick else 5) for _ in range(reps))
    out["matmul_peak_gflops"] = peak
    print(f"    matmul peak (1024^2/2048^2 float32): {peak:.0f} GFLOP/s")

    if "1" in args.sections:
        fit_steps = 100 if quick else args.fit_steps
        plain, fit = [], []
        for _ in range(reps):
            plain.append(plain_autograd_loop(problem, depth, 3.0, 1e-3, fit_steps))
            fit.append(fit_speed(problem, depth, 3.0, 1e-3, fit_steps))
        out.update(plain_steps_per_s=max(plain), fit_steps_per_s=max(fit), fit_vs_plain=max(fit) / max(plain))
        print(f"[1] plain autograd loop {max(plain):8.0f} steps/s | fit (logging on) {max(fit):8.0f} steps/s | "
              f"ratio {out['fit_vs_plain']:.2f}x (target >= 1.5x)")

    if "2" in args.sections:
        configs = [mc.RunConfig(depth=depth, lr=3.0, init_scale=1e-3, seed=s, max_steps=steps, stop_loss=0.0)
                   for s in range(batch)]
        speed = max(batch_speed(problem, configs) for _ in range(reps))
        gflops = speed * flops_per_run_step / 1e9
        out.update(batch_gflops=gflops, batch_fraction_of_peak=gflops / peak)
        print(f"[2] batch of {batch}, {steps:,} steps, default logging: {speed:8.0f} run-steps/s = {gflops:.0f} "
              f"GFLOP/s = {gflops / peak:.0%} of peak (target >= 65%)")
        short = [mc.RunConfig(**{**c.as_dict(), "max_steps": max(50, steps // 5),
                                 "optimizer_options": (), "penalty_options": ()}) for c in configs]
        shares = phase_breakdown(problem, short)
        out.update({f"share_{k}": v for k, v in shares.items()})
        split = int(shares.pop("split_threads"))
        out["batch_split_threads"] = split
        print(f"    the batch trains as {split} sub-batch{'es, one per thread' if split > 1 else ''}")
        print("    where the time goes (a run of " + f"{short[0].max_steps:,}" + " steps): by phase " + ", ".join(
            f"{k.removeprefix('phase_')} {v:.0%}" for k, v in shares.items() if k.startswith("phase_")))
        kinds = ", ".join(f"{k.removeprefix('ops_').replace('_', ' ')} {v:.0%}"
                          for k, v in shares.items() if k.startswith("ops_"))
        print("    by kind of op" + (" (one thread's sub-batch, alone)" if split > 1 else "") + ": " + kinds)
        alone = bmm_alone(batch, n, 1 if quick else 5)
        out.update(bmm_alone_gflops=alone)
        print(f"    one bmm of {batch} {n}x{n} alone (same operands, hot caches): {alone:.0f} GFLOP/s = {alone / peak:.0%} "
              f"of peak; the loop reaches {gflops / peak:.0%}")
        seq_configs = [mc.RunConfig(**{**c.as_dict(), "max_steps": max(50, steps // 20),
                                       "optimizer_options": (), "penalty_options": ()}) for c in configs]
        seq = sequential_speed(problem, seq_configs)
        out.update(sequential_gflops=seq * flops_per_run_step / 1e9)
        print(f"    the same {batch} runs one after another: {seq:8.0f} run-steps/s = "
              f"{seq * flops_per_run_step / 1e9 / peak:.0%} of peak; batch speed-up {speed / seq:.1f}x")

    if "3" in args.sections:
        pen_steps = 40 if quick else 500
        ws = torch.stack([r.matrix for r in mc.train(problem, [
            mc.RunConfig(depth=1, optimizer="adam", lr=0.01, init_scale=1e-3, seed=s, penalty="ratio",
                         penalty_weight=1e-3, max_steps=300, stop_loss=0.0) for s in range(batch)],
            progress=False, device=DEVICE)])
        floor = decomposition_floor(ws, reps)
        step1 = min(penalized_step_ms(problem, 1, pen_steps, batch) for _ in range(reps))
        step3 = min(penalized_step_ms(problem, 3, pen_steps, batch) for _ in range(reps))
        reference = best(lambda: [one_svd_ratio(w) for w in ws], reps) / len(ws) * 1e3
        out.update(penalty_floor_ms=floor, penalized_step_ms_depth1=step1, penalized_step_ms_depth3=step3,
                   penalized_step_vs_floor=step1 / floor, penalty_one_svd_ms=reference)
        print(f"[3] penalized step (Adam + ratio penalty, batch of {batch}, float32): depth 1 {step1:.3f} ms, "
              f"depth 3 {step3:.3f} ms per run-step; the decomposition floor (float64 eigh of W^T W, one thread, "
              f"/ {torch.get_num_threads()} threads) {floor:.3f} ms: depth 1 at {step1 / floor:.2f}x the floor "
              f"(target <= 1.3x)")
        pcfg = [mc.RunConfig(depth=1, optimizer="adam", lr=0.01, init_scale=1e-3, seed=s, penalty="ratio",
                             penalty_weight=1e-3, max_steps=pen_steps, stop_loss=0.0, logs_per_decade=1)
                for s in range(batch)]
        pshares = phase_breakdown(problem, pcfg)
        psplit = int(pshares.pop("split_threads"))
        out.update({f"penalty_share_{k}": v for k, v in pshares.items()})
        dec, prod = pshares.get("ops_decompositions", 0.0), pshares.get("ops_products", 0.0)
        where = " (one thread's sub-batch, alone)" if psplit > 1 else ""
        print(f"    where the depth-1 step's time goes, by kind of op{where}: " + ", ".join(
              f"{k.removeprefix('ops_').replace('_', ' ')} {v:.0%}" for k, v in pshares.items() if k.startswith("ops_"))
              + (f"; the decompositions and the products alone (the float64 Gram product, W V diag(c) in float64, "
                 f"then by V^T) are {(dec + prod) / dec:.2f}x the decompositions" if dec > 0 else ""))
        print(f"    the penalty alone by one float32 SVD per run (the old reference): {reference:.3f} ms/run")
        print("    gradient error vs the float64 SVD (relative Frobenius error over the batch, median / largest; "
              "ours = float64 Gram method, reference = one float32 SVD per run; kappa: the condition number where "
              "ours is largest):")
        for name, mats in [("P1-style W's", ws)] + [(f"kappa = {k:.0e}", with_condition(k, n, batch))
                                                   for k in (1e3, 1e5, 1e7)]:
            e = gradient_errors(mats)
            key = name.split()[0] if name.startswith("P1") else f"kappa{name.split()[-1]}"
            out[f"penalty_err_batched_{key}"], out[f"penalty_err_svd_{key}"] = e["ours_max"], e["svd_max"]
            out[f"penalty_err_batched_median_{key}"] = e["ours_median"]
            out[f"penalty_err_svd_median_{key}"] = e["svd_median"]
            out[f"penalty_err_kappa_{key}"] = e["kappa_at_ours_max"]
            print(f"      {name:>14}: ours {e['ours_median']:.1e} / {e['ours_max']:.1e} (kappa "
                  f"{e['kappa_at_ours_max']:.1e}) | one float32 SVD per run {e['svd_median']:.1e} / {e['svd_max']:.1e}")

    if "4" in args.sections:
        # The book's sensing grid at one m: depths 2, 3, 4 on one problem, trained in lockstep (one operator pass
        # per step for all of them, in chunks of objective.RUN_CHUNK runs); 15 runs a depth as in the chapter.
        sn, m, per = (12, 100, 3) if quick else (100, 2000, 15)
        sens = mc.sensing_problem(n=sn, rank=min(5, sn), n_measurements=m, seed=0)
        sdepths = (2, 3, 4)

        def sflops(d: int) -> int:  # a run-step's useful flops: the layers' products and the operator's two
            return 3 * (d - 1) * 2 * sn**3 + 2 * 2 * m * sn**2

        ssteps = 40 if quick else 300
        sconfigs = [mc.RunConfig(depth=d, optimizer="normalized_gd", lr=1e-3, init_scale=1e-3, seed=s,
                                 max_steps=ssteps, stop_loss=0.0, logs_per_decade=1)
                    for d in sdepths for s in range(per)]
        work = sum(sflops(c.depth) * c.max_steps for c in sconfigs)

        def lockstep_seconds() -> float:
            start = CLOCK()
            mc.train(sens, sconfigs, progress=False, device=DEVICE)
            return CLOCK() - start

        def batches_seconds() -> float:
            start = CLOCK()
            for d in sdepths:
                mc.train(sens, [c for c in sconfigs if c.depth == d], progress=False, device=DEVICE)
            return CLOCK() - start

        t_lock = min(lockstep_seconds() for _ in range(reps))
        t_apart = min(batches_seconds() for _ in range(reps))
        one = [mc.RunConfig(**{**c.as_dict(), "max_steps": 20 if quick else 100, "optimizer_options": (),
                               "penalty_options": ()}) for c in sconfigs[per:per + 4]]  # depth 3, one at a time
        ss = sequential_speed(sens, one)
        rate = work / t_lock / 1e9
        out.update(sensing_fraction_of_peak=rate / peak, sensing_batches_fraction=work / t_apart / 1e9 / peak,
                   sensing_lockstep_vs_batches=t_apart / t_lock,
                   sensing_sequential_fraction=ss * sflops(3) / 1e9 / peak)
        print(f"[4] sensing n = {sn}, m = {m}: depths 2, 3, 4 x {per} runs on one operator, in lockstep "
              f"{rate:.0f} GFLOP/s = {rate / peak:.0%} of peak (target >= 50%); the three depths as batches one "
              f"after another {work / t_apart / 1e9 / peak:.0%} ({t_apart / t_lock:.2f}x slower); depth-3 runs one "
              f"after another {ss * sflops(3) / 1e9 / peak:.0%}")
        sshort = [mc.RunConfig(**{**c.as_dict(), "max_steps": 20 if quick else 100,
                                  "optimizer_options": (), "penalty_options": ()}) for c in sconfigs]
        sshares = phase_breakdown(sens, sshort)
        sshares.pop("split_threads")
        out.update({f"sensing_share_{k}": v for k, v in sshares.items()})
        print("    where the time goes (the lockstep, " + f"{sshort[0].max_steps:,}" + " steps): by phase " + ", ".join(
            f"{k.removeprefix('phase_')} {v:.0%}" for k, v in sshares.items() if k.startswith("phase_"))
            + " (the loss phase holds the operator's two products); by kind of op " + ", ".join(
            f"{k.removeprefix('ops_').replace('_', ' ')} {v:.0%}" for k, v in sshares.items() if k.startswith("ops_")))
        runs = len(sconfigs)
        op = operator_alone(sens, runs, reps)
        chunk = objective.RUN_CHUNK
        share = sum(2 * 2 * m * sn**2 for _ in sconfigs) / sum(sflops(c.depth) for c in sconfigs)
        out.update(sensing_operator_alone_fraction=op / peak, sensing_operator_flop_share=share)
        print(f"    the operator's two products ({share:.0%} of the step's flops) alone, as the loop takes them "
              f"({runs} runs as {-(-runs // chunk)} chunk(s) of {chunk}, the operator from memory): {op:.0f} "
              f"GFLOP/s = {op / peak:.0%} of peak")
        per_run = 2 * 2 * m * sn**2  # the two products' flops for one run
        ms_all, ms_one = runs * per_run / op / 1e6, per_run / operator_alone(sens, 1, reps) / 1e6
        read = m * sn**2 * 4 / (ms_one / 1e3) / 1e9  # the float32 operator, read once a pass
        out.update(sensing_operator_ms_all=ms_all, sensing_operator_ms_one=ms_one, sensing_operator_read_gbs=read)
        print(f"    the same pass for one run: {ms_one:.2f} ms against {ms_all:.2f} ms for all {runs} runs "
              f"({ms_one / ms_all:.0%} of it; the operator's {m * sn**2 * 4 / 1e6:.0f} MB read in the one run's "
              f"time: {read:.1f} GB/s)")

    if "5" in args.sections:
        from mcreg_lib import baselines

        nn_, m = (20, 200) if quick else (100, 2000)
        prob = mc.completion_problem(n=nn_, rank=min(5, nn_ // 4), n_observed=m, seed=0)
        t0 = CLOCK()
        ours = baselines.nuclear_norm_minimization(prob, cache=False)
        t_ours = CLOCK() - t0
        t0 = CLOCK()
        ref = baselines.nuclear_norm_minimization(prob, solver="cvxpy", cache=False)
        t_ref = CLOCK() - t0
        volume = 9 * 2 * 3 + 12  # every m of 1000..5000 (step 500) x ranks 5, 10 x 3 seeds, plus the figures' own
        out.update(nnm_seconds=t_ours, nnm_cvxpy_seconds=t_ref, nnm_speedup=t_ref / t_ours)
        print(f"[5] nuclear-norm minimization, n = {nn_}, m = {m}: ours {t_ours:.2f} s, cvxpy + SCS {t_ref:.2f} s "
              f"({t_ref / t_ours:.1f}x); objective {ours.summary['nuclear_norm']:.4f} vs "
              f"{ref.summary['nuclear_norm']:.4f}; the book's ~{volume} solves: about {volume * t_ours / 60:.1f} "
              f"min (cvxpy: {volume * t_ref / 60:.0f} min)")

    if "6" in args.sections:
        from mcreg_lib import tensors

        order, tn = (3, 4) if quick else (4, 8)
        tp = tensors.tensor_completion_problem(order=order, n=tn, rank=1, n_observed=tn**order // 4, seed=0)
        tsteps = 30 if quick else 300
        tcfg = [tensors.CPConfig(seed=s, max_steps=tsteps, stop_loss=0.0) for s in range(8)]
        t0 = CLOCK()
        tensors.train_cp([tp] * len(tcfg), tcfg, progress=False)
        tb = len(tcfg) * tsteps / (CLOCK() - t0)
        t0 = CLOCK()
        for c in tcfg[:2]:
            tensors.train_cp([tp], [c], progress=False)
        ts = 2 * tsteps / (CLOCK() - t0)
        out.update(tensor_batch_speedup=tb / ts)
        print(f"[6] tensor CP completion, order {order}, {tn}^{order}: a batch of {len(tcfg)} {tb:7.0f} run-steps/s, "
              f"one at a time {ts:7.0f} run-steps/s ({tb / ts:.1f}x)")

    if "7" in args.sections:
        p3_steps = 50 if quick else 1000
        p3 = max(p3_code_path(problem, depth, 1e-3, 1e-3, p3_steps) for _ in range(reps))
        configs = [mc.RunConfig(depth=depth, optimizer="normalized_gd", lr=1e-3, init_scale=1e-3, seed=s,
                                max_steps=p3_steps * 2, stop_loss=0.0) for s in range(batch)]
        ours = max(batch_speed(problem, configs) for _ in range(reps))
        p1 = min(p1_code_path(problem, 1, 20 if quick else 300) for _ in range(reps))
        ours1 = min(penalized_step_ms(problem, 1, 40 if quick else 500, batch) for _ in range(reps))
        out.update(p3_code_run_steps_per_s=p3, ours_vs_p3_code=ours / p3, p1_code_ms=p1, ours_vs_p1_code=p1 / ours1)
        print(f"[7] P3's code path (autograd, GroupRMSprop, one run at a time) {p3:7.0f} steps/s; our sweep of "
              f"{batch} {ours:7.0f} run-steps/s: {ours / p3:.1f}x")
        print(f"    P1's code path (autograd through the nuclear and Frobenius norms, Adam, depth 1) {p1:.3f} ms/step; "
              f"our penalized batch {ours1:.3f} ms per run-step: {p1 / ours1:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
