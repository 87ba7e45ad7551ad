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


POLAR_PENALTIES = ("ratio", "nuclear")  # penalties whose gradient needs only the polar factor U V^T


class PolarState:
    """The previous step's polar factors of a batch, to warm-start :func:`polar` (used by the training loop)."""

    def __init__(self) -> None:
        self.q: torch.Tensor | None = None

    def reset(self, index: torch.Tensor) -> None:
        """Forget the runs in ``index`` (a diverged run); they start cold at the next step."""
        self.q = None


def value_and_grad(w: torch.Tensor, penalty: str, opts: dict[str, float],
                   state: PolarState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty of each matrix in the batch and its gradient with respect to W.

    Without ``state`` this is the exact reference (one SVD per matrix). With a :class:`PolarState`, the ratio and
    nuclear penalties take ``U V^T`` from :func:`polar` instead (the SVD where it has not converged).
    """
    if state is not None and penalty in POLAR_PENALTIES:
        return _polar_value_and_grad(w, penalty, state)
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


def _polar_value_and_grad(w: torch.Tensor, penalty: str, state: PolarState) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    q = u @ vh
    nuc = s.sum(-1)
    if penalty == "nuclear":
        return nuc, q
    fro = torch.linalg.vecdot(w.flatten(1), w.flatten(1)).sqrt().clamp_min(torch.finfo(w.dtype).tiny)
    return nuc / fro, q / fro[:, None, None] - w * (nuc / fro**3)[:, None, None]
