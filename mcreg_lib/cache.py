"""A cache on disk: each finished run, and each result of a cached computation, stored under a hash of everything
that determines its numbers.

    cache = RunCache(".mcreg_cache")
    key = run_key(problem, config, device="cpu")
    run = cache.get(key)          # None if absent, or if the entry is corrupt or partial (then it is deleted)
    cache.put(key, run)           # written to a temporary file, then renamed: a reader never sees half an entry

    @memoize                      # any other computation: baselines, the small-matrix trainer, chapter loops
    def nuclear_norm_minimization(problem, tol=1e-3): ...

A run's key is the SHA-256 of its full configuration, ``problem.fingerprint()``, the device type, the torch version
and :data:`RESULTS_VERSION` (and :data:`SENSING_VERSION` for a sensing run); a memoized call's key hashes the
function's name, its arguments (problems by fingerprint, tensors and arrays by their bytes) and the same versions.
Each entry is one file: a header with the SHA-256 of its payload, then the payload (``torch.save`` of tensors and
plain values, DataFrames as columns, read back with ``weights_only=True``), so a truncated or damaged entry fails
its checksum and is recomputed, never read.

Which cache is used is the caller's choice (``cache=`` of ``mc.sweep``) or the build's (``$MCREG_CACHE``,
:mod:`mcreg_lib.settings`). **Audits**: with ``$MCREG_AUDIT = k > 0`` (the book's build sets it), up to k results
read from the cache in this process are computed again and compared with the stored ones (which ones is seeded by
``$MCREG_AUDIT_SEED``); a mismatch raises :class:`StaleCacheError` with the configuration and the difference, so a
result the library no longer produces cannot hide in the cache. Every result trained, read or audited is logged to
``$MCREG_EVENTS`` when set (the book's provenance page counts them).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import io
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import settings
from .problems import Problem
from .training import Run, RunConfig

# Bump when a change to the library changes the numbers a run produces (the training loop, inits, metrics).
RESULTS_VERSION = "5"
# The same for sensing runs only (their keys alone carry it): "3" since the shared operator's products are taken
# in fixed shapes (mcreg_lib.objective.shared_operator), so a run's numbers no longer depend on its batch; "4" since
# those shapes are chunks of 48 runs (objective.RUN_CHUNK), not 16. Unchanged since, though two things moved on
# 2026-12-03: the last chunk may be narrower where objective.narrow_chunks_agree finds the products' columns equal bit
# for bit (so the matrices and every metric but the loss are unchanged), and a run's loss is now summed along its own
# residual row, where a batch of up to 48 runs used to sum it in an order that depended on the batch's size. The
# stored losses differ from today's by about 2e-7 relative (a run trained alone always had today's; the audits'
# AUDIT_RTOL covers it), so the stored runs stand; a run trained now has the same loss alone and in any batch.
SENSING_VERSION = "4"
DEFAULT_DIR = ".mcreg_cache"
MAGIC = b"MCREG-RUN-1\n"
AUDIT_RTOL = 1e-5  # an audited result must match the stored one to this relative tolerance (bitwise in practice)


class StaleCacheError(RuntimeError):
    """A result read from the cache differs from the one the library computes now."""


def default_dir() -> Path:
    """``$MCREG_CACHE`` if set, else ``.mcreg_cache`` in the working directory (gitignored)."""
    return Path(os.environ.get("MCREG_CACHE", DEFAULT_DIR))


def run_key(problem: Problem, config: RunConfig, device: str | torch.device = "cpu",
            fingerprint: str | None = None) -> str:
    """The hex SHA-256 naming a run: config (validated), problem fingerprint, device type, versions."""
    identity = {
        "results_version": RESULTS_VERSION,
        "torch": torch.__version__,
        "device": torch.device(device).type,
        "config": config.validated(problem.shape).identity(),
        "problem": fingerprint or problem.fingerprint(),
    }
    if problem.kind == "sensing":
        identity["sensing_version"] = SENSING_VERSION
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()


# --- encoding: plain values, tensors, arrays, DataFrames and the library's dataclasses, loadable weights_only ------

def encode(x: Any) -> Any:
    """A structure ``torch.load(..., weights_only=True)`` can read back (see :func:`decode`)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(x, copy=True))} if x.dtype != object else \
            {"__objarray__": [encode(i) for i in x.tolist()]}
    if isinstance(x, pd.DataFrame):
        return {"__frame__": [[str(c), encode(_column(x[c]))] for c in x.columns]}
    if isinstance(x, pd.Series):
        return {"__series__": encode(_column(x)), "name": encode(x.name)}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        cls = type(x)
        if not cls.__module__.startswith("mcreg_lib."):
            raise TypeError(f"cannot cache a {cls.__module__}.{cls.__qualname__} (only mcreg_lib's dataclasses)")
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"__tuple__": [encode(i) for i in x]}
    if isinstance(x, list):
        return [encode(i) for i in x]
    raise TypeError(f"cannot cache a value of type {type(x).__name__}")


def _column(s: pd.Series) -> Any:
    values = s.to_numpy()
    if values.dtype.kind in "biuf":
        return values
    return np.array([None if (isinstance(v, float) and math.isnan(v)) else v for v in values.tolist()],
                    dtype=object)


def decode(x: Any) -> Any:
    if isinstance(x, list):
        return [decode(i) for i in x]
    if not isinstance(x, dict):
        return x
    if "__ndarray__" in x:
        return x["__ndarray__"].numpy()
    if "__objarray__" in x:
        return np.array(decode(x["__objarray__"]), dtype=object)
    if "__frame__" in x:
        return pd.DataFrame({name: decode(col) for name, col in x["__frame__"]})
    if "__series__" in x:
        return pd.Series(decode(x["__series__"]), name=decode(x["name"]))
    if "__tuple__" in x:
        return tuple(decode(i) for i in x["__tuple__"])
    if "__dict__" in x:
        return {decode(k): decode(v) for k, v in x["__dict__"]}
    if "__dataclass__" in x:
        module, _, name = x["__dataclass__"].partition(":")
        if not module.startswith("mcreg_lib."):
            raise TypeError(f"refusing to build {module}.{name} from the cache")
        cls = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        fields = {k: decode(v) for k, v in x["fields"].items()}
        if cls is RunConfig:
            fields["optimizer_options"] = tuple(sorted(fields["optimizer_options"]))
            fields["penalty_options"] = tuple(sorted(fields["penalty_options"]))
        return cls(**fields)
    return {k: decode(v) for k, v in x.items()}


# --- the store -----------------------------------------------------------------------------------------------------

def _encode_run(run: Run) -> bytes:
    hist = {k: torch.tensor(run.history[k].to_numpy(copy=True)) for k in run.history.columns}
    payload = {
        "config": run.config.as_dict(),
        "problem_info": dict(run.problem_info),
        "matrix": run.matrix,
        "layers": list(run.layers),
        "history_columns": list(run.history.columns),
        "history": hist,
        "summary": dict(run.summary),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _decode_run(raw: bytes) -> Run:
    d = torch.load(io.BytesIO(raw), weights_only=True)
    cfg = dict(d["config"])
    cfg["optimizer_options"] = tuple(sorted(cfg["optimizer_options"].items()))
    cfg["penalty_options"] = tuple(sorted(cfg["penalty_options"].items()))
    history = pd.DataFrame({k: d["history"][k].numpy() for k in d["history_columns"]})
    return Run(RunConfig(**cfg), d["problem_info"], d["matrix"], d["layers"], history, d["summary"])


def _encode_value(value: Any) -> bytes:
    buf = io.BytesIO()
    torch.save({"value": encode(value)}, buf)
    return buf.getvalue()


def _decode_value(raw: bytes) -> Any:
    return decode(torch.load(io.BytesIO(raw), weights_only=True)["value"])


class RunCache:
    """A folder of finished runs (``<key>.run``) and cached values (``<key>.val``), one file each; safe against kills
    and concurrent writers (two builds may share a folder)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_dir()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"cache={str(self.path)!r} is not allowed: it is a file; give a folder (or True for "
                             f"{DEFAULT_DIR!r})")
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, key: str, suffix: str = ".run") -> Path:
        return self.path / f"{key}{suffix}"

    def __contains__(self, key: str) -> bool:
        return self.file(key).exists()

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.run"))

    def _read(self, path: Path, decoder: Callable[[bytes], Any]) -> tuple[bool, Any]:
        """(found, value); a corrupt or partial entry is deleted (with a warning) and reported as not found."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return False, None
        head = len(MAGIC) + 65
        ok = raw.startswith(MAGIC) and len(raw) > head and raw[head - 1:head] == b"\n"
        if ok:
            digest, payload = raw[len(MAGIC):head - 1].decode("ascii", "replace"), raw[head:]
            ok = hashlib.sha256(payload).hexdigest() == digest
        if ok:
            try:
                return True, decoder(payload)
            except Exception:  # noqa: BLE001 - a payload that passed its checksum but does not load: recompute
                ok = False
        warnings.warn(f"cache entry {path} is corrupt or partial (checksum mismatch); recomputing it", stacklevel=3)
        path.unlink(missing_ok=True)
        return False, None

    def _write(self, path: Path, payload: bytes) -> Path:
        data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get(self, key: str) -> Run | None:
        """The stored run, or None when absent; a corrupt or partial entry is deleted (with a warning)."""
        return self._read(self.file(key), _decode_run)[1]

    def put(self, key: str, run: Run) -> Path:
        """Store ``run`` atomically: write a temporary file in the same folder, fsync it, rename it into place."""
        return self._write(self.file(key), _encode_run(run))

    def get_value(self, key: str) -> tuple[bool, Any]:
        """(found, value) of a cached computation; a corrupt entry is deleted and reported as not found."""
        return self._read(self.file(key, ".val"), _decode_value)

    def put_value(self, key: str, value: Any) -> Path:
        return self._write(self.file(key, ".val"), _encode_value(value))

    # --- checkpoints: the state of a run not finished yet (``<key>.ckpt``), deleted once the run is stored -------
    def get_checkpoint(self, key: str) -> dict[str, Any] | None:
        return self._read(self.file(key, ".ckpt"), _decode_value)[1]

    def put_checkpoint(self, key: str, state: dict[str, Any]) -> Path:
        return self._write(self.file(key, ".ckpt"), _encode_value(state))

    def drop_checkpoint(self, key: str) -> None:
        self.file(key, ".ckpt").unlink(missing_ok=True)


class Checkpoints:
    """The checkpoints of the runs of one ``train`` call, by their index in it (``keys[i]`` names run i): what
    :func:`mcreg_lib.training.train` saves every ``$MCREG_CHECKPOINT_SECONDS`` and resumes from."""

    def __init__(self, store: RunCache, keys: Sequence[str]) -> None:
        self.store, self.keys = store, list(keys)

    def load(self, i: int) -> dict[str, Any] | None:
        return self.store.get_checkpoint(self.keys[i])

    def save(self, i: int, state: dict[str, Any]) -> None:
        self.store.put_checkpoint(self.keys[i], state)

    def drop(self, i: int) -> None:
        self.store.drop_checkpoint(self.keys[i])


def as_cache(cache: Any) -> RunCache | None:
    """None/False: no cache; True: the default folder; a path or a RunCache: that cache; ``"auto"``: the build's
    (``$MCREG_CACHE`` when set, else none)."""
    if isinstance(cache, str) and cache == "auto":
        folder = settings.cache_dir()
        return RunCache(folder) if folder is not None else None
    if cache is None or cache is False:
        return None
    if cache is True:
        return RunCache()
    if isinstance(cache, RunCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return RunCache(cache)
    raise ValueError(f"cache={cache!r} is not allowed: give None, True (the folder {DEFAULT_DIR!r} or $MCREG_CACHE), "
                     "'auto' (the build's $MCREG_CACHE, if set), a folder path or a RunCache")


# --- audits: re-compute a few cached results and compare -------------------------------------------------------------

class _Auditor:
    """Up to ``$MCREG_AUDIT`` audits in this process: the first result read (so a chapter that reads anything audits
    something), then reads chosen by ``$MCREG_AUDIT_SEED`` (one in three is a candidate, so the audits spread over
    the chapter rather than its first reads only). A run whose recorded training time exceeds
    ``$MCREG_AUDIT_MAX_SECONDS`` (default 300) is not a candidate: re-trained alone, a run of P3's sensing at
    n = 100 costs about what its whole batch did (up to hours on two cores), so the audits go to runs that can be
    checked in minutes."""

    def __init__(self) -> None:
        self.used = 0

    def pick(self, key: str, seconds: float | None = None) -> bool:
        if self.used >= settings.audit_budget():
            return False
        if seconds is not None and seconds > settings.audit_max_seconds():
            return False
        if self.used and int(hashlib.sha256((settings.audit_seed() + key).encode()).hexdigest()[:8], 16) % 3:
            return False
        self.used += 1
        return True


AUDITOR = _Auditor()


def difference(stored: Any, fresh: Any) -> float:
    """The largest relative difference between two results (0 when equal; inf when their structure differs)."""
    a, b = encode(stored), encode(fresh)
    return _diff(a, b)


def _diff(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return math.inf
        if a.dtype == torch.bool or not (a.is_floating_point() or a.is_complex()):
            return 0.0 if torch.equal(a, b) else math.inf
        a, b = a.double(), b.double()
        both_nan = torch.isnan(a) & torch.isnan(b)
        same = (a == b) | both_nan
        if bool(same.all()):
            return 0.0
        scale = torch.maximum(a.abs(), b.abs()).clamp_min(1e-300)
        rel = torch.where(same, torch.zeros_like(a), (a - b).abs() / scale)
        return float(torch.nan_to_num(rel, nan=math.inf).max())
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return 0.0
        return abs(a - b) / max(abs(a), abs(b), 1e-300)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((_diff(a[k], b[k]) for k in a if k not in ("seconds", "time")), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        pairs = [(x, y) for x, y in zip(a, b) if not (isinstance(x, list) and len(x) == 2 and x[0] == "seconds")]
        return max((_diff(x, y) for x, y in pairs), default=0.0)
    return 0.0 if a == b else math.inf


def run_difference(stored: Run, fresh: Run) -> float:
    """How far a re-trained run is from the stored one: the largest relative difference of the end-to-end matrix and
    of the summary's numbers (inf if the stop reason or the number of steps differs)."""
    s, f = stored.summary, fresh.summary
    if s.get("stop_reason") != f.get("stop_reason") or s.get("steps") != f.get("steps"):
        return math.inf
    keys = [k for k in s if k not in ("seconds", "batch_size", "device") and isinstance(s[k], float)]
    return max(difference(stored.matrix, fresh.matrix), difference({k: s[k] for k in keys}, {k: f[k] for k in keys}))


def record_audit(kind: str, key: str, what: str, diff: float) -> None:
    """Log an audit; raise StaleCacheError when the fresh result does not match the stored one."""
    ok = diff <= AUDIT_RTOL
    settings.log_event("audited", kind=kind, key=key, what=what, max_rel_diff=diff, ok=ok)
    if not ok:
        raise StaleCacheError(f"the cached result of {what} (cache key {key[:16]}...) differs from what the library "
                              f"computes now: largest relative difference {diff:.3g} (allowed {AUDIT_RTOL:g}). The "
                              "cache holds stale results: bump mcreg_lib.cache.RESULTS_VERSION if the numbers were "
                              "meant to change, or rebuild from scratch (make book FRESH=1)")


# --- memoized computations -----------------------------------------------------------------------------------------

def canonical(x: Any) -> Any:
    """A JSON-able identity of an argument: problems by fingerprint, tensors and arrays by their bytes."""
    if isinstance(x, Problem):
        return {"problem": x.fingerprint()}
    if isinstance(x, RunConfig):
        return {"config": x.validated().identity()}
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return {"tensor": hashlib.sha256(t.numpy().tobytes()).hexdigest(), "dtype": str(t.dtype),
                "shape": list(t.shape)}
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return {"objects": canonical(x.tolist())}
        return {"tensor": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), "dtype": str(x.dtype),
                "shape": list(x.shape)}
    if isinstance(x, pd.DataFrame):
        return {"frame": [[str(c), canonical(_column(x[c]))] for c in x.columns]}
    if isinstance(x, np.generic):
        return x.item()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {type(x).__qualname__: {f.name: canonical(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, dict):
        return {str(k): canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [canonical(i) for i in x]
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return repr(x)
    raise TypeError(f"cannot key a cached call on an argument of type {type(x).__name__}")


def call_key(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    identity = {"results_version": RESULTS_VERSION, "torch": torch.__version__, "device": settings.device().type,
                "function": name, "args": canonical(list(args)), "kwargs": canonical(kwargs)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def memoize(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Cache ``fn``'s results in the build's cache (``$MCREG_CACHE``; no cache when it is not set).

    The key is the function's qualified name and its arguments (:func:`canonical`); the result must be made of plain
    values, tensors, arrays, DataFrames and mcreg_lib dataclasses. ``fn(..., cache=False)`` bypasses the cache.
    """
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, cache: Any = "auto", **kwargs: Any) -> Any:
        store = as_cache(cache)
        if store is None:
            return fn(*args, **kwargs)
        key = call_key(name, args, kwargs)
        found, value = store.get_value(key)
        if found:
            settings.log_event("read", kind="value", key=key, what=name)
            if AUDITOR.pick(key):
                record_audit("value", key, name, difference(value, fn(*args, **kwargs)))
            return value
        start = time.perf_counter()
        with settings.computing(name.removeprefix("mcreg_lib.").removeprefix("chapters.")):
            value = fn(*args, **kwargs)
        store.put_value(key, value)
        settings.log_event("trained", kind="value", key=key, what=name, seconds=time.perf_counter() - start)
        return value

    wrapper.uncached = fn  # type: ignore[attr-defined]
    return wrapper
