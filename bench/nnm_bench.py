"""Nuclear-norm minimization (the papers' baseline): time per solve of cvxpy + SCS and Clarabel, and of
``mcreg_lib.nnm.solve``, on the same program ``min ||Z||_*  s.t.  |Z_ij - W*_ij| <= tol`` on the observed entries
(``|<A_i, Z> - y_i| <= tol`` for sensing), tol = 1e-3.

For each solve it prints and records: seconds, status, the objective ``||Z||_*`` (from the singular values of the
returned Z), ``error_all`` (``mcreg_lib.baselines.evaluate``) and the maximal constraint violation
``max(|Z_ij - W*_ij| - tol, 0)`` over the observed entries.

Parts (``--part``, repeatable):

* ``scs``: cvxpy + SCS at n = 100, rank 5, m in {1000, 2000, 3500, 5000}, for eps in {1e-4, 1e-5, 1e-6} (cvxpy
  sets ``eps_abs = eps_rel = eps``) and Anderson acceleration on (SCS's default, lookback 10) or off (lookback 0).
* ``clarabel``: Clarabel (interior point) and SCS at eps = 1e-6 on the same cvxpy program at n = 30 and 60, each
  under ``--time-limit`` (Clarabel's dense PSD-cone steps grow like n^6: n = 100 is out of reach).
* ``sensing``: cvxpy + SCS on one sensing problem, n = 100, rank 5, ``--sensing-m`` Gaussian measurements.
* ``ours``: ``mcreg_lib.nnm.solve`` on the same instances as ``scs``, its agreement with SCS at eps = 1e-6, and the
  whole book's volume (ranks 5 and 10, m = 1000..5000 by 500, 3 seeds) cold and warm-started along m.

Times are wall clock on whatever else runs on the machine: compare numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

import mcreg_lib as mc
from mcreg_lib import baselines

TOL = 1e-3


def measure(problem: mc.Problem, z, seconds: float, status: str, **extra) -> dict:
    """Objective, error_all and maximal violation of a returned Z (float64 array or tensor)."""
    z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    if problem.kind == "completion":
        lhs = z[problem.rows, problem.cols]
    else:
        lhs = problem.measurements.reshape(problem.n_observed, -1) @ z.reshape(-1)
    violation = float(((lhs - problem.values).abs() - TOL).clamp_min(0.0).max())
    found = baselines.evaluate(problem, z)
    return {"seconds": seconds, "status": status, "objective": float(torch.linalg.svdvals(z).sum()),
            "error_all": found["error_all"], "violation": violation, **extra}


def cvxpy_solve(problem: mc.Problem, solver: str, **options) -> dict:
    """The program of ``baselines.nuclear_norm_minimization``, with any solver and options."""
    import cvxpy as cp

    n_rows, n_cols = problem.shape
    z = cp.Variable((n_rows, n_cols))
    if problem.kind == "completion":
        lhs = cp.vec(z, order="C")[(problem.rows * n_cols + problem.cols).numpy()]
    else:
        lhs = problem.measurements.numpy().reshape(problem.n_observed, -1) @ cp.vec(z, order="C")
    prob = cp.Problem(cp.Minimize(cp.normNuc(z)), [cp.abs(lhs - problem.values.numpy()) <= TOL])
    start = time.perf_counter()
    try:
        prob.solve(solver=solver, **options)
    except cp.error.SolverError as exc:
        return {"seconds": time.perf_counter() - start, "status": f"error: {exc}"}
    seconds = time.perf_counter() - start
    if z.value is None:
        return {"seconds": seconds, "status": prob.status}
    stats = prob.solver_stats
    return measure(problem, z.value, seconds, prob.status, iterations=stats.num_iters,
                   solve_seconds=stats.solve_time)


def line(label: str, r: dict) -> str:
    if "objective" not in r:
        return f"{label:44s} {r['seconds']:8.2f} s  {r['status']}"
    its = r.get("iterations")
    return (f"{label:44s} {r['seconds']:8.2f} s  {r['status']:16s} iters {its if its is not None else '-':>6}  "
            f"obj {r['objective']:.9f}  error_all {r['error_all']:.6e}  viol {r['violation']:.1e}")


def part_scs(out: dict, ms, time_limit: float, epss=(1e-4, 1e-5, 1e-6), lookbacks=(10, 0)) -> None:
    res = out.setdefault("scs", {})
    for m in ms:
        p = mc.completion_problem(n=100, rank=5, n_observed=m, seed=0)
        for eps in epss:
            for lookback in lookbacks:
                key = f"m={m} eps={eps:g} lookback={lookback}"
                r = cvxpy_solve(p, "SCS", eps=eps, max_iters=100_000, acceleration_lookback=lookback,
                                time_limit_secs=time_limit)
                res[key] = r
                print(line("SCS " + key, r), flush=True)
                save(out)


def part_clarabel(out: dict, time_limit: float) -> None:
    res = out.setdefault("clarabel", {})
    cases = [(30, 4, 200), (30, 3, 600), (60, 3, 1500)]
    for n, rank, m in cases:
        p = mc.completion_problem(n=n, rank=rank, n_observed=m, seed=0)
        for solver, opts in (("CLARABEL", {"time_limit": time_limit}),
                             ("SCS", {"eps": 1e-6, "max_iters": 100_000, "time_limit_secs": time_limit})):
            key = f"n={n} rank={rank} m={m} {solver}"
            r = cvxpy_solve(p, solver, **opts)
            res[key] = r
            print(line(key, r), flush=True)
            save(out)


def part_sensing(out: dict, m: int, time_limit: float) -> None:
    res = out.setdefault("sensing", {})
    p = mc.sensing_problem(n=100, rank=5, n_measurements=m, seed=0)
    for eps in (1e-4, 1e-6):
        key = f"n=100 rank=5 m={m} SCS eps={eps:g}"
        r = cvxpy_solve(p, "SCS", eps=eps, max_iters=100_000, time_limit_secs=time_limit)
        res[key] = r
        print(line(key, r), flush=True)
        save(out)


OUT_PATH = None


def save(out: dict) -> None:
    if OUT_PATH:
        with open(OUT_PATH, "w") as f:
            json.dump(out, f, indent=1)


def main(argv=None) -> None:
    global OUT_PATH
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", action="append", choices=["scs", "clarabel", "sensing", "ours"])
    ap.add_argument("--ms", default="1000,2000,3500,5000")
    ap.add_argument("--scs-eps", default="1e-4,1e-5,1e-6", help="part scs: the eps values")
    ap.add_argument("--scs-lookback", default="10,0", help="part scs: Anderson acceleration lookbacks (0: off)")
    ap.add_argument("--sensing-m", type=int, default=2000)
    ap.add_argument("--time-limit", type=float, default=300.0, help="per cvxpy solve, seconds")
    ap.add_argument("--workers", default="1,2", help="volume run: chains solved at once (threads), one run per value")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    OUT_PATH = args.out
    ms = [int(x) for x in args.ms.split(",")]
    parts = args.part or ["scs", "clarabel", "sensing", "ours"]
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
                      f"torch {torch.__version__}, python {sys.version.split()[0]}"}
    print(out["machine"], flush=True)
    if "scs" in parts:
        part_scs(out, ms, args.time_limit, [float(x) for x in args.scs_eps.split(",")],
                 [int(x) for x in args.scs_lookback.split(",")])
    if "clarabel" in parts:
        part_clarabel(out, args.time_limit)
    if "sensing" in parts:
        part_sensing(out, args.sensing_m, args.time_limit)
    if "ours" in parts:
        part_ours(out, ms, [int(x) for x in args.workers.split(",")])
    save(out)


def ours(problem: mc.Problem, warm=None, **options) -> tuple[dict, tuple]:
    from mcreg_lib import nnm

    z, info = nnm.solve(problem, TOL, warm_start=warm, **options)
    r = measure(problem, z, info["seconds"], info["status"], iterations=info["iterations"], gap=info["gap"],
                objective_bounds=list(info["objective_bounds"]), rho=info["rho"])
    return r, (z, info["dual"], info["rho"])


def chain(rank: int, seed: int, ms, warm: bool) -> list[dict]:
    """One (rank, seed) along m, each solve warm-started from the previous one if ``warm``."""
    rows, start = [], None
    for m in ms:
        r, state = ours(mc.completion_problem(n=100, rank=rank, n_observed=m, seed=seed), start)
        start = state if warm else None
        rows.append({"rank": rank, "seed": seed, "m": m, **r})
    return rows


def part_ours(out: dict, ms, workers_list) -> None:
    torch.set_num_threads(1)
    res = out.setdefault("ours", {})
    scs = out.get("scs", {})
    print("mcreg_lib.nnm.solve (defaults) on the instances of part scs; agreement with SCS eps=1e-6 (lookback 10) "
          "where that ran in this invocation", flush=True)
    for m in ms:
        p = mc.completion_problem(n=100, rank=5, n_observed=m, seed=0)
        r, _ = ours(p)
        ref = scs.get(f"m={m} eps=1e-06 lookback=10")
        if ref and "objective" in ref:
            r["vs_scs"] = {"objective_rel": abs(r["objective"] - ref["objective"]) / ref["objective"],
                           "error_all_rel": abs(r["error_all"] - ref["error_all"]) / ref["error_all"],
                           "seconds_ratio": ref["seconds"] / r["seconds"]}
        res[f"m={m}"] = r
        extra = (f"  | vs SCS 1e-6: obj rel {r['vs_scs']['objective_rel']:.1e}, error_all rel "
                 f"{r['vs_scs']['error_all_rel']:.1e}, {r['vs_scs']['seconds_ratio']:.1f}x faster") if "vs_scs" in r else ""
        print(line(f"ours m={m}", r) + f"  gap {r['gap']:.1e}" + extra, flush=True)
        lo, hi = r["objective_bounds"]
        print(f"{'':44s} optimum in [{lo:.9f}, {hi:.9f}] (relative width {(hi - lo) / hi:.1e})", flush=True)

    # the book's volume: ranks 5 and 10, m = 1000..5000 by 500, 3 seeds
    full = list(range(1000, 5001, 500))
    jobs = [(rank, seed) for rank in (5, 10) for seed in (0, 1, 2)]
    for volume_workers, warm in [(w, x) for w in workers_list for x in (False, True)]:
        start = time.perf_counter()
        if volume_workers > 1:
            import concurrent.futures as cf

            with cf.ThreadPoolExecutor(volume_workers, initializer=torch.set_num_threads, initargs=(1,)) as ex:
                rows = [row for rows_ in ex.map(lambda j: chain(j[0], j[1], full, warm), jobs) for row in rows_]
        else:
            rows = [row for j in jobs for row in chain(j[0], j[1], full, warm)]
        wall = time.perf_counter() - start
        label = "warm-started along m" if warm else "cold"
        iters = [r["iterations"] for r in rows]
        bad = [f"rank {r['rank']} seed {r['seed']} m {r['m']}" for r in rows if r["status"] != "optimal"]
        worst = max(r["violation"] for r in rows)
        print(f"volume ({len(rows)} completion solves, {label}, {volume_workers} worker thread(s)): {wall:.1f} s wall, "
              f"sum of per-solve seconds {sum(r['seconds'] for r in rows):.1f}, iterations median "
              f"{int(np.median(iters))} max {max(iters)}, worst violation {worst:.1e}, not optimal: {bad or 'none'}",
              flush=True)
        res[f"volume {label} workers={volume_workers}"] = {"wall_seconds": wall, "rows": rows}
        save(out)
    ref = [scs[f"m={m} eps=1e-06 lookback=10"]["seconds"] for m in ms if f"m={m} eps=1e-06 lookback=10" in scs]
    if ref:
        per = float(np.mean(ref))
        print(f"SCS eps=1e-6 (lookback 10) projected for the same 54 solves: {54 * per:.0f} s "
              f"(mean {per:.1f} s over m = {ms}, one solve at a time)", flush=True)

    # sensing, n = 100, rank 5
    for m in (1000, 2000):
        p = mc.sensing_problem(n=100, rank=5, n_measurements=m, seed=0)
        r, _ = ours(p)
        res[f"sensing m={m}"] = r
        print(line(f"ours sensing n=100 rank=5 m={m}", r) + f"  gap {r['gap']:.1e}", flush=True)
    save(out)


if __name__ == "__main__":
    main()
