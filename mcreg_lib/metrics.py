"""Metrics, one definition each. Every function accepts a single matrix (n_rows, n_cols) or a batch (B, n_rows, n_cols)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


def relative_error(w: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``||M o (W - W*)||_F^2 / ||M o W*||_F^2``; without a mask this is P3's reconstruction error on all entries.

    With ``mask`` = 1 on unobserved entries it is the error on unobserved entries. Since ``W*`` has RMS entry 1
    under the book's convention, it equals the mean squared error on those entries up to sampling noise.
    """
    diff = w - target
    if mask is not None:
        diff = diff * mask
        target = target * mask
    num = diff.square().sum((-2, -1))
    return num / target.square().sum((-2, -1)).clamp_min(torch.finfo(w.dtype).tiny)


def completion_loss(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the given entries (the training loss of completion, or a test MSE)."""
    return (w[..., rows, cols] - values).square().mean(-1)


def balancedness_gaps(layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``||W_{j+1}^T W_{j+1} - W_j W_j^T||_F`` for each adjacent pair j = 1..N-1 (Du, Hu & Lee 2018, Thm 2.1).

    ``layers[0]`` is W_1, the layer applied first. Gradient flow keeps each of these matrices constant.
    """
    return [torch.linalg.matrix_norm(balance_matrix(lower, upper)) for lower, upper in zip(layers[:-1], layers[1:])]


def balance_matrix(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``C_j = W_{j+1}^T W_{j+1} - W_j W_j^T`` for lower = W_j (..., d, d_in), upper = W_{j+1} (..., d_out, d).

    Shape (..., d, d); its Frobenius norm is the balancedness gap.
    """
    return upper.transpose(-2, -1) @ upper - lower @ lower.transpose(-2, -1)


def end_to_end(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W = W_N ... W_1``; ``layers[0]`` is W_1."""
    w = layers[0]
    for layer in layers[1:]:
        w = layer @ w
    return w
