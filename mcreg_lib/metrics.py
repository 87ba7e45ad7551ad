"""Metrics, one definition each. Every function accepts a single matrix (n_rows, n_cols) or a batch (B, n_rows, n_cols)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _validate as v


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values in decreasing order, shape (..., min(n_rows, n_cols))."""
    return torch.linalg.svdvals(w)


def effective_rank(w: torch.Tensor | None = None, *, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Roy & Vetterli (2007): ``exp(H(p))`` with ``p = sigma / sum(sigma)`` and ``0 log 0 = 0``.

    Between 1 (rank one) and min(n_rows, n_cols) (all singular values equal). Pass ``sigma`` to reuse an SVD.
    """
    s = singular_values(w) if sigma is None else sigma
    p = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    entropy = -torch.xlogy(p, p).sum(-1)
    return torch.exp(entropy)


def nuclear_norm(w: torch.Tensor | None = None, *, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``||W||_*``, the sum of singular values."""
    s = singular_values(w) if sigma is None else sigma
    return s.sum(-1)


def schatten(w: torch.Tensor | None = None, p: float = 0.5, *, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Schatten-p (quasi-)norm ``(sum sigma_i^p)^(1/p)``; p = 1 is the nuclear norm, p = 2 Frobenius."""
    s = singular_values(w) if sigma is None else sigma
    return (s**p).sum(-1) ** (1.0 / p)


def frobenius_norm(w: torch.Tensor | None = None, *, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``||W||_F``, from the singular values (the Schatten-2 norm)."""
    s = singular_values(w) if sigma is None else sigma
    return s.square().sum(-1).sqrt()


def norms(w: torch.Tensor | None = None, *, sigma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The norms the book compares, under their one spelling: ``frobenius_norm``, ``nuclear_norm``,
    ``spectral_norm`` (sigma_1), ``schatten_half_norm`` (the Schatten-1/2 quasi-norm), plus ``effective_rank``."""
    s = singular_values(w) if sigma is None else sigma
    return {
        "frobenius_norm": frobenius_norm(sigma=s),
        "nuclear_norm": nuclear_norm(sigma=s),
        "spectral_norm": s[..., 0],
        "schatten_half_norm": schatten(sigma=s, p=0.5),
        "effective_rank": effective_rank(sigma=s),
    }


NORMS = ("frobenius_norm", "nuclear_norm", "spectral_norm", "schatten_half_norm")


def reconstruction_error(w: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``||M o (W - W*)||_F^2 / ||M o W*||_F^2``: P3's reconstruction error (a *squared* ratio) over all entries, or,
    with ``mask`` = 1 on the unobserved entries, P1's error on the unobserved entries.

    Logged as ``error_all`` and ``error_unobserved``. Since ``W*`` has RMS entry 1 under the book's convention, it
    equals the mean squared error on those entries up to sampling noise. (The unsquared ratio
    ``||W - W*||_F / ||W*||_F`` is :func:`relative_residual`.)
    """
    diff = w - target
    if mask is not None:
        diff = diff * mask
        target = target * mask
    num = diff.square().sum((-2, -1))
    return num / target.square().sum((-2, -1)).clamp_min(torch.finfo(w.dtype).tiny)


def relative_residual(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||W - W*||_F / ||W*||_F`` (unsquared): the square root of :func:`reconstruction_error`."""
    return reconstruction_error(w, target).sqrt()


def completion_loss(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the given entries (the training loss of completion, or a test MSE)."""
    return (w[..., rows, cols] - values).square().mean(-1)


def balancedness_gaps(layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``||W_{j+1}^T W_{j+1} - W_j W_j^T||_F`` for each adjacent pair j = 1..N-1 (Du, Hu & Lee 2018, Thm 2.1).

    ``layers[0]`` is W_1, the layer applied first. Gradient flow keeps each of these matrices constant.
    """
    return [torch.linalg.matrix_norm(balance_matrix(lower, upper)) for lower, upper in zip(layers[:-1], layers[1:])]


def relative_balancedness_gaps(layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``||C_j||_F / (||W_{j+1}^T W_{j+1}||_F + ||W_j W_j^T||_F)`` for j = 1..N-1, each in [0, 1].

    0 means perfectly balanced; 1 is the largest possible. Batched layers give one value per batch entry.
    """
    out = []
    for gap, lower, upper in zip(balancedness_gaps(layers), layers[:-1], layers[1:]):
        scale = (torch.linalg.matrix_norm(upper.transpose(-2, -1) @ upper)
                 + torch.linalg.matrix_norm(lower @ lower.transpose(-2, -1)))
        out.append(gap / scale.clamp_min(torch.finfo(scale.dtype).tiny))
    return out


def balance_matrix(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``C_j = W_{j+1}^T W_{j+1} - W_j W_j^T`` for lower = W_j (..., d, d_in), upper = W_{j+1} (..., d_out, d).

    Shape (..., d, d); its Frobenius norm is the balancedness gap. Gradient flow keeps C_j constant (Du, Hu & Lee
    2018, Thm 2.2).
    """
    check_adjacent(lower, upper)
    return upper.transpose(-2, -1) @ upper - lower @ lower.transpose(-2, -1)


def check_adjacent(lower: torch.Tensor, upper: torch.Tensor) -> None:
    """A clear error unless lower = W_j (..., d, d_in) and upper = W_{j+1} (..., d_out, d) are adjacent layers."""
    if lower.ndim < 2 or upper.ndim < 2 or upper.shape[-1] != lower.shape[-2]:
        v.fail("layers", f"shapes {tuple(lower.shape)} and {tuple(upper.shape)}",
               "adjacent layers W_j (d, d_in), W_{j+1} (d_out, d) with matching inner size d")
