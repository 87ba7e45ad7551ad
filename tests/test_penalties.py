import pytest
import torch

from mcreg_lib import penalties


def _finite_difference(fn, w, eps=1e-6):
    g = torch.zeros_like(w)
    for idx in range(w.numel()):
        e = torch.zeros_like(w).view(-1)
        e[idx] = eps
        e = e.view_as(w)
        g.view(-1)[idx] = (fn(w + e) - fn(w - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("name, opts", [("ratio", {}), ("nuclear", {}), ("schatten", {"p": 0.5}),
                                        ("schatten", {"p": 0.8})])
def test_gradient_matches_finite_differences(name, opts):
    torch.manual_seed(0)
    w = torch.randn(2, 5, 4, dtype=torch.float64)
    o = penalties.options(name, opts)
    val, grad = penalties.value_and_grad(w, name, o)
    for b in range(2):
        fd = _finite_difference(lambda x: penalties.value(x, name, o).item(), w[b])
        assert torch.allclose(grad[b], fd, atol=1e-6, rtol=1e-5)
        assert val[b].item() == pytest.approx(penalties.value(w[b], name, o).item())


def test_ratio_gradient_orthogonal_to_w_and_scales_like_inverse_norm():
    """Scale invariance: <grad, W> = 0 and grad(cW) = grad(W) / c (PAPERS.md, P1 [derived])."""
    torch.manual_seed(1)
    w = torch.randn(1, 6, 6, dtype=torch.float64)
    _, g = penalties.value_and_grad(w, "ratio", {})
    assert abs((g * w).sum().item()) < 1e-12
    _, g10 = penalties.value_and_grad(10 * w, "ratio", {})
    assert torch.allclose(g10, g / 10)


def test_no_nan_at_rank_deficient_and_repeated_singular_values():
    w = torch.zeros(1, 4, 4, dtype=torch.float64)
    w[0, 0, 0] = 1.0  # rank one, three zero singular values repeated
    for name in penalties.PENALTIES:
        val, g = penalties.value_and_grad(w, name, penalties.options(name, None))
        assert torch.isfinite(val).all() and torch.isfinite(g).all()
    val, g = penalties.value_and_grad(torch.eye(3, dtype=torch.float64)[None], "ratio", {})
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("name, opts, match", [
    ("trace", None, "penalty='trace'"),
    ("schatten", {"p": 1.5}, r"penalty_options\['p'\]=1.5"),
    ("schatten", {"q": 0.5}, "penalty_options\\['q'\\]"),
    (None, {"p": 0.5}, "penalty_options"),
])
def test_bad_penalty_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        penalties.options(name, opts)
