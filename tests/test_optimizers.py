"""Each batched optimizer against its torch.optim counterpart, step by step, with a per-run learning rate."""

import pytest
import torch

from mcreg_lib import optimizers

TORCH = {
    "gd": lambda p, lr, o: torch.optim.SGD(p, lr=lr),
    "adam": lambda p, lr, o: torch.optim.Adam(p, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                                              weight_decay=o["weight_decay"]),
    "adamw": lambda p, lr, o: torch.optim.AdamW(p, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                                                weight_decay=o["weight_decay"]),
    "rmsprop": lambda p, lr, o: torch.optim.RMSprop(p, lr=lr, alpha=o["alpha"], eps=o["eps"],
                                                    weight_decay=o["weight_decay"]),
    "adagrad": lambda p, lr, o: torch.optim.Adagrad(p, lr=lr, eps=o["eps"], lr_decay=o["lr_decay"],
                                                    weight_decay=o["weight_decay"]),
    "sgd_momentum": lambda p, lr, o: torch.optim.SGD(p, lr=lr, momentum=o["momentum"], dampening=o["dampening"],
                                                     nesterov=bool(o["nesterov"]), weight_decay=o["weight_decay"]),
}


def _loss(params):
    # a fixed smooth non-quadratic function of two parameters
    return (params[0] ** 4).sum() + (params[0] @ params[1]).sin().sum() + (params[1] ** 2).sum()


@pytest.mark.parametrize("name", sorted(TORCH))
@pytest.mark.parametrize("extra", [{}, {"weight_decay": 0.1}])
def test_matches_torch_optim(name, extra):
    if name == "gd" and extra:
        pytest.skip("plain GD has no options")
    opts = optimizers.options(name, extra)
    lrs = [0.01, 0.003]
    torch.manual_seed(0)
    init = [torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64)]
    ours = [x.clone() for x in init]
    opt = optimizers.make(name, ours, opts)
    lr = torch.tensor(lrs, dtype=torch.float64).view(2, 1, 1)
    refs = []
    for b in range(2):
        ps = [x[b].clone().requires_grad_() for x in init]
        refs.append((ps, TORCH[name](ps, lrs[b], opts)))
    for _ in range(25):
        for ps, o in refs:
            o.zero_grad()
            _loss(ps).backward()
            o.step()
        leaves = [p.clone().requires_grad_() for p in ours]
        grads = torch.autograd.grad(sum(_loss([q[b] for q in leaves]) for b in range(2)), leaves)
        opt.step(ours, list(grads), lr)
    for b, (ps, _) in enumerate(refs):
        for mine, ref in zip(ours, ps):
            assert torch.allclose(mine[b], ref.detach(), rtol=1e-10, atol=1e-12), name


def test_zero_lr_freezes_a_run():
    p = [torch.ones(2, 2, 2, dtype=torch.float64)]
    opt = optimizers.make("adam", p, optimizers.options("adam", None))
    lr = torch.tensor([0.1, 0.0], dtype=torch.float64).view(2, 1, 1)
    for _ in range(3):
        opt.step(p, [torch.ones_like(p[0])], lr)
    assert torch.equal(p[0][1], torch.ones(2, 2, dtype=torch.float64))
    assert not torch.equal(p[0][0], torch.ones(2, 2, dtype=torch.float64))


def test_normalized_gd_step_is_scale_free():
    """P3's GroupRMSprop: after the first step the update is lr * g / (||g|| + eps)."""
    opts = optimizers.options("normalized_gd", {"eps": 0.0})
    for scale in (1e-3, 1.0, 1e3):
        p = [torch.zeros(1, 2, 2, dtype=torch.float64)]
        g = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]], dtype=torch.float64) * scale
        optimizers.make("normalized_gd", p, opts).step(p, [g], torch.full((1, 1, 1), 0.1, dtype=torch.float64))
        assert torch.linalg.matrix_norm(p[0]).item() == pytest.approx(0.1)


@pytest.mark.parametrize("name, opts, match", [
    ("sgd", None, "optimizer='sgd'.*'gd'"),
    ("adam", {"momentum": 0.9}, r"optimizer_options\['momentum'\]"),
    ("adam", {"beta1": 1.5}, r"optimizer_options\['beta1'\]=1.5"),
    ("rmsprop", {"eps": -1.0}, r"optimizer_options\['eps'\]=-1.0"),
])
def test_bad_optimizer_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        optimizers.options(name, opts)
