"""Penalties on the end-to-end matrix, with their gradients in closed form.

We never backpropagate through ``torch.linalg.svd``: its backward divides by ``sigma_i^2 - sigma_j^2`` and blows up at
repeated or tiny singular values, which is exactly where low-rank training lives. Instead, with ``W = U S V^T``:

* nuclear norm ``||W||_* = sum sigma_i``: gradient ``U V^T`` (exact where W has full rank; a subgradient otherwise);
* ratio ``||W||_* / ||W||_F`` (Zhao 2022): gradient ``U V^T / ||W||_F - ||W||_* W / ||W||_F^3``. It is invariant to
  the scale of W, so its gradient is orthogonal to W and shrinks like ``1 / ||W||_F``;
* Schatten-p quasi-norm ``(sum sigma_i^p)^(1/p)``, 0 < p < 1: gradient
  ``(sum sigma^p)^(1/p - 1) U diag(sigma^(p-1)) V^T``, with sigma clamped below at ``sigma_floor`` (the gradient is
  unbounded as a singular value goes to zero).

All functions take a batch (B, n_rows, n_cols) and return the value (B,) and the gradient (B, n_rows, n_cols).

Two ways to get the singular directions (``method``):

* ``"svd"``: ``torch.linalg.svd`` of W in W's own precision. In float32 its ``U V^T`` is accurate to about
  ``eps32 * kappa`` (kappa = sigma_1 / sigma_min): 4e-4 at kappa = 1e5, 4e-2 at 1e7.
* ``"gram"``: the eigendecomposition of ``G = W^T W`` (``W W^T`` when W has fewer rows than columns: the smaller
  of the two, e.g. 943 x 943 rather than 1682 x 1682 for MovieLens-100K) computed in **float64** (W's float32
  entries are exact in float64), ``sigma_i = sqrt(lambda_i)`` and ``U V^T = W V diag(1 / sigma) V^T``; the ratio's
  gradient is then ``W V diag(c) V^T`` with ``c_i = 1 / (sigma_i ||W||_F) - ||W||_* / ||W||_F^3`` (since
  ``W = W V V^T``), two matrix products per run on top of the decomposition (``make bench`` prints the step against
  the decomposition alone). Its error is about
  ``eps64 * kappa^2``, which is below the float32 SVD's ``eps32 * kappa`` for every kappa below eps32 / eps64 (5e8):
  by these bounds it is in float32 the more accurate of the two (tests/test_penalties.py measures both against a
  float64 SVD; ``make bench`` [3] prints the median and the largest error over a batch: at kappa 1e3 and 1e5, 2e-7
  against 1e-5 and 4e-4, but one trained matrix at kappa 3.8e7 came out at 1.4e-3 against 5.9e-4), and
  an eigendecomposition of a symmetric matrix costs less than an SVD. Directions with ``lambda_i <= eps64 *
  lambda_1`` (sigma_i below about 1.5e-8 sigma_1) are not resolved by the float64 Gram matrix: they get zero weight,
  the minimum-norm choice of subgradient, the exact one where W is rank-deficient. It is not used for float64 W (it
  would lose half the digits there) nor for the Schatten penalty (whose weights grow without bound on exactly those
  directions).

``method="auto"`` (the training loop's) picks ``"gram"`` for the ratio and nuclear penalties on float32 (or lower)
matrices and ``"svd"`` otherwise. On the CPU either way splits the batch across worker threads (mcreg_lib._threads):
one 100 x 100 decomposition cannot use two cores, two of them can.
"""

from __future__ import annotations

import torch

from . import _threads
from . import _validate as v

PENALTIES = ("ratio", "nuclear", "schatten")
METHODS = ("auto", "svd", "gram")
DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    "ratio": {},
    "nuclear": {},
    "schatten": {"p": 0.5, "sigma_floor": 1e-6},
}


def options(penalty: str | None, given: dict[str, float] | None) -> dict[str, float]:
    """The penalty's options with defaults filled in; unknown names are an error."""
    if penalty is None:
        if given:
            v.fail("penalty_options", given, "empty when penalty is None")
        return {}
    penalty = v.choice("penalty", penalty, PENALTIES)
    out = dict(DEFAULT_OPTIONS[penalty])
    for key, value in (given or {}).items():
        if key not in out:
            v.fail(f"penalty_options[{key!r}]", value, f"one of the options of {penalty!r}: {sorted(out) or 'none'}")
        out[key] = v.real(f"penalty_options[{key!r}]", value)
    if penalty == "schatten":
        v.real("penalty_options['p']", out["p"], 0.0, 1.0, strict_minimum=True)
        v.positive("penalty_options['sigma_floor']", out["sigma_floor"])
    return out


def method_for(penalty: str, dtype: torch.dtype, method: str = "auto") -> str:
    """The method ``value_and_grad`` uses: ``"svd"`` or ``"gram"`` (see the module's docstring)."""
    method = v.choice("method", method, METHODS)
    penalty = v.choice("penalty", penalty, PENALTIES)
    if method == "gram" and penalty == "schatten":
        v.fail("method", method, "'svd' or 'auto' for the Schatten penalty (its weights are unbounded on the "
               "directions the Gram matrix cannot resolve)")
    if method != "auto":
        return method
    return "gram" if penalty != "schatten" and dtype != torch.float64 else "svd"


def value_and_grad(w: torch.Tensor, penalty: str, opts: dict[str, float],
                   method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty of each matrix in the batch and its gradient with respect to W (``method``: module docstring)."""
    method = method_for(penalty, w.dtype, method)
    return _threads.per_matrix(lambda chunk: _value_and_grad(chunk, penalty, opts, method), w)  # type: ignore


def _value_and_grad(w: torch.Tensor, penalty: str, opts: dict[str, float],
                    method: str) -> tuple[torch.Tensor, torch.Tensor]:
    if method == "gram":
        return _gram_value_and_grad(w, penalty)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    tiny = torch.finfo(w.dtype).tiny
    if penalty == "nuclear":
        return s.sum(-1), u @ vh
    if penalty == "ratio":
        nuc = s.sum(-1)
        fro = s.square().sum(-1).sqrt().clamp_min(tiny)
        grad = (u @ vh) / fro[:, None, None] - w * (nuc / fro**3)[:, None, None]
        return nuc / fro, grad
    p = opts["p"]
    sc = s.clamp_min(opts["sigma_floor"])
    total = (sc**p).sum(-1)
    weights = sc ** (p - 1.0) * (total ** (1.0 / p - 1.0))[:, None]
    return total ** (1.0 / p), (u * weights[:, None, :]) @ vh


def _gram_value_and_grad(w: torch.Tensor, penalty: str) -> tuple[torch.Tensor, torch.Tensor]:
    if w.shape[-2] < w.shape[-1]:  # wide: decompose the smaller Gram matrix, W W^T (both penalties commute with ^T)
        val, grad = _gram_value_and_grad(w.mT, penalty)
        return val, grad.mT
    # Both gradients are W V diag(c) V^T for weights c on the eigenvectors V of G = W^T W: U V^T = W V diag(1/sigma)
    # V^T (on the resolved directions) and W = W V V^T, so for the ratio c_i = 1/(sigma_i ||W||_F) - ||W||_* /
    # ||W||_F^3 (the second part on every direction). Two products: W (V diag(c)) in float64 (W v_i / sigma_i needs
    # it where sigma_i is small), then by V^T in W's precision (its factors hold entries of order one).
    w64 = w.to(torch.float64)
    lam, vec = torch.linalg.eigh(w64.mT @ w64)  # ascending eigenvalues of W^T W
    lam = lam.clamp_min(0.0)
    resolved = lam > torch.finfo(torch.float64).eps * lam[:, -1:]
    sigma = lam.sqrt() * resolved
    inv = torch.where(resolved, sigma, torch.ones((), dtype=sigma.dtype)).reciprocal() * resolved
    nuc = sigma.sum(-1)
    if penalty == "nuclear":
        c, value = inv, nuc
    else:
        fro = lam.sum(-1).sqrt().clamp_min(torch.finfo(torch.float64).tiny)  # ||W||_F^2 = trace(W^T W)
        c, value = inv / fro[:, None] - (nuc / fro**3)[:, None], nuc / fro
    left = torch.bmm(w64, vec * c[:, None, :])
    return value.to(w.dtype), torch.bmm(left.to(w.dtype), vec.to(w.dtype).mT)


def value(w: torch.Tensor, penalty: str, opts: dict[str, float] | None = None) -> torch.Tensor:
    """The penalty alone (differentiable by autograd away from the SVD's singular points; used in tests)."""
    s = torch.linalg.svdvals(w)
    if penalty == "nuclear":
        return s.sum(-1)
    if penalty == "ratio":
        return s.sum(-1) / s.square().sum(-1).sqrt()
    if penalty == "schatten":
        o = options("schatten", opts)
        return (s.clamp_min(o["sigma_floor"]) ** o["p"]).sum(-1) ** (1.0 / o["p"])
    raise ValueError(f"penalty={penalty!r} is not allowed: penalty must be one of {PENALTIES}")
