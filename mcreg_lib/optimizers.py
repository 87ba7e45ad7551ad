"""Optimizers over a batch of runs.

torch.optim takes one learning rate per parameter group and cannot freeze one run of a batch while the others go on,
so the sweep engine needs batched versions: each parameter is (B, out, in), the learning rate is a (B, 1, 1) tensor
(zero for a run that has stopped). Each update rule follows its torch.optim counterpart line by line (same defaults,
same order of operations); ``tests/test_optimizers.py`` checks them against torch.optim step by step.
P3's normalized gradient descent ("GroupRMSprop" in the released code of Arora et al. 2019) has no torch
counterpart; :class:`NormalizedGD` states its update.
"""

from __future__ import annotations

import math

import torch

from . import _validate as v

DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    "gd": {},
    "normalized_gd": {"beta": 0.99, "eps": 1e-4},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0},
    "adagrad": {"eps": 1e-10, "lr_decay": 0.0, "weight_decay": 0.0},
    "sgd_momentum": {"momentum": 0.9, "dampening": 0.0, "nesterov": 0.0, "weight_decay": 0.0},
}
OPTIMIZERS = tuple(DEFAULT_OPTIONS)
ADAPTIVE = ("adam", "adamw", "rmsprop", "adagrad")


def options(optimizer: str, given: dict[str, float] | None) -> dict[str, float]:
    """The optimizer's options with torch's defaults filled in; unknown names are an error."""
    optimizer = v.choice("optimizer", optimizer, OPTIMIZERS)
    out = dict(DEFAULT_OPTIONS[optimizer])
    for key, value in (given or {}).items():
        if key not in out:
            v.fail(f"optimizer_options[{key!r}]", value,
                   f"one of the options of {optimizer!r}: {sorted(out) or 'none'}")
        out[key] = v.real(f"optimizer_options[{key!r}]", value, 0.0)
    for key in ("beta", "beta1", "beta2", "alpha", "momentum", "dampening"):
        if key in out:
            v.real(f"optimizer_options[{key!r}]", out[key], 0.0, 1.0)
    if "nesterov" in out:
        out["nesterov"] = float(bool(out["nesterov"]))
    return out


class BatchedOptimizer:
    """Base class: ``step(params, grads, lr)`` updates each (B, out, in) parameter in place."""

    def __init__(self, params: list[torch.Tensor], opts: dict[str, float]) -> None:
        self.opts = opts
        self.t = 0
        self.state: list[list[torch.Tensor]] = []

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: torch.Tensor) -> None:
        raise NotImplementedError

    def reset(self, index: torch.Tensor) -> None:
        """Zero the state of the runs in ``index`` (used when a run diverged)."""
        for buffers in self.state:
            for b in buffers:
                b[index] = 0.0

    def _decay(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        wd = self.opts.get("weight_decay", 0.0)
        return g.add(p, alpha=wd) if wd else g


class GD(BatchedOptimizer):
    def step(self, params, grads, lr):
        self.t += 1
        for p, g in zip(params, grads):
            p.sub_(g * lr)


class NormalizedGD(BatchedOptimizer):
    """P3's GroupRMSprop: one adaptive step per run, ``lr / (sqrt(v_hat) + eps)`` with v the EMA of ``sum ||g||^2``.

    All layers move along the plain gradient, so the implicit bias of gradient descent is kept.
    """

    def __init__(self, params, opts):
        super().__init__(params, opts)
        self.v = torch.zeros(params[0].shape[0], 1, 1, dtype=params[0].dtype, device=params[0].device)
        self.state = [[self.v]]

    def step(self, params, grads, lr):
        self.t += 1
        beta = self.opts["beta"]
        sq = sum(g.square().sum((1, 2), keepdim=True) for g in grads)
        self.v.mul_(beta).add_(sq, alpha=1 - beta)
        scale = lr / ((self.v / (1 - beta**self.t)).sqrt() + self.opts["eps"])
        for p, g in zip(params, grads):
            p.sub_(g * scale)


class Adam(BatchedOptimizer):
    decoupled = False

    def __init__(self, params, opts):
        super().__init__(params, opts)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.state = [self.m, self.v]

    def step(self, params, grads, lr):
        self.t += 1
        b1, b2, eps, wd = (self.opts[k] for k in ("beta1", "beta2", "eps", "weight_decay"))
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, s in zip(params, grads, self.m, self.v):
            if self.decoupled:
                p.mul_(1 - lr * wd)
            elif wd:
                g = g.add(p, alpha=wd)
            m.lerp_(g, 1 - b1)
            s.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (s.sqrt() / math.sqrt(bc2)).add_(eps)
            p.sub_(m / denom * (lr / bc1))


class AdamW(Adam):
    decoupled = True


class RMSprop(BatchedOptimizer):
    def __init__(self, params, opts):
        super().__init__(params, opts)
        self.v = [torch.zeros_like(p) for p in params]
        self.state = [self.v]

    def step(self, params, grads, lr):
        self.t += 1
        alpha, eps = self.opts["alpha"], self.opts["eps"]
        for p, g, s in zip(params, grads, self.v):
            g = self._decay(p, g)
            s.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            p.sub_(g / s.sqrt().add_(eps) * lr)


class Adagrad(BatchedOptimizer):
    def __init__(self, params, opts):
        super().__init__(params, opts)
        self.sum = [torch.zeros_like(p) for p in params]
        self.state = [self.sum]

    def step(self, params, grads, lr):
        self.t += 1
        clr = lr / (1 + (self.t - 1) * self.opts["lr_decay"])
        for p, g, s in zip(params, grads, self.sum):
            g = self._decay(p, g)
            s.addcmul_(g, g, value=1.0)
            p.sub_(g / s.sqrt().add_(self.opts["eps"]) * clr)


class SGDMomentum(BatchedOptimizer):
    def __init__(self, params, opts):
        super().__init__(params, opts)
        self.buf = [torch.zeros_like(p) for p in params]
        self.state = [self.buf]

    def step(self, params, grads, lr):
        self.t += 1
        mu, damp, nesterov = self.opts["momentum"], self.opts["dampening"], self.opts["nesterov"]
        for p, g, b in zip(params, grads, self.buf):
            g = self._decay(p, g)
            if self.t == 1:
                b.copy_(g)
            else:
                b.mul_(mu).add_(g, alpha=1 - damp)
            d = g.add(b, alpha=mu) if nesterov else b
            p.sub_(d * lr)


CLASSES: dict[str, type[BatchedOptimizer]] = {
    "gd": GD, "normalized_gd": NormalizedGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
    "adagrad": Adagrad, "sgd_momentum": SGDMomentum,
}


def make(optimizer: str, params: list[torch.Tensor], opts: dict[str, float]) -> BatchedOptimizer:
    return CLASSES[optimizer](params, opts)
