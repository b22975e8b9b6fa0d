"""The compiled engine (``engine="compiled"``: blocks of unrolled Euler steps under torch.compile).

It must return the Euler–Maruyama paths of the step-by-step loop and of
``torchsde.sdeint(method="euler")`` on the same ``BrownianInterval`` to rounding, with the same
divergence record (also after some paths diverged and the batch is padded), follow changed
weights without recompiling, and fall back to the fast engine when a model cannot be compiled.
Compiling takes seconds: the tests share two models (harmonic with a trained AS controller,
20 paths; a 3-oscillator Stuart–Landau network with diagonal noise) and one ``unroll``.
"""

from __future__ import annotations

import pytest
import torch
import torchsde
from torch import nn

from auxfn.sde_control import ControlledSDE, ZeroPreservingMLP, simulate
from auxfn.sde_control.systems import StuartLandau

D64 = torch.float64
UNROLL = 2


def test_compiled_equals_loop_and_torchsde_on_a_trained_controller(trained_harmonic, same_paths):
    sde = trained_harmonic
    x0 = sde.default_x0(20, generator=torch.Generator().manual_seed(0))
    # 3001 steps: 1500 compiled blocks and a remainder of one step on the fast engine
    kw = dict(dt=1e-4, n_steps=3001, seed=5, record_every=7)
    comp = simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw)
    ref = simulate(sde, x0, engine="reference", **kw)
    same_paths(comp, ref)
    info = comp.info
    assert info["engine"] == "compiled" and "compile_error" not in info
    assert info["calls"] == 3001 // UNROLL and info["first_call_s"] > 0
    assert int((comp.norms[-1] < 0.05).sum()) >= 15  # the controlled paths converge

    dt, T = 2.0**-12, 2.0**-3  # dyadic: torchsde's time grid hits T exactly
    n = round(T / dt)
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=(20, 1), dtype=D64, entropy=11)
    ours = simulate(sde, x0, dt=dt, n_steps=n, bm=bm, record_every=n, engine="compiled", unroll=UNROLL)
    assert ours.info["calls"] == n // UNROLL
    bm2 = torchsde.BrownianInterval(t0=0.0, t1=T, size=(20, 1), dtype=D64, entropy=11)
    ts = torch.tensor([0.0, T], dtype=D64)
    ref = torchsde.sdeint(sde.double(), x0, ts, method="euler", dt=dt, bm=bm2)
    sde.float()
    torch.testing.assert_close(ours.xs[-1], ref[-1], rtol=1e-12, atol=1e-12)


def test_compiled_records_divergence_like_the_loop_and_pads_the_batch(trained_harmonic, same_paths):
    sde = trained_harmonic
    x0 = sde.default_x0(20, generator=torch.Generator().manual_seed(1)) * 2
    # a coarse step: some paths leave the box |x| <= 50, the others go on in padded blocks
    kw = dict(dt=0.02, n_steps=400, seed=3, record_every=3, blowup=50.0)
    comp = simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw)
    ref = simulate(sde, x0, engine="reference", **kw)
    same_paths(comp, ref, tol=1e-10)
    assert 0 < comp.n_diverged < 20
    info = comp.info
    assert info["replayed_steps"] > 0
    # blocks after the first divergence ran compiled on the padded batch (not all were replayed)
    first = float(comp.diverged_at[comp.diverged].min())
    assert info["calls"] * UNROLL - info["replayed_steps"] > 0
    assert info["calls"] * UNROLL * kw["dt"] > first + 2 * UNROLL * kw["dt"]


def test_compiled_follows_new_weights(trained_harmonic, same_paths):
    # the weights are inputs of the compiled code: changed weights give the new paths (no stale copy)
    sde = trained_harmonic
    x0 = sde.default_x0(20, generator=torch.Generator().manual_seed(0))
    kw = dict(dt=1e-4, n_steps=400, seed=5, record_every=10)
    before = simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw)
    saved = [p.detach().clone() for p in sde.controller.parameters()]
    try:
        with torch.no_grad():
            for p in sde.controller.parameters():
                p.mul_(1.5)
        after = simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw)
        same_paths(after, simulate(sde, x0, engine="reference", **kw))
        assert float((after.xs - before.xs).abs().nan_to_num(0.0).max()) > 1e-3
    finally:
        with torch.no_grad():
            for p, s in zip(sde.controller.parameters(), saved, strict=True):
                p.copy_(s)


def test_compiled_diagonal_noise_network(same_paths):
    # hidden 20: the first product (inner size 5) is traced as a broadcast sum, the second (inner 20) as mm
    torch.manual_seed(1)
    sl = StuartLandau(n=3)
    sde = sl.with_controller(ZeroPreservingMLP(5, (20,)))
    x0 = sl.default_x0(6, generator=torch.Generator().manual_seed(0))
    kw = dict(dt=1e-3, n_steps=300, seed=1, record_every=5)
    same_paths(simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw), simulate(sde, x0, engine="reference", **kw))


@torch.compiler.disable
def _opaque_gain(x):
    return -x


class _HostSyncGain(nn.Module):
    """u = -x through a function the compiler must not trace (a graph break, as for code it cannot take)."""

    def forward(self, x):
        return _opaque_gain(x)


def test_compiled_falls_back_when_the_model_cannot_be_compiled(same_paths):
    sde = ControlledSDE(2, f0=lambda z: 0.5 * z, g0=lambda z: 0.1 * z, controller=_HostSyncGain(),
                        control_entry="drift")
    x0 = torch.randn(4, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    kw = dict(dt=0.01, n_steps=50, seed=2, record_every=5)
    with pytest.warns(RuntimeWarning, match="could not be compiled"):
        comp = simulate(sde, x0, engine="compiled", unroll=UNROLL, **kw)
    assert "compile_error" in comp.info and comp.info["calls"] == 0
    same_paths(comp, simulate(sde, x0, engine="reference", **kw))


def test_compiled_bad_options():
    sde = ControlledSDE(1, f0=lambda z: -z)
    x0 = torch.zeros(2, 1, dtype=D64)
    with pytest.raises(ValueError, match=r"unroll must be an integer in \[1, 256\]"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="compiled", unroll=0)
    with pytest.raises(ValueError, match="Euler–Maruyama only"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="compiled", method="milstein")
