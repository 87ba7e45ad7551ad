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
    """Scale invariance: <grad, W> = 0 and grad(cW) = grad(W) / c (Zhao 2022's ratio penalty, derived)."""
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


# --- the Gram method (eigendecomposition of W^T W in float64) ---------------------------------------------------

def _with_condition(kappa: float, n: int = 60, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """float32 matrices with singular values log-spaced from 1 down to 1 / kappa."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=torch.float64, generator=g))
    s = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), n, dtype=torch.float64)
    return ((u * s) @ v.mT).float()


def _relative_error(grad: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((grad.double() - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).max())


@pytest.mark.parametrize("name", ["ratio", "nuclear"])
def test_gram_gradient_matches_finite_differences(name):
    torch.manual_seed(2)
    w = torch.randn(2, 5, 4, dtype=torch.float64)
    val, grad = penalties.value_and_grad(w, name, {}, method="gram")
    for b in range(2):
        fd = _finite_difference(lambda x: penalties.value(x, name).item(), w[b])
        assert torch.allclose(grad[b], fd, atol=1e-6, rtol=1e-5)
        assert val[b].item() == pytest.approx(penalties.value(w[b], name).item(), rel=1e-12)


@pytest.mark.parametrize("kappa", [1e1, 1e3, 1e5])
@pytest.mark.parametrize("name", ["ratio", "nuclear"])
def test_gram_is_float_accurate_and_beats_the_float32_svd(kappa, name):
    """Against the float64 SVD of the same float32 matrices: the Gram method errs by about eps64 * kappa^2, the
    float32 SVD by about eps32 * kappa (module docstring)."""
    w = _with_condition(kappa)
    exact_val, exact = penalties.value_and_grad(w.double(), name, {}, method="svd")
    val, gram = penalties.value_and_grad(w, name, {})  # auto: gram for float32
    assert gram.dtype == torch.float32
    _, svd32 = penalties.value_and_grad(w, name, {}, method="svd")
    assert _relative_error(gram, exact) < 1e-6
    assert torch.allclose(val.double(), exact_val, rtol=1e-6)
    if kappa >= 1e5:
        assert _relative_error(svd32, exact) > 100 * _relative_error(gram, exact)


def test_gram_gives_the_minimum_norm_subgradient_on_a_null_space():
    """W = [A, 0]: zero weight on the null directions (the last columns), the exact gradient of A elsewhere."""
    torch.manual_seed(3)
    a = torch.randn(1, 8, 5)
    w = torch.cat([a, torch.zeros(1, 8, 3)], dim=2)
    for name in ("ratio", "nuclear"):
        val, grad = penalties.value_and_grad(w, name, {}, method="gram")
        exact_val, exact = penalties.value_and_grad(a.double(), name, {}, method="svd")
        assert torch.equal(grad[..., 5:], torch.zeros(1, 8, 3))
        assert _relative_error(grad[..., :5], exact) < 1e-6
        assert val.item() == pytest.approx(exact_val.item(), rel=1e-6)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_a_matrix_gets_the_same_bits_in_any_batch(method):
    w = _with_condition(1e3, n=30, batch=7, seed=4)
    val, grad = penalties.value_and_grad(w, "ratio", {}, method=method)
    for b in range(7):
        v1, g1 = penalties.value_and_grad(w[b:b + 1], "ratio", {}, method=method)
        assert torch.equal(v1[0], val[b]) and torch.equal(g1[0], grad[b])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        v3, g3 = penalties.value_and_grad(w, "ratio", {}, method=method)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(v3, val) and torch.equal(g3, grad)


def test_method_choice_and_bad_methods():
    assert penalties.method_for("ratio", torch.float32) == "gram"
    assert penalties.method_for("nuclear", torch.float32) == "gram"
    assert penalties.method_for("ratio", torch.float64) == "svd"
    assert penalties.method_for("schatten", torch.float32) == "svd"
    assert penalties.method_for("ratio", torch.float64, "gram") == "gram"
    with pytest.raises(ValueError, match="method='qr'"):
        penalties.value_and_grad(torch.eye(3)[None], "ratio", {}, method="qr")
    with pytest.raises(ValueError, match="method='gram'.*Schatten"):
        penalties.value_and_grad(torch.eye(3)[None], "schatten", penalties.options("schatten", None), method="gram")


def test_worker_errors_reach_the_caller_and_the_pool_survives():
    from mcreg_lib import _threads

    def boom(x):
        raise RuntimeError("boom in a worker")

    with pytest.raises(RuntimeError, match="boom in a worker"):
        _threads.per_matrix(boom, torch.zeros(4, 2, 2))
    out = _threads.per_matrix(lambda x: (x.sum((-1, -2)),), torch.ones(4, 2, 2))
    assert torch.equal(out[0], torch.full((4,), 4.0))


def _in_forked_child(queue):
    _, g = penalties.value_and_grad(torch.eye(4)[None].repeat(3, 1, 1), "ratio", {})
    queue.put(float(g.abs().sum()))


def test_works_in_a_forked_child_after_the_parent_used_the_pool():
    import multiprocessing

    penalties.value_and_grad(torch.eye(4)[None].repeat(3, 1, 1), "ratio", {})  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_forked_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(0.0, abs=1e-6)  # the ratio's gradient vanishes at W = I


@pytest.mark.parametrize("name", ["ratio", "nuclear"])
def test_gram_on_a_wide_matrix_decomposes_the_smaller_side(name):
    """A wide W (fewer rows than columns, like MovieLens' 943 x 1682) takes its Gram matrix as W W^T: same value and
    gradient as the float64 SVD, and as the tall transpose's gradient transposed."""
    w = _with_condition(1e3, n=12, batch=3, seed=5)[:, :7, :]  # 7 x 12
    exact_val, exact = penalties.value_and_grad(w.double(), name, {}, method="svd")
    val, grad = penalties.value_and_grad(w, name, {}, method="gram")
    assert grad.shape == w.shape
    assert _relative_error(grad, exact) < 1e-6
    assert torch.allclose(val.double(), exact_val, rtol=1e-6)
    val_t, grad_t = penalties.value_and_grad(w.mT.contiguous(), name, {}, method="gram")
    assert torch.equal(val_t, val) and torch.equal(grad_t.mT, grad)
