"""Per-matrix LAPACK work on the CPU, the batch split across worker threads.

One 100 x 100 SVD or eigendecomposition cannot use two cores (LAPACK at this size is bound by latency, and torch
loops over a batch one matrix at a time), but two of them can, one per core. ``per_matrix`` splits the batch in
``torch.get_num_threads()`` chunks and runs ``fn`` on each in a worker thread with one BLAS thread; the workers
write straight into the outputs, so the caller's own OpenMP threads stay idle meanwhile (they would otherwise
spin-wait for milliseconds after each parallel operation and take a core from the workers). A matrix's result does
not depend on the batch it came in nor on the caller's thread count (a batch of one also runs on a worker). On
other devices ``fn`` runs once on the whole batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections.abc import Callable

import torch

_POOL: cf.ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _one_thread() -> None:
    torch.set_num_threads(1)  # in a worker thread this sets its own OpenMP/MKL thread count, not the caller's


def _reset() -> None:
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


os.register_at_fork(after_in_child=_reset)  # a forked child must not inherit a pool without its threads


def _pool(size: int) -> cf.ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < size:
            _POOL_SIZE = size
            _POOL = cf.ThreadPoolExecutor(max_workers=size, initializer=_one_thread, thread_name_prefix="mcreg")
        return _POOL


def per_matrix(fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``fn(x)`` for a batch x (B, ...), where ``fn`` maps each matrix independently and returns a tuple of tensors
    with leading dimension B. On the CPU the batch is split across worker threads (module docstring)."""
    if x.device.type != "cpu":
        return fn(x)
    x = x.contiguous()
    batch = x.shape[0]
    threads = max(1, torch.get_num_threads())
    k = max(1, min(threads, batch))
    bounds = [(i * batch // k, (i + 1) * batch // k) for i in range(k)]
    outs: list[torch.Tensor] = []
    ready = threading.Event()

    def work(index: int) -> None:
        lo, hi = bounds[index]
        try:
            parts = fn(x[lo:hi])
            if index == 0:  # the first chunk's results give the outputs' dtypes and shapes
                outs.extend(torch.empty((batch, *p.shape[1:]), dtype=p.dtype) for p in parts)
        finally:
            if index == 0:
                ready.set()
        ready.wait()
        for out, part in zip(outs, parts):
            out[lo:hi] = part

    for _ in _pool(threads).map(work, range(k)):
        pass
    return tuple(outs)
