"""The fused training path (projected inputs, stacked primal/tangent matmuls, folded E) equals the
plain per-step computation, values and gradients, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auxfn.jslds import (
    JSLDS,
    ExpansionNet,
    GRUCell,
    LossWeights,
    VanillaRNNCell,
    cell_jvp,
    jslds_losses,
)


def _cell(name: str, g):
    if name == "gru":
        return GRUCell(5, 3, gate_bias=0.7, generator=g).double()
    return VanillaRNNCell(5, 3, name.split("-")[1], generator=g).double()


@pytest.mark.parametrize("name", ["gru", "vanilla-tanh", "vanilla-relu"])
def test_fused_jvp_equals_forward_and_jvp(name):
    g = torch.Generator().manual_seed(0)
    cell = _cell(name, g)
    B = 4
    h, e, de = (torch.randn(B, 5, generator=g, dtype=torch.float64) for _ in range(3))
    x, xs, dx = (torch.randn(B, 3, generator=g, dtype=torch.float64) for _ in range(3))
    bias = cell.input_bias()
    P = torch.cat([cell.project_inputs(x) + bias, cell.project_inputs(xs) + bias, cell.project_inputs(dx)])
    f, d = cell.fused_jvp_px(torch.cat([h, e, de]), P, B)
    f_e, d_ref = cell_jvp(cell, e, xs, de, dx)
    torch.testing.assert_close(f[:B], cell(h, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f[B:], f_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d, d_ref, rtol=1e-12, atol=1e-12)
    # without the RNN rows (JSLDS only) and as a plain step
    f2, d2 = cell.fused_jvp_px(torch.cat([e, de]), P[B:], B)
    torch.testing.assert_close(f2, f_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d2, d_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cell.forward_px(h, P[:B]), cell(h, x), rtol=1e-12, atol=1e-12)


def test_folded_expansion_equals_forward():
    g = torch.Generator().manual_seed(1)
    E = ExpansionNet(6, 3).double()
    with torch.no_grad():
        for p in E.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g))
    a = torch.randn(7, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(E.folded()(a), E(a), rtol=1e-12, atol=1e-12)


class _Plain(nn.Module):
    """The same cell seen through its call signature only (no projected form, no analytic JVP)."""

    def __init__(self, c):
        super().__init__()
        self.c, self.n_state, self.n_input = c, c.n_state, c.n_input

    def forward(self, h, x):
        return self.c(h, x)


@pytest.mark.parametrize("name", ["gru", "vanilla-tanh"])
@pytest.mark.parametrize("run_rnn", [True, False])
def test_fast_path_gradients_equal_the_plain_path(name, run_rnn):
    g = torch.Generator().manual_seed(2)
    cell = _cell(name, g)
    E = ExpansionNet(5, 2).double()
    with torch.no_grad():
        for p in E.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    x_star = lambda x: torch.cat([x[..., :1], torch.zeros_like(x[..., 1:])], -1)  # noqa: E731
    fast = JSLDS(cell, E, n_out=2, x_star=x_star, generator=g).double()
    slow = JSLDS(_Plain(cell), E, n_out=2, x_star=x_star).double()
    slow.readout, slow.h0 = fast.readout, fast.h0
    x = torch.randn(3, 6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    w = LossWeights(rnn=1.0 if run_rnn else 0.0, jslds=1.0, fixed_point=5.0, approx=2.0 if run_rnn else 0.0)
    grads = []
    for model in (fast, slow):
        model.zero_grad()
        tr = model(x, run_rnn=run_rnn)
        jslds_losses(tr, y, None, w)["total"].backward()
        grads.append({k: p.grad.clone() for k, p in fast.named_parameters() if p.grad is not None})
        if model is fast:
            ref = tr
    assert set(grads[0]) == set(grads[1]) and len(grads[0]) >= 8
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-12, msg=k)
    assert (ref.h is None) == (not run_rnn)
