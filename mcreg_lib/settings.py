"""Where runs go and what they reuse, chosen by whoever runs the code (the book's build), not by the chapters.

Environment variables (the book's build sets them for each chapter's kernel; every one is optional):

* ``MCREG_CACHE``: a folder; when set, ``mc.sweep``, ``mc.fit`` and the library's cached computations
  (:func:`mcreg_lib.cache.memoize`) read finished results from it and write new ones to it.
* ``MCREG_RUN_ON``: ``local`` (default: this process), ``processes:N`` (a pool of N local processes), ``dask:ADDRESS``
  (a Dask scheduler, e.g. ``dask:tcp://10.0.0.5:8786``) or ``cuda`` (this process, on the CUDA device).
* ``MCREG_DEVICE``: ``cpu`` or ``cuda``; default CUDA when present (``MCREG_RUN_ON=cuda`` implies it).
* ``MCREG_AUDIT``: how many cached results each chapter re-computes and compares (default 0 outside the build;
  the build sets it, see :mod:`mcreg_lib.cache`), with ``MCREG_AUDIT_SEED`` choosing which and
  ``MCREG_AUDIT_MAX_SECONDS`` (default 300) the longest recorded training time of a run it may re-train.
* ``MCREG_EVENTS``: a file to which the cache appends one JSON line per result trained, read or audited (the
  build's provenance page counts them), and ``MCREG_PROGRESS_FILE``: a file the sweep's progress is written to.
* ``MCREG_PROGRESS``: ``0`` turns progress bars off.
* ``MCREG_CHECKPOINT_SECONDS``: how often a sweep with a cache saves the state of its unfinished runs, so that a
  killed build resumes them from there (default 300; 0 saves at every step, for tests).

:func:`check` validates all of them before any work starts (an unreachable scheduler, a missing CUDA device or a
cache folder that cannot be written is a clear error naming the variable).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RUN_ON_FORMS = "'local', 'processes:N' (N >= 1), 'dask:ADDRESS' or 'cuda'"


@dataclass(frozen=True)
class RunOn:
    """Where a sweep's batches train: ``kind`` is local, processes or dask; ``processes`` and ``address`` as given."""

    kind: str = "local"
    processes: int | None = None
    address: str | None = None
    device: str | None = None

    def describe(self) -> str:
        if self.kind == "processes":
            return f"a pool of {self.processes} local processes"
        if self.kind == "dask":
            return f"the Dask cluster at {self.address}"
        return "this process"


def run_on(value: str | None = None) -> RunOn:
    """Parse ``MCREG_RUN_ON`` (or ``value``); a ValueError names the variable and the allowed forms."""
    raw = os.environ.get("MCREG_RUN_ON", "local") if value is None else value
    text = raw.strip()
    if text in ("", "local"):
        return RunOn()
    if text == "cuda":
        return RunOn(device="cuda")
    kind, _, rest = text.partition(":")
    if kind == "processes" and rest.isdigit() and int(rest) >= 1:
        return RunOn("processes", processes=int(rest))
    if kind == "dask" and rest:
        return RunOn("dask", address=rest)
    raise ValueError(f"MCREG_RUN_ON={raw!r} is not allowed: it must be {RUN_ON_FORMS}")


def device() -> torch.device:
    """``MCREG_DEVICE``, else ``cuda`` when ``MCREG_RUN_ON=cuda`` or a CUDA device is present, else ``cpu``."""
    name = os.environ.get("MCREG_DEVICE") or run_on().device
    if name:
        if name not in ("cpu", "cuda"):
            raise ValueError(f"MCREG_DEVICE={name!r} is not allowed: it must be 'cpu' or 'cuda'")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cache_dir() -> Path | None:
    """``MCREG_CACHE`` as a path, or None (no cache)."""
    value = os.environ.get("MCREG_CACHE")
    return Path(value) if value else None


def audit_budget() -> int:
    value = os.environ.get("MCREG_AUDIT", "0")
    if not value.isdigit():
        raise ValueError(f"MCREG_AUDIT={value!r} is not allowed: it must be a whole number >= 0")
    return int(value)


def audit_max_seconds() -> float:
    return _seconds("MCREG_AUDIT_MAX_SECONDS", "300")


def audit_seed() -> str:
    return os.environ.get("MCREG_AUDIT_SEED", "0")


def progress_default() -> bool:
    return os.environ.get("MCREG_PROGRESS", "1") not in ("0", "false", "False", "")


def _seconds(name: str, default: str) -> float:
    value = os.environ.get(name, default)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{name}={value!r} is not allowed: it must be a number of seconds >= 0")
    return seconds


def checkpoint_seconds() -> float:
    return _seconds("MCREG_CHECKPOINT_SECONDS", "300")


def _plain(x: Any) -> Any:
    """numpy and torch scalars as Python numbers, anything else as its text (for JSON)."""
    return x.item() if hasattr(x, "item") else str(x)


def log_event(event: str, **fields: Any) -> None:
    """Append one JSON line to ``MCREG_EVENTS`` (if set): what the cache did, for the provenance page."""
    path = os.environ.get("MCREG_EVENTS")
    if not path:
        return
    line = json.dumps({"event": event, "time": time.time(), **fields}, default=_plain)
    with open(path, "a") as f:  # one short write per line: lines from several processes do not interleave
        f.write(line + "\n")


def check(connect_timeout: float = 5.0) -> dict[str, str]:
    """Validate every setting before work starts; returns a description (for the provenance page).

    Raises ValueError / ConnectionError / PermissionError naming the variable: an unknown MCREG_RUN_ON form, a
    missing CUDA device, an unreachable Dask scheduler, or a cache folder that cannot be written.
    """
    where = run_on()
    dev = device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("MCREG_DEVICE/MCREG_RUN_ON ask for 'cuda', but torch finds no CUDA device here "
                         f"(torch {torch.__version__}); use MCREG_RUN_ON=local")
    if where.kind == "dask":
        from .sweeps import _connect

        client, own = _connect(where.address, connect_timeout)
        if own:
            client.close()
    checkpoint_seconds()
    audit_max_seconds()
    folder = cache_dir()
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise PermissionError(f"MCREG_CACHE={str(folder)!r} cannot be written ({exc.strerror or exc}); give a "
                                  "writable folder") from None
    return {"run_on": where.describe(), "device": str(dev), "cache": str(folder) if folder else "none",
            "device_name": torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"}


# A sweep's bar counts each run's whole step budget, and most runs stop sooner (at their loss or plateau rule), so
# the time left assumes the budgets; the bars say so. Its rate is that of the run-steps taken (sweep_bar).
SWEEP_BAR_FORMAT = ("{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {remaining} left if every run takes its whole "
                    "step budget, {rate_fmt}{postfix}]")


class WorkRate:
    """The rate of the run-steps actually taken over the last ``window`` seconds. A sweep's count of run-steps also
    credits a stopped run's unused budget, which is no work: measured on that count, a moment in which runs stop
    looks many times faster than the next, and the time left swings with it."""

    def __init__(self, window: float = 60.0) -> None:
        self.window, self.samples = window, []  # (time, steps taken), oldest first

    def add(self, taken: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.samples.append((now, taken))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.pop(0)

    def rate(self) -> float | None:
        """Run-steps taken a second over the window, or None before two samples a second apart."""
        if len(self.samples) < 2 or self.samples[-1][0] - self.samples[0][0] < 1.0:
            return None
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        return (s1 - s0) / (t1 - t0)


def sweep_bar(auto: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar (``tqdm.auto`` or plain ``tqdm``) in :data:`SWEEP_BAR_FORMAT` whose rate, and so its time left, is
    that of its ``work`` (:class:`WorkRate`: feed it the run-steps taken) once it has one."""
    if auto:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    class SweepBar(tqdm):  # type: ignore[misc, valid-type]
        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            rate = self.work.rate() if hasattr(self, "work") else None
            if rate is not None and rate > 0:
                d["rate"] = rate
            return d

    bar = SweepBar(bar_format=SWEEP_BAR_FORMAT, **kwargs)
    bar.work = WorkRate()
    return bar


def write_progress(path: str, **fields: Any) -> None:
    """Replace the progress file with the current counts (atomic: a reader never sees half a line)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"time": time.time(), **fields}, f, default=_plain)
    os.replace(tmp, path)


_COMPUTING: list[str] = []  # the memoized computations running now, outermost first


@contextlib.contextmanager
def computing(what: str) -> Iterator[None]:
    """While the block runs, ``$MCREG_PROGRESS_FILE`` (when set) says that ``what`` is being computed, so the
    book's build can name it between sweeps (a sweep started inside writes its own counts over it)."""
    path = os.environ.get("MCREG_PROGRESS_FILE")
    _COMPUTING.append(what)
    if path:
        write_progress(path, computing=what)
    try:
        yield
    finally:
        _COMPUTING.pop()
        if path:
            write_progress(path, **({"computing": _COMPUTING[-1]} if _COMPUTING else {}))


def read_progress(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
