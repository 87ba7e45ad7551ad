"""Deep matrix factorization ``W = W_N ... W_1``: its initializations, the end-to-end product and the one backward
pass (the conventions of Arora et al. 2019 and Zhao 2022).

Layer j maps R^{d_j} -> R^{d_{j+1}} with d_1 = n_cols, d_{N+1} = n_rows and every hidden width equal to ``width``
(default min(n_rows, n_cols): "full-dimensional", so depth never limits the rank). Depth 1 means W itself.
``layers[0]`` is W_1, the layer applied first. Every function takes single layers (d_out, d_in) or batches
(B, d_out, d_in).

The backward pass (:func:`layer_grads`): for ``G = dL/dW``,

    dL/dW_j = (W_N ... W_{j+1})^T G (W_{j-1} ... W_1)^T,

computed from the forward pass's prefix products ``P_j = W_j ... W_1`` (:func:`prefix_products`) by passing
``A_j = (W_N ... W_{j+1})^T G`` down the layers. The training loop's fused gradient-descent update
(``mcreg_lib.training``) and the compiled loop of ``mcreg_lib.small`` restate it for speed; tests hold them equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import _validate as v

INITS = ("gaussian", "identity", "orthogonal", "balanced")


def layer_shapes(shape: tuple[int, int], depth: int, width: int) -> list[tuple[int, int]]:
    """(out, in) of each layer, W_1 first."""
    dims = [shape[1]] + [width] * (depth - 1) + [shape[0]]
    return [(dims[j + 1], dims[j]) for j in range(depth)]


def _orthogonal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(max(rows, cols), min(rows, cols), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return q if rows >= cols else q.T


def init_layers(
    shape: tuple[int, int],
    depth: int,
    init: str = "gaussian",
    init_scale: float = 1e-3,
    seed: int = 0,
    width: int | None = None,
    det_sign: int | None = None,
) -> list[torch.Tensor]:
    """Initial layers in float64 on the CPU (so the same seed gives the same start on every device and dtype).

    gaussian: entries N(0, init_scale^(2/N) / fan_in), so ``||W(0)||_F ~ init_scale * sqrt(n_rows)`` (P1/P3 rule).
    identity: each layer ``init_scale^(1/N) I``, so ``W(0) = init_scale I`` (P3's dynamics experiment).
    orthogonal: each layer ``init_scale^(1/N) Q_j`` with Q_j random (semi-)orthogonal.
    balanced: draw W0 as depth-1 gaussian, ``W0 = U S V^T``; ``W_1 = S^(1/N) V^T``, ``W_j = S^(1/N)``,
        ``W_N = U S^(1/N)``: every ``W_{j+1}^T W_{j+1} - W_j W_j^T`` is exactly zero (Arora et al. 2018).
    det_sign: for square problems, +1 or -1 forces the sign of det W(0) by flipping the first row of W_N
        (this keeps balancedness, since ``W_N^T W_N`` is unchanged).
    """
    init = v.choice("init", init, INITS)
    depth = v.integer("depth", depth, 1)
    init_scale = v.positive("init_scale", init_scale)
    width = min(shape) if width is None else v.integer("width", width, 1)
    g = torch.Generator().manual_seed(v.integer("seed", seed, 0))
    shapes = layer_shapes(shape, depth, width)
    per_layer = init_scale ** (1.0 / depth)
    if init == "gaussian":
        layers = [torch.randn(o, i, generator=g, dtype=torch.float64) * (per_layer / math.sqrt(i)) for o, i in shapes]
    elif init == "identity":
        layers = [torch.eye(o, i, dtype=torch.float64) * per_layer for o, i in shapes]
    elif init == "orthogonal":
        layers = [_orthogonal(o, i, g) * per_layer for o, i in shapes]
    else:
        w0 = torch.randn(shape, generator=g, dtype=torch.float64) * (init_scale / math.sqrt(shape[1]))
        u, s, vh = torch.linalg.svd(w0, full_matrices=False)
        k = s.numel()
        root = torch.diag(s ** (1.0 / depth))
        if depth == 1:
            layers = [w0]
        else:
            first = torch.zeros(width, shape[1], dtype=torch.float64)
            last = torch.zeros(shape[0], width, dtype=torch.float64)
            kk = min(k, width)
            first[:kk] = (root @ vh)[:kk]
            last[:, :kk] = (u @ root)[:, :kk]
            middle = torch.zeros(width, width, dtype=torch.float64)
            middle[:kk, :kk] = root[:kk, :kk]
            layers = [first] + [middle.clone() for _ in range(depth - 2)] + [last]
    if det_sign is not None:
        if shape[0] != shape[1]:
            v.fail("det_sign", det_sign, "None for a non-square problem")
        if det_sign not in (1, -1):
            v.fail("det_sign", det_sign, "+1, -1 or None")
        w = layers[0]
        for layer in layers[1:]:
            w = layer @ w
        if torch.sign(torch.linalg.det(w)) != det_sign:
            layers[-1][0] = -layers[-1][0]
    return layers


def end_to_end(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W = W_N ... W_1``; ``layers[0]`` is W_1."""
    w = layers[0]
    for layer in layers[1:]:
        w = layer @ w
    return w


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return torch.bmm(a, b, out=out) if a.ndim == 3 else torch.matmul(a, b, out=out)


def prefix_products(layers: Sequence[torch.Tensor], out: Sequence[torch.Tensor] | None = None
                    ) -> list[torch.Tensor]:
    """``[P_1, ..., P_N]`` with ``P_j = W_j ... W_1`` (so ``P_N = W``). ``out``: buffers for P_2..P_N (or all N, the
    first of which is ignored), reused by a training loop."""
    prefix = [layers[0]]
    for j in range(1, len(layers)):
        buf = None if out is None else out[j - 1 + (len(out) == len(layers))]
        prefix.append(_mm(layers[j], prefix[-1], out=buf))
    return prefix


def layer_grads(layers: Sequence[torch.Tensor], prefix: Sequence[torch.Tensor], g: torch.Tensor,
                out: Sequence[torch.Tensor] | None = None, work: Sequence[torch.Tensor] | None = None
                ) -> list[torch.Tensor]:
    """``[dL/dW_1, ..., dL/dW_N]`` from ``G = dL/dW`` and the prefix products (module docstring).

    out: buffers shaped like the layers for the gradients; work: buffers for the passed-down products
    ``A_j`` (shaped like ``W_j``'s input side: (d_j, n_cols)); both optional, for a loop that allocates nothing.
    """
    depth = len(layers)
    grads: list[torch.Tensor] = [g] * depth
    a = g
    for j in range(depth - 1, 0, -1):
        grads[j] = _mm(a, prefix[j - 1].mT, out=None if out is None else out[j])
        a = _mm(layers[j].mT, a, out=None if work is None else work[j])
    grads[0] = a if out is None else out[0].copy_(a)
    return grads
