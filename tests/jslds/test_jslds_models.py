"""Mathematics of the cells, the expansion net, the JSLDS recurrence and the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auxfn.jslds import (
    JSLDS,
    ExpansionNet,
    GRUCell,
    LossWeights,
    StaticChannels,
    TorchCell,
    Trajectories,
    VanillaRNNCell,
    cell_jacobians,
    cell_jvp,
    jslds_losses,
)

torch.set_default_dtype(torch.float32)




def _cells(n=5, u=3):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "vanilla-tanh": VanillaRNNCell(n, u, "tanh", generator=g),
        "vanilla-relu": VanillaRNNCell(n, u, "relu", generator=g),
        "gru": GRUCell(n, u, gate_bias=0.3, generator=g),
        "torch-gru": TorchCell(nn.GRUCell(u, n)),
        "torch-rnn": TorchCell(nn.RNNCell(u, n)),
    }


def _explicit_jacobians(cell, h, x):
    """Reference: per-sample Jacobians from reverse-mode autograd, one point at a time."""
    jh, jx = [], []
    for i in range(h.shape[0]):
        a, b = torch.autograd.functional.jacobian(lambda hh, xx: cell(hh[None], xx[None])[0], (h[i], x[i]))
        jh.append(a)
        jx.append(b)
    return torch.stack(jh), torch.stack(jx)


@pytest.mark.parametrize("name", ["vanilla-tanh", "vanilla-relu", "gru", "torch-gru", "torch-rnn"])
def test_jvp_equals_explicit_jacobian_products_float64(name):
    cell = _cells()[name].double()
    g = torch.Generator().manual_seed(1)
    h, x = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    dh, dx = torch.randn_like(h), torch.randn_like(x)
    jh, jx = _explicit_jacobians(cell, h, x)
    want = torch.einsum("bij,bj->bi", jh, dh) + torch.einsum("bij,bj->bi", jx, dx)
    f, got = cell_jvp(cell, h, x, dh, dx)
    torch.testing.assert_close(f, cell(h, x), rtol=0, atol=1e-14)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # autograd forward mode on the same cell gives the same product as the analytic override
    f2, auto = torch.func.jvp(cell, (h, x), (dh, dx))
    torch.testing.assert_close(auto, got, rtol=1e-12, atol=1e-12)
    # full Jacobians (closed form or vmapped JVPs) equal the reference
    ch, cx = cell_jacobians(cell, h, x)
    torch.testing.assert_close(ch, jh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cx, jx, rtol=1e-12, atol=1e-12)


def test_builtin_cells_have_analytic_jvp_and_official_init():
    n, u = 400, 6
    gru = GRUCell(n, u, generator=torch.Generator().manual_seed(0))
    # recurrent blocks N(0,1)*0.9/sqrt(n), input blocks N(0,1)/sqrt(u), zero biases
    assert abs(gru.w_rz_h.std().item() - 0.9 / n**0.5) < 0.02 * 0.9 / n**0.5 * 5
    assert abs(gru.w_c_x.std().item() - 1 / u**0.5) < 0.1 / u**0.5 * 5
    assert gru.b_rz.abs().sum() == 0 and gru.b_c.abs().sum() == 0
    van = VanillaRNNCell(n, u, identity_recurrent=True)
    torch.testing.assert_close(van.w_h, 0.9 * torch.eye(n))
    assert "jvp" in type(gru).__dict__ and "jvp" in type(van).__dict__


def test_zero_initialised_expansion_is_tanh_tanh():
    E = ExpansionNet(6, 2)
    a = torch.randn(4, 9, 6)
    torch.testing.assert_close(E(a), torch.tanh(torch.tanh(a)), rtol=0, atol=0)


def _small_model(dtype=torch.float64, cell="gru"):
    g = torch.Generator().manual_seed(3)
    c = GRUCell(4, 2, generator=g) if cell == "gru" else VanillaRNNCell(4, 2, generator=g)
    E = ExpansionNet(4, 2)
    with torch.no_grad():  # not zero, so that gradients reach every weight of E
        for p in E.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return JSLDS(c, E, n_out=2, x_star=torch.tensor([0.2, -0.1]), generator=g).to(dtype)


def test_gradients_through_the_jvp_match_finite_differences():
    model = _small_model()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    y = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    w = LossWeights(rnn=1.0, jslds=1.0, fixed_point=5.0, approx=2.0)

    def loss():
        return jslds_losses(model(x), y, None, w)["total"]

    model.zero_grad()
    loss().backward()
    checked = 0
    for name in ["cell.w_c_h", "cell.w_rz_h", "cell.w_rz_x", "expansion.layers.0.weight", "expansion.layers.1.bias", "h0"]:
        p = dict(model.named_parameters())[name]
        flat = p.data.view(-1)
        for idx in (0, flat.numel() // 2, flat.numel() - 1):
            old = flat[idx].item()
            eps = 1e-6
            with torch.no_grad():
                flat[idx] = old + eps
                up = loss().item()
                flat[idx] = old - eps
                down = loss().item()
                flat[idx] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - p.grad.view(-1)[idx].item()) < 1e-7 * max(1.0, abs(fd)), (name, idx, fd, p.grad.view(-1)[idx].item())
            checked += 1
    assert checked == 18


class LinearCell(nn.Module):
    """F(h, x) = h A + x B + c: the Taylor expansion of a linear map is exact."""

    def __init__(self, n, u, g):
        super().__init__()
        self.n_state, self.n_input = n, u
        self.A = nn.Parameter(0.5 * torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5)
        self.B = nn.Parameter(torch.randn(u, n, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, h, x):
        return h @ self.A + x @ self.B + self.c


class ConstantPoint(nn.Module):
    def __init__(self, point):
        super().__init__()
        self.point = point

    def forward(self, a):
        return self.point.expand_as(a)


def test_exactness_invariant_linear_cell_with_true_fixed_point():
    g = torch.Generator().manual_seed(5)
    n, u = 6, 3
    cell = LinearCell(n, u, g)
    x_star = torch.randn(u, generator=g, dtype=torch.float64)
    with torch.no_grad():  # h* = h* A + x* B + c  =>  h* = (x* B + c)(I - A)^-1
        h_star = torch.linalg.solve((torch.eye(n, dtype=torch.float64) - cell.A).T, x_star @ cell.B + cell.c)
    model = JSLDS(cell, ConstantPoint(h_star), n_out=2, x_star=x_star, generator=g).double()
    x = torch.randn(4, 10, u, generator=g, dtype=torch.float64)
    tr = model(x)
    torch.testing.assert_close(tr.a, tr.h, rtol=0, atol=1e-12)
    torch.testing.assert_close(tr.y_jslds, tr.y_rnn, rtol=0, atol=1e-12)
    losses = jslds_losses(tr, torch.zeros_like(tr.y_rnn), None, LossWeights())
    assert losses["fixed_point"].item() < 1e-28 and losses["approx"].item() < 1e-24
    # and the invariant is sharp: a non-fixed expansion point breaks it
    bad = JSLDS(cell, ConstantPoint(h_star + 0.1), n_out=2, x_star=x_star).double()
    bad.load_state_dict(model.state_dict())
    assert (bad(x).a - bad(x).h).abs().max() > 1e-3


def test_shapes_loss_keys_and_masks():
    model = _small_model(torch.float32)
    x = torch.randn(3, 6, 2)
    tr = model(x)
    for f in ("h", "a", "e", "F_e"):
        assert getattr(tr, f).shape == (3, 6, 4)
    assert tr.y_rnn.shape == tr.y_jslds.shape == (3, 6, 2)
    y = torch.randn(3, 6, 2)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[:, 2:] = True
    losses = jslds_losses(tr, y, mask, LossWeights(l2=1e-3), params=model.parameters())
    assert set(losses) == {"total", "rnn", "jslds", "fixed_point", "approx", "l2"}
    # the mean over masked steps, written out
    want = ((tr.y_rnn - y) ** 2)[:, 2:].mean()
    torch.testing.assert_close(losses["rnn"], want)
    y2 = y.clone()
    y2[:, :2] += 100.0  # masked steps do not count
    assert torch.equal(jslds_losses(tr, y2, mask)["rnn"], losses["rnn"])
    y2[:, 3] += 1.0
    assert jslds_losses(tr, y2, mask)["rnn"] > losses["rnn"]
    total = sum(getattr(LossWeights(l2=1e-3), k) * losses[k] for k in ("rnn", "jslds", "fixed_point", "approx", "l2"))
    torch.testing.assert_close(losses["total"], total)
    s = jslds_losses(tr, y, mask, reduction="sum")
    torch.testing.assert_close(s["rnn"], ((tr.y_rnn - y) ** 2)[:, 2:].sum() / 3)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_trajectory_terms_values_gradients_and_double_backward(reduction):
    # fixed_point and approx go through a Function with its own backward: values, first and second
    # derivatives against the closed forms / autograd of the written-out expression, in float64
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 4, 5, generator=g, dtype=torch.float64).transpose(0, 1).requires_grad_()  # (B, T, n) view
    b = torch.randn(6, 4, 5, generator=g, dtype=torch.float64).transpose(0, 1).requires_grad_()
    y = torch.zeros(4, 6, 2, dtype=torch.float64)
    tr = Trajectories(h=a, a=b, e=b, F_e=a, y_rnn=y, y_jslds=y)
    w = LossWeights(0, 0, 1, 0)
    loss = jslds_losses(tr, y, None, w, reduction=reduction)
    ref = ((a - b) ** 2).sum() / (4 if reduction == "sum" else a.numel())
    torch.testing.assert_close(loss["fixed_point"], ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(loss["approx"], ref, rtol=1e-14, atol=0)
    ga, gb = torch.autograd.grad(loss["total"], (a, b), create_graph=True)
    want = 2 * (a - b).detach() * (ref / ((a - b) ** 2).sum()).detach()
    torch.testing.assert_close(ga, want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(gb, -want, rtol=1e-13, atol=1e-15)
    # the gradient keeps the trajectories' (T, B, n) memory order, which the sequence kernels read
    assert ga.transpose(0, 1).is_contiguous() and gb.transpose(0, 1).is_contiguous()
    # second derivative: d/da of sum(ga * v) is c * v with c = 2 / N (or 2 / B)
    v = torch.randn(a.shape, generator=g, dtype=torch.float64)
    (hess_v,) = torch.autograd.grad((ga * v).sum(), a)
    torch.testing.assert_close(hess_v, v * 2 * (ref / ((a - b) ** 2).sum()).item(), rtol=1e-13, atol=1e-15)
    assert torch.autograd.gradcheck(lambda p, q: jslds_losses(Trajectories(p, q, q, p, y, y), y, None, w,
                                                              reduction=reduction)["total"], (a.detach().requires_grad_(),
                                                                                              b.detach().requires_grad_()))


def test_rnn_only_forward_and_weights_must_match():
    model = _small_model(torch.float32)
    x = torch.randn(2, 4, 2)
    tr = model(x, run_jslds=False)
    assert tr.a is None and tr.e is None
    torch.testing.assert_close(tr.h, model(x).h)
    out = jslds_losses(tr, torch.zeros(2, 4, 2), None, LossWeights(1, 0, 0, 0))
    assert out["fixed_point"] == 0 and out["jslds"] == 0
    with pytest.raises(ValueError, match="fixed_point"):
        jslds_losses(tr, torch.zeros(2, 4, 2), None, LossWeights(1, 0, 1, 0))


def test_callable_x_star_and_linear_system():
    cell = VanillaRNNCell(5, 4)
    model = JSLDS(cell, n_out=1, x_star=StaticChannels([2, 3]))
    x = torch.randn(3, 5, 4)
    xs = model.x_star(x)
    assert torch.equal(xs[..., :2], torch.zeros(3, 5, 2)) and torch.equal(xs[..., 2:], x[..., 2:])
    # the JSLDS step uses x*: it equals e + J_h(a - e) + J_x(x - x*) with explicit Jacobians
    tr = model(x)
    a_prev = tr.a[:, 1]
    e = model.expansion(a_prev)
    jh, jx = model.linear_system(e, xs[:, 2])
    want = e + torch.einsum("bij,bj->bi", jh, a_prev - e) + torch.einsum("bij,bj->bi", jx, x[:, 2] - xs[:, 2])
    torch.testing.assert_close(tr.a[:, 2], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="depends on the input"):
        model.linear_system(e)


def test_dimension_errors_are_clear():
    cell = GRUCell(4, 6)
    with pytest.raises(ValueError, match=r"x_star must have shape \(6,\)"):
        JSLDS(cell, n_out=3, x_star=torch.zeros(4))
    model = JSLDS(cell, n_out=3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, 6\)"):
        model(torch.zeros(2, 5, 4))
    with pytest.raises(TypeError, match="TorchCell"):
        JSLDS(nn.GRUCell(6, 4), n_out=3)
    tr = model(torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="y must have the readout's shape"):
        jslds_losses(tr, torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="mask must be a boolean"):
        jslds_losses(tr, torch.zeros(2, 5, 3), torch.ones(2, 5))


@pytest.mark.parametrize("cell_name", ["gru", "vanilla"])
def test_projected_fast_path_equals_the_plain_cell_calls(cell_name):
    """JSLDS.forward's input-projected path gives the same trajectories as per-step cell calls."""
    model = _small_model(torch.float64, cell=cell_name)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    fast = model(x)

    class Plain(nn.Module):  # the same cell without the projected form
        def __init__(self, c):
            super().__init__()
            self.c, self.n_state, self.n_input = c, c.n_state, c.n_input

        def forward(self, h, x):
            return self.c(h, x)

    slow_model = JSLDS(Plain(model.cell), model.expansion, n_out=2, x_star=model.x_star_const).double()
    slow_model.readout, slow_model.h0 = model.readout, model.h0
    slow = slow_model(x)
    for f in ("h", "a", "e", "F_e", "y_rnn", "y_jslds"):
        torch.testing.assert_close(getattr(fast, f), getattr(slow, f), rtol=1e-12, atol=1e-12)


def test_bad_x_star_callable_is_a_clear_error():
    model = JSLDS(VanillaRNNCell(5, 4), n_out=1, x_star=lambda x: x[..., :2])
    with pytest.raises(ValueError, match=r"x_star callable must return a tensor of shape \(2, 3, 4\)"):
        model(torch.zeros(2, 3, 4))
