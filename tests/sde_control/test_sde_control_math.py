"""Mathematics of the generator, the losses, the controllers and the Lyapunov functions (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, vmap

from auxfn.sde_control import (
    DiagQuadLyapunov,
    DifferenceMLP,
    ICNNLyapunov,
    LinearGain,
    QuadraticLyapunov,
    ZeroPreservingMLP,
    as_loss,
    as_residual,
    es_loss,
    generator,
    smooth_relu,
)

D64 = torch.float64


class Square(torch.nn.Module):
    """V(x) = c ‖x‖² with a trainable c."""

    def __init__(self, c=1.0):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=D64))

    def forward(self, x):
        return self.c * (x * x).sum(-1)


@pytest.mark.parametrize("backend", ["autograd", "func"])
def test_generator_closed_form_gbm(backend):
    # dx = a x dt + k x dB, V = x^2: LV = (2a + k^2) x^2, (V' g)^2 / V^2 = 4 k^2
    a, k = 0.7, -1.3
    x = torch.linspace(-3, 3, 13, dtype=D64).unsqueeze(1)
    t = generator(Square(), x, a * x, k * x, backend=backend)
    torch.testing.assert_close(t.LV, (2 * a + k * k) * x[:, 0] ** 2)
    nz = x[:, 0] != 0
    torch.testing.assert_close((t.VG[nz, 0] ** 2) / t.V[nz] ** 2, torch.full((int(nz.sum()),), 4 * k * k, dtype=D64))
    # ES loss zero iff 4k^2 >= b (2a + k^2)
    for b, zero in ((2.1, 4 * k * k >= 2.1 * (2 * a + k * k)), (10.0, 4 * k * k >= 10 * (2 * a + k * k))):
        out = es_loss(t.V[nz], t.LV[nz], t.VG[nz], b)
        assert (float(out["violation_rate"]) == 0.0) == zero


def test_as_residual_gbm_closed_form():
    # 1-D GBM with u = k x: r = x^4 (2a - (1 - alpha) k^2) for both forms; zero iff 2a <= (1-alpha) k^2
    x = torch.linspace(-2, 2, 9, dtype=D64).unsqueeze(1)
    for a, k, alpha in ((0.5, 2.0, 0.5), (1.0, 1.0, 0.75)):
        want = x[:, 0] ** 4 * (2 * a - (1 - alpha) * k * k)
        torch.testing.assert_close(as_residual(x, a * x, k * x, alpha), want)
        torch.testing.assert_close(as_residual(x, a * x, k * x, alpha, "elementwise")[:, 0], want)
        viol = float(as_loss(x, a * x, k * x, alpha)["violation_rate"])
        assert (viol == 0.0) == (2 * a <= (1 - alpha) * k * k)
    # normalised residual has the same sign and equals 2a - (1-alpha)k^2 away from 0
    r = as_residual(x, 0.5 * x, 2.0 * x, 0.5, normalize=True)
    torch.testing.assert_close(r[x[:, 0] != 0], torch.full((8,), 1.0 - 2.0, dtype=D64))


def test_as_vector_form_matches_ito_of_norm_power():
    # L ||x||^alpha = (alpha/2) ||x||^(alpha-4) r(x): check against the generator on V = ||x||^alpha
    torch.manual_seed(0)
    alpha = 0.6

    class NormPow(torch.nn.Module):
        def forward(self, x):
            return (x * x).sum(-1) ** (alpha / 2)

    x = torch.randn(16, 3, dtype=D64) + 2.0
    F, G = torch.randn(16, 3, dtype=D64), torch.randn(16, 3, 2, dtype=D64)
    t = generator(NormPow(), x, F, G)
    n = x.norm(dim=1)
    torch.testing.assert_close(t.LV, alpha / 2 * n ** (alpha - 4) * as_residual(x, F, G, alpha))


def _small_nets(d):
    torch.manual_seed(1)
    return [ICNNLyapunov(d, (5, 4, 1)).double(), DiagQuadLyapunov(d, (7,)).double(), QuadraticLyapunov(d).double()]


@pytest.mark.parametrize("backend", ["autograd", "func"])
@pytest.mark.parametrize("m", [1, 3])
def test_generator_matches_vmap_hessian(backend, m):
    d = 3
    for V in _small_nets(d):
        with torch.no_grad():
            for p in V.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(11, d, dtype=D64)
        F, G = torch.randn(11, d, dtype=D64), torch.randn(11, d, m, dtype=D64)
        v1 = lambda xi, V=V: V(xi.unsqueeze(0))[0]  # noqa: E731
        H = vmap(hessian(v1))(x)
        g = vmap(grad(v1))(x)
        want = (g * F).sum(-1) + 0.5 * torch.einsum("bim,bij,bjm->b", G, H, G)
        t = generator(V, x, F, G, backend=backend)
        torch.testing.assert_close(t.LV, want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(t.Vx, g)
        torch.testing.assert_close(t.VG, torch.einsum("bd,bdm->bm", g, G))
        torch.testing.assert_close(t.V, V(x))


def test_hutchinson_is_unbiased():
    d, m = 3, 4
    V = _small_nets(d)[1]
    x = torch.randn(5, d, dtype=D64)
    F, G = torch.zeros(5, d, dtype=D64), torch.randn(5, d, m, dtype=D64)
    exact = generator(V, x, F, G).LV
    gen = torch.Generator().manual_seed(0)
    est = generator(V, x, F, G, hessian="hutchinson", n_probes=4000, rng=gen).LV
    # Rademacher variance per probe <= 2 ||G^T H G||_F^2; 4000 probes: a few percent
    assert torch.allclose(est, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())


def test_es_gradient_reaches_v_parameters_through_grad_and_hessian():
    # d/dtheta of the ES loss vs central finite differences in float64; the legacy switch
    # (official code: detached grad/Hessian) must give a different gradient (regression test)
    torch.manual_seed(3)
    d = 2
    V = DiagQuadLyapunov(d, (5,)).double()
    u = ZeroPreservingMLP(d, (5,)).double()
    x = torch.randn(40, d, dtype=D64) * 2
    F = torch.stack([x[:, 1], -x[:, 0] - x[:, 1]], 1)

    def loss(legacy=False):
        G = torch.stack([torch.zeros_like(x[:, 0]), -3 * x[:, 0] + 2.15 * x[:, 1]], 1) + u(x)
        t = generator(V, x, F, G, legacy_detached_hessian=legacy)
        return (2.1 * t.LV / t.V - (t.VG**2).sum(-1) / t.V**2).mean()  # smooth: no ReLU

    p = V.net[0].weight
    g_auto = torch.autograd.grad(loss(), p)[0]
    g_legacy = torch.autograd.grad(loss(True), p)[0]
    fd = torch.zeros_like(p)
    h = 1e-6
    with torch.no_grad():
        for idx in [(0, 0), (1, 1), (2, 0), (4, 1)]:
            p[idx] += h
            lp = loss().item()
            p[idx] -= 2 * h
            lm = loss().item()
            p[idx] += h
            fd[idx] = (lp - lm) / (2 * h)
    for idx in [(0, 0), (1, 1), (2, 0), (4, 1)]:
        assert abs(g_auto[idx] - fd[idx]) <= 1e-5 * (1 + abs(fd[idx])), (idx, g_auto[idx], fd[idx])
    assert (g_auto - g_legacy).abs().max() > 1e-3  # the legacy path misses the grad/Hessian terms
    # and the controller gets a gradient too
    gu = torch.autograd.grad(loss(), list(u.parameters()))
    assert all(torch.isfinite(g).all() for g in gu) and any(g.abs().sum() > 0 for g in gu)


def test_controllers_vanish_at_origin():
    torch.manual_seed(0)
    z = torch.zeros(3, 4, dtype=D64)
    for u in (ZeroPreservingMLP(4).double(), DifferenceMLP(4).double(), LinearGain(4).double(),
              ZeroPreservingMLP(4, noise_dim=2).double(), DifferenceMLP(4, noise_dim=2).double()):
        out = u(z)
        assert out.abs().max() == 0
    assert ZeroPreservingMLP(4, noise_dim=2)(torch.randn(3, 4)).shape == (3, 4, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\)"):
        ZeroPreservingMLP(4)(torch.randn(3, 5))


def test_lyapunov_zero_at_origin_and_lower_bound():
    torch.manual_seed(0)
    x = torch.randn(500, 3, dtype=D64) * 3
    for V in _small_nets(3):
        assert abs(float(V(torch.zeros(1, 3, dtype=D64)).detach()[0])) < 1e-14
        eps = V.eps if hasattr(V, "eps") else V.l
        assert (V(x) >= eps * (x * x).sum(-1) - 1e-12).all()


def test_smooth_relu_is_c2():
    d = 0.1
    r = torch.tensor([0.0, d], dtype=D64)
    h = 1e-5
    s = lambda t: smooth_relu(t, d)  # noqa: E731
    for r0 in r:
        left, right = r0 - h, r0 + h
        d1 = lambda t: (s(t + h) - s(t - h)) / (2 * h)  # noqa: E731
        # value and first derivative continuous: one-sided limits agree
        assert abs(s(left) - s(right)) < 3 * h
        assert abs(d1(left - h) - d1(right + h)) < 1e-3
        # second derivative continuous: one-sided second differences agree (both ~0 at 0 and d)
        d2l = (s(left) - 2 * s(left - h) + s(left - 2 * h)) / h**2
        d2r = (s(right + 2 * h) - 2 * s(right + h) + s(right)) / h**2
        # s'' -> 0 from both sides (one-sided differences are O(h/d^2) = 0.012 here); a C1
        # ReHU (quadratic piece r^2/(2d)) would jump by 1/d = 10 at 0
        assert abs(d2l - d2r) < 0.05
    # and the pieces: s(d) = d/2, s'(d) = 1, s(r) = r - d/2 beyond
    assert abs(float(s(torch.tensor(d, dtype=D64))) - d / 2) < 1e-15
    assert abs(float(s(torch.tensor(1.0, dtype=D64))) - (1 - d / 2)) < 1e-15
    # its second derivative jumps for the C1 ReHU (quadratic piece) but not here: check s'' at d- is ~0
    t = torch.tensor(d - 1e-3, dtype=D64, requires_grad=True)
    (g1,) = torch.autograd.grad(s(t), t, create_graph=True)
    (g2,) = torch.autograd.grad(g1, t)
    assert abs(float(g2)) < 0.7  # s'' = (12 d r - 12 r^2)/(2 d^3) -> 0 at r = d (= 0.594 at r = d - 1e-3)


def test_icnn_is_convex_midpoint():
    torch.manual_seed(2)
    V = ICNNLyapunov(3, (8, 8, 1)).double()
    with torch.no_grad():
        for p in V.parameters():
            p.mul_(3.0)
    a, b = torch.randn(2000, 3, dtype=D64) * 4, torch.randn(2000, 3, dtype=D64) * 4
    gap = 0.5 * (V(a) + V(b)) - V(0.5 * (a + b))
    assert gap.min() >= -1e-12


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="alpha"):
        as_loss(x, x, x, 1.2)
    with pytest.raises(ValueError, match="alpha"):
        as_loss(x, x, x, 0.0)
    with pytest.raises(ValueError, match=r"F must have the shape of x"):
        as_loss(x, x[:, :1], x, 0.5)
    with pytest.raises(ValueError, match=r"G must have shape"):
        as_loss(x, x, torch.randn(4, 3), 0.5)
    V, LV, VG = torch.ones(4), torch.ones(4), torch.ones(4, 1)
    with pytest.raises(ValueError, match="b = 0"):
        es_loss(V, LV, VG, b=0.0)
    with pytest.raises(ValueError, match="b = -1"):
        es_loss(V, LV, VG, b=-1.0)
    with pytest.raises(ValueError, match=r"LV must have the shape of V"):
        es_loss(V, torch.ones(3), VG)
    with pytest.raises(ValueError, match=r"G must have shape"):
        generator(Square().float(), x, x, torch.randn(5, 2))
