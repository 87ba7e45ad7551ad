"""The sweep engine's "done when" demonstration (issue 8): a 48-run sweep, killed halfway, resumed, then on Dask.

depth {2, 3, 4} x init_scale {1e-3, 1e-4} x n_observed {2000, 3000} x 4 seeds, 100x100, rank 5, normalized GD
(P3's optimizer) with a modest step budget. Steps:

1. run the sweep in a subprocess with a progress bar and a fresh cache; kill it (SIGKILL) once half the runs are cached;
2. resume it here: the finished runs are read from the cache (counted), only the rest are trained;
3. run the whole sweep again, uncached, through a Dask LocalCluster (2 worker processes on loopback) and compare
   every number with step 2.

    python bench/sweep_resume.py [--max-steps 1000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mcreg_lib as mc

ROOT = Path(__file__).resolve().parent.parent


def make_spec(max_steps: int) -> list:
    problems = [mc.completion_problem(n=100, rank=5, n_observed=m, seed=0) for m in (2000, 3000)]
    return mc.grid(problems, depth=[2, 3, 4], init_scale=[1e-3, 1e-4], seed=[0, 1, 2, 3], optimizer="normalized_gd",
                   lr=3e-3, max_steps=max_steps, stop_loss=1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--max-batch", type=int, default=8, help="runs per batch (smaller: finer-grained progress)")
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temporary folder)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="mcreg_sweep_resume_"))
    shutil.rmtree(cache, ignore_errors=True)
    spec = make_spec(args.max_steps)
    print(f"{len(spec)} runs, cache {cache}", flush=True)

    # 1. a sweep in a subprocess, with its progress bar, killed once half its runs are cached
    child = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import mcreg_lib as mc; "
             f"from bench.sweep_resume import make_spec; "
             f"mc.sweep(make_spec({args.max_steps}), cache={str(cache)!r}, progress=True, "
             f"max_batch={args.max_batch}, device={args.device!r})")
    env = dict(os.environ, MCREG_PROGRESS="1", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, cwd=ROOT)
    while len(list(cache.glob("*.run"))) < len(spec) // 2:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended before it was killed (exit code {proc.returncode})")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(cache.glob("*.run")))
    print(f"\n[1] killed the sweep after {time.perf_counter() - start:.1f} s: {finished} of {len(spec)} runs cached",
          flush=True)

    # 2. resume
    start = time.perf_counter()
    resumed = mc.sweep(spec, cache=cache, progress=True, max_batch=args.max_batch, device=args.device)
    print(f"[2] resumed in {time.perf_counter() - start:.1f} s: {resumed.cached} runs read from the cache, "
          f"{resumed.computed} trained (expected {finished} and {len(spec) - finished})", flush=True)
    assert resumed.cached == finished and resumed.computed == len(spec) - finished

    # 3. the same sweep through a Dask LocalCluster, no cache
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        remote = mc.sweep(spec, client=client, progress=True, max_batch=args.max_batch, device=args.device)
    same = all(torch.equal(a.matrix, b.matrix) and a.history.equals(b.history)
               for a, b in zip(resumed.runs, remote.runs))
    worst = max(float((a.matrix - b.matrix).abs().max()) for a, b in zip(resumed.runs, remote.runs))
    print(f"[3] Dask LocalCluster (2 workers): {time.perf_counter() - start:.1f} s, {remote.computed} runs; "
          f"identical matrices and histories to the resumed local sweep: {same} (max abs difference {worst:.1e})")

    t = resumed.table
    cols = ["depth", "init_scale", "problem_n_observed"]
    print(t.groupby(cols)[["steps", "train_loss", "error_unobserved", "effective_rank"]].median().to_string(
        float_format=lambda x: f"{x:.3g}"))
    if args.cache is None:
        shutil.rmtree(cache, ignore_errors=True)
    if not same:
        raise SystemExit("the Dask run differs from the local run")


if __name__ == "__main__":
    main()
