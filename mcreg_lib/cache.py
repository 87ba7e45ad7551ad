"""A run cache on disk: each finished run stored under a hash of everything that determines its numbers.

    cache = RunCache(".mcreg_cache")
    key = run_key(problem, config, device="cpu")
    run = cache.get(key)          # None if absent, or if the entry is corrupt or partial (then it is deleted)
    cache.put(key, run)           # written to a temporary file, then renamed: a reader never sees half an entry

The key is the SHA-256 of the run's full configuration, ``problem.fingerprint()``, the device type, the torch version
and :data:`RESULTS_VERSION`. Each entry is one file: a header with the SHA-256 of its payload, then the payload
(``torch.save`` of tensors and plain values, read back with ``weights_only=True``), so a truncated or damaged entry
fails its checksum and is recomputed, never silently read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .problems import Problem
from .training import Run, RunConfig

# Bump when a change to the library changes the numbers a run produces (the training loop, inits, metrics).
RESULTS_VERSION = "2"
DEFAULT_DIR = ".mcreg_cache"
MAGIC = b"MCREG-RUN-1\n"


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
        "config": config.validated(problem.shape).as_dict(),
        "problem": fingerprint or problem.fingerprint(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()


def _encode(run: Run) -> bytes:
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


def _decode(raw: bytes) -> Run:
    d = torch.load(io.BytesIO(raw), weights_only=True)
    cfg = dict(d["config"])
    cfg["optimizer_options"] = tuple(sorted(cfg["optimizer_options"].items()))
    cfg["penalty_options"] = tuple(sorted(cfg["penalty_options"].items()))
    history = pd.DataFrame({k: d["history"][k].numpy() for k in d["history_columns"]})
    return Run(RunConfig(**cfg), d["problem_info"], d["matrix"], d["layers"], history, d["summary"])


class RunCache:
    """A folder of finished runs, one file ``<key>.run`` each; safe against kills and concurrent writers."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_dir()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"cache={str(self.path)!r} is not allowed: it is a file; give a folder (or True for "
                             f"{DEFAULT_DIR!r})")
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, key: str) -> Path:
        return self.path / f"{key}.run"

    def __contains__(self, key: str) -> bool:
        return self.file(key).exists()

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.run"))

    def get(self, key: str) -> Run | None:
        """The stored run, or None when absent; a corrupt or partial entry is deleted (with a warning)."""
        path = self.file(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        head = len(MAGIC) + 65
        ok = raw.startswith(MAGIC) and len(raw) > head and raw[head - 1:head] == b"\n"
        if ok:
            digest, payload = raw[len(MAGIC):head - 1].decode("ascii", "replace"), raw[head:]
            ok = hashlib.sha256(payload).hexdigest() == digest
        if ok:
            try:
                return _decode(payload)
            except Exception:  # noqa: BLE001 - a payload that passed its checksum but does not load: recompute
                ok = False
        warnings.warn(f"cache entry {path} is corrupt or partial (checksum mismatch); recomputing it", stacklevel=2)
        path.unlink(missing_ok=True)
        return None

    def put(self, key: str, run: Run) -> Path:
        """Store ``run`` atomically: write a temporary file in the same folder, fsync it, rename it into place."""
        payload = _encode(run)
        data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.file(key)


def as_cache(cache: Any) -> RunCache | None:
    """None/False: no cache; True: the default folder; a path or a RunCache: that cache."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return RunCache()
    if isinstance(cache, RunCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return RunCache(cache)
    raise ValueError(f"cache={cache!r} is not allowed: give None, True (the folder {DEFAULT_DIR!r} or $MCREG_CACHE), "
                     "a folder path or a RunCache")
