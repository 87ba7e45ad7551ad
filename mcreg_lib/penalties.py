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
"""

from __future__ import annotations

import torch

from . import _validate as v

PENALTIES = ("ratio", "nuclear", "schatten")
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


def value_and_grad(w: torch.Tensor, penalty: str, opts: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty of each matrix in the batch and its gradient with respect to W."""
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    tiny = torch.finfo(w.dtype).tiny
    if penalty == "nuclear":
        return s.sum(-1), u @ vh
    if penalty == "ratio":
        nuc = s.sum(-1)
        fro = s.square().sum(-1).sqrt().clamp_min(tiny)
        grad = (u @ vh) / fro[:, None, None] - w * (nuc / fro**3)[:, None, None]
        return nuc / fro, grad
    if penalty == "schatten":
        p = opts["p"]
        sc = s.clamp_min(opts["sigma_floor"])
        total = (sc**p).sum(-1)
        weights = sc ** (p - 1.0) * (total ** (1.0 / p - 1.0))[:, None]
        return total ** (1.0 / p), (u * weights[:, None, :]) @ vh
    raise ValueError(f"penalty={penalty!r} is not allowed: penalty must be one of {PENALTIES}")


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
