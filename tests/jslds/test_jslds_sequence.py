"""The whole-sequence Function (hand-written BPTT, auxfn.jslds.fused): gradcheck in float64, and the
same loss and parameter gradients as the per-step autograd path in float32 and float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from auxfn.jslds import JSLDS, ExpansionNet, GRUCell, LossWeights, VanillaRNNCell, jslds_losses
from auxfn.jslds.fused import SequenceSpec, sequence_forward


def _cell(kind: str, n: int, u: int, g, dtype=torch.float64):
    if kind == "gru":
        return GRUCell(n, u, gate_bias=0.3, generator=g).to(dtype)
    return VanillaRNNCell(n, u, kind, generator=g).to(dtype)


def _randomise(module: nn.Module, g, scale=0.4):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("rnn,jslds", [(True, True), (False, True), (True, False)])
def test_sequence_function_gradcheck(kind, rnn, jslds):
    g = torch.Generator().manual_seed(0)
    B, n, u, T, L = 2, 3, 2, 3, 2
    rows = (B if rnn else 0) + (2 * B if jslds else 0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    s0 = r(B, n)
    X = torch.randn(T, rows, u + 1, generator=g, dtype=torch.float64)
    X[:, : rows - (B if jslds else 0), u] = 1.0
    if jslds:
        X[:, rows - B :, u] = 0.0
    wa = r(n + u + 1, 2 * n if kind == "gru" else n)
    wb = r(n + u + 1, n) if kind == "gru" else None
    E = [(r(n), r(n, n)) for _ in range(L)] if jslds else []
    spec = SequenceSpec(kind, rnn, jslds, L)
    flatE = [t for pair in E for t in pair]

    def fn(s0, wa, *rest):
        wb_ = rest[0] if kind == "gru" else None
        tail = rest[1:] if kind == "gru" else rest
        pairs = list(zip(tail[0::2], tail[1::2], strict=True))
        h, F_e, A, Eo = sequence_forward(spec, s0, X, wa, wb_, pairs)
        return (h, F_e, A, Eo) if rnn and jslds else ((F_e, A, Eo) if jslds else h)

    inputs = (s0, wa, *([wb] if kind == "gru" else []), *flatE)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def _models(kind, n, u, o, dtype, g, x_star=None, cell_noise=0.2, expansion_noise=0.3):
    cell = _cell(kind, n, u, g, dtype)
    if cell_noise:
        _randomise(cell, g, cell_noise)
    E = ExpansionNet(n, 2).to(dtype)
    _randomise(E, g, expansion_noise)
    fast = JSLDS(cell, E, n_out=o, x_star=x_star, generator=g).to(dtype)
    slow = JSLDS(cell, E, n_out=o, x_star=x_star, fused=False).to(dtype)
    slow.readout, slow.h0 = fast.readout, fast.h0
    assert fast.sequence_kind() == kind and slow.sequence_kind() is None
    return fast, slow


def _loss_and_grads(model, x, y, mask, w, run_rnn=True):
    model.zero_grad()
    tr = model(x, run_rnn=run_rnn, run_jslds=w.needs_jslds)
    losses = jslds_losses(tr, y, mask, w, params=list(model.parameters()) if w.l2 > 0 else None)
    losses["total"].backward()
    return tr, losses, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
def test_sequence_path_equals_autograd_path_float32(kind):
    """In float32 at the quick preset's shapes (n=64, B=16, T=25, context-style x*, official cell
    initialisation, E perturbed by N(0, 0.05^2)): every loss term agrees to 1e-6 relative; every
    parameter gradient to 5e-6 and the trajectories to 1e-5 relative to the tensor's largest entry
    (measured: gradients within 1.6e-6, trajectories within 3.5e-6; the two paths sum in different
    orders). Against a float64 computation, the fused float32 values and gradients are as accurate
    as the autograd path's float32 ones (within 2x + 1e-6)."""
    g = torch.Generator().manual_seed(1)
    n, u, o, B, T = 64, 6, 3, 16, 25
    x_star = lambda x: torch.cat([torch.zeros_like(x[..., :2]), x[..., 2:4], torch.zeros_like(x[..., 4:])], -1)  # noqa: E731
    fast, slow = _models(kind, n, u, o, torch.float32, g, x_star, cell_noise=0.0, expansion_noise=0.05)
    x = torch.randn(B, T, u, generator=g)
    y = torch.randn(B, T, o, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.3
    w = LossWeights(3, 1, 100, 10, 1e-5)
    tr_f, l_f, g_f = _loss_and_grads(fast, x, y, mask, w)
    tr_s, l_s, g_s = _loss_and_grads(slow, x, y, mask, w)
    for key in ("total", "rnn", "jslds", "fixed_point", "approx", "l2"):
        assert abs(l_f[key].item() - l_s[key].item()) <= 1e-6 * abs(l_s[key].item()), key
    ref = copy.deepcopy(slow).double()
    tr_64, _, g_64 = _loss_and_grads(ref, x.double(), y.double(), mask, w)
    for name in ("h", "a", "e", "F_e"):
        f32, s32, f64 = getattr(tr_f, name), getattr(tr_s, name), getattr(tr_64, name)
        assert _rel(f32, s32) <= 1e-5, name
        assert _rel(f32, f64) <= 2 * _rel(s32, f64) + 1e-6, name
    assert set(g_f) == set(g_s) and len(g_f) == len(list(fast.parameters()))
    for k in g_f:
        assert _rel(g_f[k], g_s[k]) <= 5e-6, k
        assert _rel(g_f[k], g_64[k]) <= 2 * _rel(g_s[k], g_64[k]) + 1e-6, k


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("run_rnn,jslds_w", [(True, True), (False, True), (True, False)])
def test_sequence_path_equals_autograd_path_float64(kind, run_rnn, jslds_w):
    g = torch.Generator().manual_seed(2)
    fast, slow = _models(kind, 5, 3, 2, torch.float64, g)
    x = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(3, 7, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=g) > 0.4
    if jslds_w:
        w = LossWeights(1.0 if run_rnn else 0.0, 1.0, 5.0, 2.0 if run_rnn else 0.0)
    else:
        w = LossWeights(1.0, 0.0, 0.0, 0.0)
    tr_f, l_f, g_f = _loss_and_grads(fast, x, y, mask, w, run_rnn)
    tr_s, l_s, g_s = _loss_and_grads(slow, x, y, mask, w, run_rnn)
    torch.testing.assert_close(l_f["total"], l_s["total"], rtol=1e-12, atol=1e-13)
    assert set(g_f) == set(g_s) and len(g_f) >= 4
    for k in g_f:
        torch.testing.assert_close(g_f[k], g_s[k], rtol=1e-10, atol=1e-12, msg=k)
    assert (tr_f.h is None) == (not run_rnn) and (tr_f.a is None) == (not jslds_w)


def test_subclasses_and_custom_expansion_use_autograd():
    class Changed(GRUCell):
        def forward(self, h, x):
            return super().forward(h, x) * 0.5

    assert Changed(4, 2).sequence_kind() is None
    assert GRUCell(4, 2).sequence_kind() == "gru"
    assert VanillaRNNCell(4, 2, "relu").sequence_kind() == "relu"

    class MyE(ExpansionNet):
        pass

    assert JSLDS(GRUCell(4, 2), MyE(4), n_out=1).sequence_kind() is None
    assert JSLDS(GRUCell(4, 2), n_out=1, fused=False).sequence_kind() is None
    assert JSLDS(GRUCell(4, 2), n_out=1).sequence_kind() == "gru"


def test_sequence_spec_validates():
    with pytest.raises(ValueError, match="cell"):
        SequenceSpec("lstm", True, True, 2)
    with pytest.raises(ValueError, match="at least one"):
        SequenceSpec("gru", False, False, 2)


def test_training_on_the_fused_and_autograd_paths_agree(tmp_path):
    """Thirty training steps (Adam, clipping, fresh batches) on either path: the same losses."""
    from dataclasses import replace

    from auxfn.jslds.train import PRESETS, train

    cfg = replace(PRESETS["quick-flipflop"].config, n_state=8, batch_size=8, steps=30, eval_every=30,
                  checkpoint_every=30, log_every=10)
    res = [train(replace(cfg, fused=f), out=tmp_path / str(f)) for f in (True, False)]
    a, b = res[0].summary, res[1].summary
    for key in ("final_loss", "mse_rnn", "mse_jslds", "relative_error", "fixed_point_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert res[0].model.sequence_kind() == "gru" and res[1].model.sequence_kind() is None


@pytest.mark.slow
def test_compiled_loss_gradients_equal_eager():
    """One compiled forward + backward of the per-step path, as train(compile=True) runs it (E unfolded,
    inductor's C++ wrapper, the compiled function returning every loss term), gives the eager
    gradients of every parameter. With the folded E and every term returned, torch 2.13's inductor
    gave wrong gradients (training diverged from the second step), which is why the compiled path
    unfolds E."""
    g = torch.Generator().manual_seed(0)
    task = __import__("auxfn.jslds", fromlist=["FlipFlopTask"]).FlipFlopTask(T=8)
    model = JSLDS(GRUCell(8, 6, generator=g), n_out=3, fused=False, generator=g)
    _randomise(model.expansion, g, 0.1)
    model.fold_expansion = False
    w = LossWeights(3, 1, 100, 10)
    x, y, mask = task.sample(8, torch.Generator().manual_seed(1))

    def f(x, y, mask):
        return jslds_losses(model(x), y, mask, w)

    from auxfn.jslds.train import compile_loss

    grads = []
    for fn in (f, compile_loss(f)):  # the C++ wrapper, as train(compile=True) compiles
        model.zero_grad()
        fn(x, y, mask)["total"].backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        assert _rel(grads[1][k], grads[0][k]) <= 1e-5, k


@pytest.mark.slow
def test_training_with_torch_compile(tmp_path):
    """compile=True: the per-step loss under torch.compile trains to the same losses and reports its
    compile time (slow: compiling the unrolled loop takes tens of seconds)."""
    from dataclasses import replace

    from auxfn.jslds.train import PRESETS, train

    cfg = replace(PRESETS["quick-flipflop"].config, n_state=8, batch_size=8, T=8, steps=10, eval_every=10,
                  checkpoint_every=10, log_every=5)
    a = train(cfg, out=tmp_path / "eager").summary
    res = train(replace(cfg, compile=True), out=tmp_path / "compiled")
    b = res.summary
    assert b["compile_seconds"] > 0 and "compile_seconds" not in a
    assert not res.model.fused and not res.model.fold_expansion
    for key in ("final_loss", "mse_rnn", "mse_jslds", "relative_error"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_tanh_of_doubled_equals_tanh():
    """The whole-sequence path's tanh, 2 sigmoid(2z) - 1 in place, is tanh: to rounding in float64
    and within a few float32 ulps of 1 (absolute) in float32, over the range where tanh is not flat."""
    from auxfn.jslds.fused import _tanh_of_doubled_

    z64 = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    assert (_tanh_of_doubled_(2 * z64) - torch.tanh(z64)).abs().max().item() < 1e-15
    z32 = z64.float()
    err = (_tanh_of_doubled_(2 * z32).double() - torch.tanh(z64)).abs().max().item()
    assert err < 4 * torch.finfo(torch.float32).eps
    x = 2 * z32
    out = _tanh_of_doubled_(x)
    assert out.data_ptr() == x.data_ptr()  # in place


@pytest.mark.parametrize("kind", ["gru", "tanh"])
@pytest.mark.parametrize("run_rnn,run_jslds", [(True, True), (False, True), (True, False)])
def test_sequence_path_with_expanded_incoming_gradients(kind, run_rnn, run_jslds):
    """A loss that sums the trajectories hands the Function stride-0 (expanded) gradients, which
    the backward must read without writing into them: same gradients as per-step autograd."""
    g = torch.Generator().manual_seed(3)
    fast, slow = _models(kind, 5, 3, 2, torch.float64, g)
    x = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    grads = []
    for model in (fast, slow):
        model.zero_grad()
        tr = model(x, run_rnn=run_rnn, run_jslds=run_jslds)
        parts = [t for t in (tr.h, tr.a, tr.e, tr.F_e) if t is not None]
        sum((i + 1) * t.sum() for i, t in enumerate(parts)).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1])
    for k in grads[1]:
        assert _rel(grads[0][k], grads[1][k]) < 1e-10, k
