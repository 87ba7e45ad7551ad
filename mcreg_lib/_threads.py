"""Per-matrix LAPACK work on the CPU, the batch split across worker threads.

One 100 x 100 SVD or eigendecomposition cannot use two cores (LAPACK at this size is bound by latency, and torch
loops over a batch one matrix at a time), but two of them can, one per core. ``per_matrix`` splits the batch in
``torch.get_num_threads()`` chunks and runs ``fn`` on each in a worker thread with one BLAS thread. The workers
write straight into the outputs: a parallel op in the caller (a ``torch.cat``) would leave the caller's OpenMP
threads spin-waiting for several milliseconds, on the cores the workers need next. A matrix's result depends
neither on the batch it came in nor on the caller's thread count (a batch of one runs on a worker too, unless
the caller is on one thread already). On other devices ``fn`` runs once on the whole batch.

A completion training batch goes one level further: ``mcreg_lib.training`` splits the batch itself, one sub-batch
per thread, so that the products and updates run on every core as well (``training._chunks``); inside each
sub-batch this module's functions then run inline on that thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import torch

_POOL: cf.ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def one_thread() -> None:
    torch.set_num_threads(1)  # in a worker thread this sets its own OpenMP/MKL thread count, not the caller's


def _reset() -> None:
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


os.register_at_fork(after_in_child=_reset)  # a forked child must not inherit a pool without its threads


def _pool(size: int) -> cf.ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)  # its threads finish what they hold, then exit
            _POOL_SIZE = size
            _POOL = cf.ThreadPoolExecutor(max_workers=size, initializer=one_thread, thread_name_prefix="mcreg")
        return _POOL


_LOCAL = threading.local()


@contextlib.contextmanager
def caller_on_one_thread() -> Iterator[None]:
    """Inside, the calling thread runs its own torch ops on one thread, while ``per_matrix`` still splits batches
    across as many workers as the caller had threads. For loops dominated by per-matrix LAPACK work (a penalized
    training step): the caller's multi-threaded ops would leave an OpenMP thread spin-waiting on a core the
    workers need, which costs more than the parallel ops gain."""
    if getattr(_LOCAL, "threads", None) is not None:  # already inside
        yield
        return
    threads = torch.get_num_threads()
    _LOCAL.threads = threads
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _LOCAL.threads = None


def cpu_workers() -> int:
    """How many cores this thread's work may use: its torch thread count, or the count it had before
    :func:`caller_on_one_thread`."""
    saved = getattr(_LOCAL, "threads", None)
    return max(1, saved if saved is not None else torch.get_num_threads())


def per_matrix(fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``fn(x)`` for a batch x (B, ...), where ``fn`` maps each matrix independently and returns a tuple of tensors
    with leading dimension B. On the CPU the batch is split across worker threads (module docstring)."""
    if x.device.type != "cpu":
        return fn(x)
    x = x.contiguous()
    batch = x.shape[0]
    threads = cpu_workers()
    k = max(1, min(threads, batch))
    if k == 1 and torch.get_num_threads() == 1:  # one chunk, and this thread already computes like a worker
        return fn(x)
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
