"""The native (C++) whole-sequence kernel (auxfn.jslds.native): the same outputs and gradients as the
Python Function (auxfn.jslds.fused) for every cell kind, recurrence and expansion depth; gradcheck;
training with native=True equals native=False; a failed build warns once and falls back."""

from __future__ import annotations

import itertools
import shutil
import warnings
from dataclasses import replace

import pytest
import torch

from auxfn.jslds import JSLDS, ExpansionNet, GRUCell, VanillaRNNCell
from auxfn.jslds import native as native_mod
from auxfn.jslds.fused import SequenceSpec
from auxfn.jslds.fused import sequence_forward as python_sequence_forward


def _compiler() -> str | None:
    import os

    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="session")
def built():
    """Build (or load the cached build of) the kernel once per session; the first build takes tens of
    seconds. A compiler that is present but fails to build it is a failure, not a skip."""
    if _compiler() is None:
        pytest.skip("no C++ compiler on this machine: the native kernel cannot be built")
    ok = native_mod.load_native()
    assert ok, f"native kernel failed to build: {native_mod.build_info()['reason']}"
    return native_mod.build_info()


def _problem(kind, rnn, jslds, L, dtype, *, B=5, n=7, u=3, T=6, seed=0, scale=0.5):
    """Random stacked inputs and weights in the layout ``sequence_forward`` takes."""
    g = torch.Generator().manual_seed(seed)
    rows = (B if rnn else 0) + (2 * B if jslds else 0)

    def r(*s):
        return (scale * torch.randn(*s, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()

    s0 = r(B, n)
    X = torch.randn(T, rows, u + 1, generator=g, dtype=torch.float64).to(dtype)
    X[:, : rows - (B if jslds else 0), u] = 1.0  # primal rows carry the bias column
    if jslds:
        X[:, rows - B :, u] = 0.0  # tangent rows do not
    wa = r(n + u + 1, 2 * n if kind == "gru" else n)
    wb = r(n + u + 1, n) if kind == "gru" else None
    E = [(r(n), r(n, n)) for _ in range(L)] if jslds else []
    return SequenceSpec(kind, rnn, jslds, L), s0, X, wa, wb, E


def _run(fn, spec, s0, X, wa, wb, E, seed=1):
    """Outputs, and the gradients of a random linear functional of every output w.r.t. every input."""
    params = [s0, wa, *([wb] if wb is not None else []), *(t for pair in E for t in pair)]
    outs = fn(spec, s0, X, wa, wb, E)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, params)
    return [o.detach() for o in outs], list(grads)


def _rel(a, b) -> float:
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


CASES = list(itertools.product(["gru", "tanh", "relu"], [(True, True), (False, True), (True, False)], [1, 2]))


@pytest.mark.parametrize("kind,rec,L", CASES)
def test_native_equals_python_float64(built, kind, rec, L):
    """Every output and every gradient to 1e-10 relative (no -ffast-math: only rounding differs)."""
    args = _problem(kind, *rec, L, torch.float64)
    (o_p, g_p), (o_n, g_n) = _run(python_sequence_forward, *args), _run(native_mod.sequence_forward, *args)
    for a, b in zip(o_n + g_n, o_p + g_p, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("kind,rec,L", CASES)
def test_native_float32_as_accurate_as_python(built, kind, rec, L):
    """In float32 both paths round differently (the kernel's tanh is libm's, the Python Function's
    2 sigmoid(2z) - 1); against a float64 reference the kernel is at most 2x less accurate than the
    Python Function, or within 1e-5 relative."""
    ref = _run(python_sequence_forward, *_problem(kind, *rec, L, torch.float64))
    p32 = _run(python_sequence_forward, *_problem(kind, *rec, L, torch.float32))
    n32 = _run(native_mod.sequence_forward, *_problem(kind, *rec, L, torch.float32))
    for r, p, n in zip(ref[0] + ref[1], p32[0] + p32[1], n32[0] + n32[1], strict=True):
        assert n.dtype == torch.float32
        assert _rel(n, r) <= max(2 * _rel(p, r), 1e-5)


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("rec", [(True, True), (False, True), (True, False)])
def test_native_gradcheck(built, kind, rec):
    spec, s0, X, wa, wb, E = _problem(kind, *rec, 2, torch.float64, B=2, n=3, u=2, T=3)
    E_flat = [t for pair in E for t in pair]

    def fn(s0, wa, *rest):
        wb_ = rest[0] if kind == "gru" else None
        tail = rest[1:] if kind == "gru" else rest
        pairs = list(zip(tail[0::2], tail[1::2], strict=True))
        outs = native_mod.sequence_forward(spec, s0, X, wa, wb_, pairs)
        return tuple(o for o in outs if o.numel())

    inputs = (s0, wa, *([wb] if wb is not None else []), *E_flat)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_native_with_two_threads_equals_python(built):
    """Blocks large enough for the kernel's row loops to split across threads: still the same values."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for kind in ("gru", "tanh"):
            args = _problem(kind, True, True, 2, torch.float64, B=160, n=40, u=3, T=3)
            (o_p, g_p), (o_n, g_n) = _run(python_sequence_forward, *args), _run(native_mod.sequence_forward, *args)
            for a, b in zip(o_n + g_n, o_p + g_p, strict=True):
                assert _rel(a, b) < 1e-10, kind
    finally:
        torch.set_num_threads(old)


def _model_pair(kind, dtype=torch.float64, n=6, u=3, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cell = (GRUCell(n, u, gate_bias=0.3, generator=g) if kind == "gru" else VanillaRNNCell(n, u, kind, generator=g)).to(dtype)
    E = ExpansionNet(n, 2).to(dtype)
    with torch.no_grad():
        for p in [*cell.parameters(), *E.parameters()]:
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    a = JSLDS(cell, E, n_out=o, generator=g).to(dtype)
    b = JSLDS(cell, E, n_out=o, native=True).to(dtype)
    b.readout, b.h0 = a.readout, a.h0
    return a, b


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("run_rnn,run_jslds", [(True, True), (False, True), (True, False)])
def test_model_native_equals_python_function(built, kind, run_rnn, run_jslds):
    """JSLDS(native=True) against native=False through the model, with a loss that sums the
    trajectories (the kernel receives stride-0 incoming gradients)."""
    py, nat = _model_pair(kind)
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads, trajs = [], []
    for model in (py, nat):
        model.zero_grad()
        tr = model(x, run_rnn=run_rnn, run_jslds=run_jslds)
        parts = [t for t in (tr.h, tr.a, tr.e, tr.F_e, tr.y_rnn, tr.y_jslds) if t is not None]
        sum((i + 1) * t.sum() for i, t in enumerate(parts)).backward()
        trajs.append(parts)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    for a, b in zip(trajs[1], trajs[0], strict=True):
        assert _rel(a, b) < 1e-10
    assert set(grads[0]) == set(grads[1]) and grads[0]
    for k in grads[0]:
        assert _rel(grads[1][k], grads[0][k]) < 1e-10, k


@pytest.mark.parametrize("kind,rec,L", CASES)
def test_kernel_sums_of_the_co_training_terms(built, kind, rec, L):
    """with_sums: [sum (F(e) - e)^2, sum (h - a)^2] equal the sums over the returned trajectories, and
    their gradients (added inside the kernel's backward) equal autograd's through those sums."""
    spec, s0, X, wa, wb, E = _problem(kind, *rec, L, torch.float64)
    params = [s0, wa, *([wb] if wb is not None else []), *(t for pair in E for t in pair)]
    h, F_e, A, Eo, sums = native_mod.sequence_forward(spec, s0, X, wa, wb, E, with_sums=True)
    rnn, jslds = rec
    fp = ((F_e - Eo) ** 2).sum() if jslds else torch.zeros((), dtype=torch.float64)
    ap = ((h - A) ** 2).sum() if rnn and jslds else torch.zeros((), dtype=torch.float64)
    assert sums.shape == (2,) and _rel(sums[0], fp) < 1e-12 and _rel(sums[1], ap) < 1e-12
    if not jslds:
        return
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, generator=g, dtype=torch.float64)
    lin = (w[2] * h).sum() + (w[3] * A).sum() if rnn else (w[3] * A).sum()
    got = torch.autograd.grad(w[0] * sums[0] + w[1] * sums[1] + lin, params)
    h2, F2, A2, E2 = native_mod.sequence_forward(spec, s0, X, wa, wb, E)
    ap2 = ((h2 - A2) ** 2).sum() if rnn else 0.0
    lin2 = (w[2] * h2).sum() + (w[3] * A2).sum() if rnn else (w[3] * A2).sum()
    ref = torch.autograd.grad(w[0] * ((F2 - E2) ** 2).sum() + w[1] * ap2 + lin2, params)
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("kind", ["gru", "tanh"])
def test_kernel_sums_gradcheck(built, kind):
    spec, s0, X, wa, wb, E = _problem(kind, True, True, 2, torch.float64, B=2, n=3, u=2, T=3)
    E_flat = [t for pair in E for t in pair]

    def fn(s0, wa, *rest):
        wb_ = rest[0] if kind == "gru" else None
        tail = rest[1:] if kind == "gru" else rest
        pairs = list(zip(tail[0::2], tail[1::2], strict=True))
        return native_mod.sequence_forward(spec, s0, X, wa, wb_, pairs, with_sums=True)[4]

    inputs = (s0, wa, *([wb] if wb is not None else []), *E_flat)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_on_the_native_sums_equal_the_python_function(built, kind, reduction):
    """jslds_losses on a native model reads the kernel's sums for the fixed-point and approx terms:
    every term and every parameter gradient equal the Python Function's; a trajectory edited after the
    forward pass is summed anew."""
    from auxfn.jslds import LossWeights, jslds_losses

    py, nat = _model_pair(kind)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 5, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=g) > 0.3
    w = LossWeights(3, 1, 100, 10)
    results = []
    for model in (py, nat):
        model.zero_grad()
        tr = model(x)
        losses = jslds_losses(tr, y, mask, w, reduction=reduction)
        losses["total"].backward()
        results.append((tr, losses, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (tr_p, l_p, g_p), (tr_n, l_n, g_n) = results
    assert tr_p.squared_distance("F_e", "e") is None and tr_n.squared_distance("F_e", "e") is not None
    assert tr_n.squared_distance("h", "a") is not None
    for k in l_p:
        assert _rel(l_n[k].detach(), l_p[k].detach()) < 1e-12, k
    for k in g_p:
        assert _rel(g_n[k], g_p[k]) < 1e-10, k
    # a field replaced after the forward pass: its term is computed from the new tensor
    tr_n.e = tr_n.e.detach() + 1.0
    assert tr_n.squared_distance("F_e", "e") is None and tr_n.squared_distance("h", "a") is not None
    ref = ((tr_n.F_e.detach() - tr_n.e) ** 2).sum() / (tr_n.e.numel() if reduction == "mean" else 4)
    assert _rel(jslds_losses(tr_n, y, mask, w, reduction=reduction)["fixed_point"].detach(), ref) < 1e-12
    assert replace(tr_n).squared_distance("h", "a") is None  # a copy does not carry the sums


def test_kept_trajectories_are_not_overwritten_by_later_calls(built):
    """The kernel reuses the buffers of earlier calls (a pool): only blocks nobody references.
    Trajectories kept from one call (and their graph) must survive later calls unchanged, and the
    kept graph must still backpropagate correctly; release_buffers() empties the pool."""
    py, nat = _model_pair("gru")
    g = torch.Generator().manual_seed(7)
    x1, x2 = (torch.randn(4, 5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    kept = nat(x1)
    snapshot = {f: getattr(kept, f).detach().clone() for f in ("h", "a", "e", "F_e")}
    for _ in range(3):  # later calls, forward and backward, with the first still alive
        tr = nat(x2)
        (tr.h.sum() + tr.a.sum()).backward()
    for f, v in snapshot.items():
        assert torch.equal(getattr(kept, f), v), f
    nat.zero_grad()
    (kept.h.sum() + kept.a.sum() + kept.e.sum()).backward()
    got = {k: p.grad.clone() for k, p in nat.named_parameters() if p.grad is not None}
    py.zero_grad()
    ref_tr = py(x1)
    (ref_tr.h.sum() + ref_tr.a.sum() + ref_tr.e.sum()).backward()
    for k, p in py.named_parameters():
        if p.grad is not None:
            assert _rel(got[k], p.grad) < 1e-10, k
    native_mod.release_buffers()
    again = nat(x1)
    assert torch.equal(again.a, snapshot["a"])


def test_training_native_equals_python(built, tmp_path):
    """Thirty training steps (Adam, clipping, fresh batches, float32): the same losses and weights."""
    from auxfn.jslds.train import PRESETS, train

    cfg = replace(PRESETS["quick-flipflop"].config, n_state=8, batch_size=8, steps=30, eval_every=30,
                  checkpoint_every=30, log_every=10)
    res = [train(replace(cfg, native=f), out=tmp_path / str(f)) for f in (True, False)]
    assert res[0].model.native and not res[1].model.native
    a, b = res[0].summary, res[1].summary
    for key in ("final_loss", "mse_rnn", "mse_jslds", "relative_error", "fixed_point_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key
    pa, pb = dict(res[0].model.named_parameters()), dict(res[1].model.named_parameters())
    for k in pa:
        assert _rel(pa[k].detach(), pb[k].detach()) < 1e-4, k


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    """A build that fails (here: the loader raises) gives one warning naming the reason, and the
    Python Function's results, bit for bit."""

    def fail():
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(native_mod, "_state", {"loaded": None, "reason": None, "build_seconds": None})
    monkeypatch.setattr(native_mod, "_build", fail)
    py, nat = _model_pair("gru", torch.float32)
    x = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(5))
    with pytest.warns(RuntimeWarning, match="no compiler in this test"):
        out = nat(x)
    assert native_mod.build_info()["loaded"] is False
    ref = py(x)
    for f in ("h", "a", "e", "F_e", "y_rnn", "y_jslds"):
        assert torch.equal(getattr(out, f), getattr(ref, f)), f
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call does not warn again
        nat(x)


def test_native_not_applicable_uses_python_function(built):
    """Off the kernel's dtypes (here bfloat16) the Python Function runs; the model is still usable."""
    spec, s0, X, wa, wb, E = _problem("tanh", True, True, 1, torch.bfloat16)
    outs = native_mod.sequence_forward(spec, s0, X, wa, wb, E)
    ref = python_sequence_forward(spec, s0, X, wa, wb, E)
    for a, b in zip(outs, ref, strict=True):
        assert torch.equal(a, b)


def test_source_is_package_data():
    """Non-editable installs compile the source at first use: it must ship with the package."""
    import re
    from pathlib import Path

    assert native_mod.SOURCE.is_file()
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    section = re.search(r"^\[tool\.setuptools\.package-data\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section and re.search(r'^"auxfn\.jslds"\s*=\s*\[[^]]*"csrc/\*\.cpp"', section.group(1), re.M)
