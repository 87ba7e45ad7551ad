"""Low-rank recovery problems: matrix completion and matrix sensing.

Ground truth follows the convention of the released code of Arora et al. (2019) and Zhao (2022): ``W* = U V^T`` with
``U, V ~ N(0, 1)``, rescaled so that ``||W*||_F = sqrt(n_rows * n_cols)`` (``= n`` for a square matrix), i.e. an
RMS entry of 1. Everything is stored in float64 on the CPU; :func:`mcreg_lib.fit` casts to the run's dtype and device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _validate as v

KINDS = ("completion", "sensing")


@dataclass(frozen=True, eq=False)
class Problem:
    """A recovery problem.

    kind: "completion" (observe entries ``W[rows[i], cols[i]] = values[i]``) or "sensing"
        (observe ``values[i] = <measurements[i], W>``).
    shape: (n_rows, n_cols) of the unknown matrix.
    rows, cols: int64 tensors (m,) of observed entries (completion only).
    values: float64 tensor (m,) of observations.
    measurements: float64 tensor (m, n_rows, n_cols) (sensing only).
    target: the full ground-truth matrix when known (synthetic problems), else None.
    test_rows, test_cols, test_values: held-out entries (real data), else None.
    info: how the problem was made (parameters, seed); recorded with every result.
    """

    kind: str
    shape: tuple[int, int]
    values: torch.Tensor
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None
    measurements: torch.Tensor | None = None
    target: torch.Tensor | None = None
    test_rows: torch.Tensor | None = None
    test_cols: torch.Tensor | None = None
    test_values: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_observed(self) -> int:
        return int(self.values.shape[0])

    def mask(self) -> torch.Tensor:
        """float64 (n_rows, n_cols): 1 on observed entries (completion only)."""
        if self.kind != "completion":
            raise ValueError(f"mask() is defined for completion problems, not kind={self.kind!r}")
        m = torch.zeros(self.shape, dtype=torch.float64)
        m[self.rows, self.cols] = 1.0
        return m

    def observed_matrix(self) -> torch.Tensor:
        """float64 (n_rows, n_cols): observed values in place, zero elsewhere (completion only)."""
        out = torch.zeros(self.shape, dtype=torch.float64)
        out[self.rows, self.cols] = self.values
        return out

    def fingerprint(self) -> str:
        """A SHA-256 of everything that defines the problem (used to key cached runs)."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.shape}".encode())
        for name in ("values", "rows", "cols", "measurements", "target", "test_rows", "test_cols", "test_values"):
            t = getattr(self, name)
            h.update(name.encode())
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def _shape(n: Any, n_rows: Any, n_cols: Any) -> tuple[int, int]:
    if n is None and (n_rows is None or n_cols is None):
        raise ValueError("give n (a square n x n matrix) or both n_rows and n_cols")
    if n is not None:
        n = v.integer("n", n, 1)
    n_rows = v.integer("n_rows", n_rows, 1) if n_rows is not None else n
    n_cols = v.integer("n_cols", n_cols, 1) if n_cols is not None else n
    return int(n_rows), int(n_cols)


def low_rank_target(shape: tuple[int, int], rank: int, generator: torch.Generator) -> torch.Tensor:
    """``U V^T`` with Gaussian factors, scaled to ``||W*||_F = sqrt(n_rows n_cols)``."""
    u = torch.randn(shape[0], rank, generator=generator, dtype=torch.float64)
    w = torch.randn(shape[1], rank, generator=generator, dtype=torch.float64)
    target = u @ w.T
    return target * (float(np.sqrt(shape[0] * shape[1])) / torch.linalg.matrix_norm(target))


def completion_problem(
    n: int | None = None,
    rank: int = 5,
    n_observed: int = 2000,
    seed: int = 0,
    *,
    n_rows: int | None = None,
    n_cols: int | None = None,
) -> Problem:
    """Synthetic matrix completion: a random rank-``rank`` target and ``n_observed`` distinct entries drawn uniformly."""
    shape = _shape(n, n_rows, n_cols)
    rank = v.integer("rank", rank, 1, min(shape))
    n_observed = v.integer("n_observed", n_observed, 1, shape[0] * shape[1])
    seed = v.integer("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    target = low_rank_target(shape, rank, g)
    flat = torch.randperm(shape[0] * shape[1], generator=g)[:n_observed].sort().values
    rows, cols = flat // shape[1], flat % shape[1]
    info = {"maker": "completion_problem", "n_rows": shape[0], "n_cols": shape[1], "rank": rank,
            "n_observed": n_observed, "seed": seed}
    return Problem("completion", shape, target[rows, cols].clone(), rows=rows, cols=cols, target=target, info=info)


def sensing_problem(
    n: int | None = None,
    rank: int = 5,
    n_measurements: int = 2000,
    seed: int = 0,
    *,
    n_rows: int | None = None,
    n_cols: int | None = None,
) -> Problem:
    """Synthetic matrix sensing: ``y_i = <A_i, W*>`` with ``A_i`` entries i.i.d. N(0, 1/(n_rows n_cols)) (P3 appendix)."""
    shape = _shape(n, n_rows, n_cols)
    rank = v.integer("rank", rank, 1, min(shape))
    n_measurements = v.integer("n_measurements", n_measurements, 1)
    seed = v.integer("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    target = low_rank_target(shape, rank, g)
    a = torch.randn(n_measurements, *shape, generator=g, dtype=torch.float64) / float(np.sqrt(shape[0] * shape[1]))
    y = torch.einsum("mij,ij->m", a, target)
    info = {"maker": "sensing_problem", "n_rows": shape[0], "n_cols": shape[1], "rank": rank,
            "n_measurements": n_measurements, "seed": seed}
    return Problem("sensing", shape, y, measurements=a, target=target, info=info)


def _index_array(name: str, x: Any, limit: int, axis: str) -> torch.Tensor:
    arr = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if arr.ndim != 1:
        v.fail(name, f"array of shape {arr.shape}", "a 1-D array of integer indices")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            v.fail(name, f"array of dtype {arr.dtype}", "integer indices")
    if arr.size and (arr.min() < 0 or arr.max() >= limit):
        bad = arr[(arr < 0) | (arr >= limit)][0]
        v.fail(name, f"array containing {int(bad)}", f"indices in [0, {limit - 1}] (the matrix has {limit} {axis})")
    return torch.as_tensor(arr.astype(np.int64))


def _value_array(name: str, x: Any, length: int | None = None) -> torch.Tensor:
    arr = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim != 1:
        v.fail(name, f"array of shape {arr.shape}", "a 1-D array of numbers")
    if not np.all(np.isfinite(arr)):
        v.fail(name, f"array with {int(np.sum(~np.isfinite(arr)))} NaN or infinite values", "finite numbers")
    if length is not None and arr.size != length:
        v.fail(name, f"array of length {arr.size}", f"of the same length as rows ({length})")
    return torch.as_tensor(arr)


def _entries(prefix: str, rows: Any, cols: Any, values: Any, shape: tuple[int, int]):
    r = _index_array(f"{prefix}rows", rows, shape[0], "rows")
    c = _index_array(f"{prefix}cols", cols, shape[1], "columns")
    if c.numel() != r.numel():
        v.fail(f"{prefix}cols", f"array of length {c.numel()}", f"of the same length as {prefix}rows ({r.numel()})")
    vals = _value_array(f"{prefix}values", values, r.numel())
    flat = r * shape[1] + c
    uniq, counts = torch.unique(flat, return_counts=True)
    if (counts > 1).any():
        k = int(uniq[counts > 1][0])
        v.fail(f"{prefix}rows/{prefix}cols", f"entry ({k // shape[1]}, {k % shape[1]}) given {int(counts.max())} times",
               "distinct entries")
    return r, c, vals, flat


def problem_from_observations(
    rows: Any,
    cols: Any,
    values: Any,
    shape: tuple[int, int],
    target: Any = None,
    *,
    test_rows: Any = None,
    test_cols: Any = None,
    test_values: Any = None,
    info: dict[str, Any] | None = None,
) -> Problem:
    """A completion problem from your own observations ``W[rows[i], cols[i]] = values[i]``.

    target: optional full (n_rows, n_cols) matrix, for synthetic studies (enables ``error_all``).
    test_rows/test_cols/test_values: optional held-out entries, for real data (enables ``test_mse``).
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        v.fail("shape", shape, "a pair (n_rows, n_cols)")
    shape = (v.integer("shape[0]", shape[0], 1), v.integer("shape[1]", shape[1], 1))
    r, c, vals, flat = _entries("", rows, cols, values, shape)
    if r.numel() == 0:
        v.fail("rows", "an empty array", "at least one observed entry")
    tgt = None
    if target is not None:
        t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target, dtype=np.float64)
        if t.shape != shape:
            v.fail("target", f"array of shape {t.shape}", f"an array of shape {shape}")
        if not np.all(np.isfinite(t)):
            v.fail("target", "array with NaN or infinite values", "finite numbers")
        tgt = torch.as_tensor(t)
    tests = (test_rows, test_cols, test_values)
    tr = tc = tv = None
    if any(x is not None for x in tests):
        if any(x is None for x in tests):
            raise ValueError("give all of test_rows, test_cols and test_values, or none of them")
        tr, tc, tv, tflat = _entries("test_", test_rows, test_cols, test_values, shape)
        overlap = np.intersect1d(flat.numpy(), tflat.numpy())
        if overlap.size:
            k = int(overlap[0])
            v.fail("test_rows/test_cols", f"entry ({k // shape[1]}, {k % shape[1]}) also observed",
                   "entries disjoint from the observed ones")
    meta = {"maker": "problem_from_observations", "n_rows": shape[0], "n_cols": shape[1], "n_observed": int(r.numel())}
    meta.update(info or {})
    return Problem("completion", shape, vals, rows=r, cols=c, target=tgt, test_rows=tr, test_cols=tc,
                   test_values=tv, info=meta)
