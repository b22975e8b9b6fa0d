"""The fast Euler–Maruyama engine gives the same paths and divergence record as the step-by-step loop."""

from __future__ import annotations

import torch

from auxfn.sde_control import (
    BrownianIncrements,
    ControlledSDE,
    LinearGain,
    ZeroPreservingMLP,
    make_system,
    simulate,
)
from auxfn.sde_control.systems import StuartLandau

D64 = torch.float64


def _same(a, b):
    torch.testing.assert_close(a.ts, b.ts, rtol=0, atol=0)
    torch.testing.assert_close(a.xs, b.xs, rtol=1e-12, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(a.u_sq, b.u_sq, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.equal(a.diverged, b.diverged)
    torch.testing.assert_close(a.diverged_at, b.diverged_at, rtol=0, atol=0)


def _both(sde, x0, **kw):
    return [simulate(sde, x0, engine=e, **kw) for e in ("fast", "reference")]


def test_fast_equals_reference_with_divergence_recording_and_odd_chunks():
    torch.manual_seed(0)
    u = ZeroPreservingMLP(2, (6, 6))
    sde = make_system("harmonic").with_controller(u)
    x0 = torch.randn(12, 2, dtype=D64) * 2
    # a tight blow-up box so that several paths diverge at different steps; chunk and
    # record_every do not divide the number of steps
    fast, ref = _both(sde, x0, dt=0.01, n_steps=500, seed=3, record_every=3, blowup=20.0, chunk=37)
    _same(fast, ref)
    assert 0 < fast.n_diverged < 12
    # uncontrolled: u_sq is zero, and the weights' dtype is restored afterwards
    f2, r2 = _both(make_system("harmonic"), x0, dt=0.01, n_steps=300, seed=3, record_every=7, blowup=50.0, chunk=16)
    _same(f2, r2)
    assert next(u.parameters()).dtype == torch.float32


def test_fast_equals_reference_diagonal_and_general_noise():
    torch.manual_seed(1)
    sl = StuartLandau(n=3)
    sde = sl.with_controller(ZeroPreservingMLP(5, (8,)))
    x0 = sl.default_x0(6, generator=torch.Generator().manual_seed(0))
    _same(*_both(sde, x0, dt=1e-3, n_steps=200, seed=1, record_every=5, chunk=64))

    B = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.1]], dtype=D64)
    gen = ControlledSDE(2, f0=lambda z: -z, g0=lambda z: z.unsqueeze(-1) * B, noise_type="general", noise_dim=3)
    x0 = torch.randn(5, 2, dtype=D64)
    _same(*_both(gen, x0, dt=0.01, n_steps=150, seed=2, record_every=4, chunk=50))


def test_fast_catches_an_excursion_that_returns_inside_a_chunk():
    # deterministic: z jumps from 0 to 10 (beyond blowup 5) and back to 0 on the next step;
    # a check only at the chunk's end would miss it
    jump = ControlledSDE(1, f0=lambda z: torch.where(z < 5, torch.full_like(z, 10.0), torch.full_like(z, -10.0)))
    fast, ref = _both(jump, torch.zeros(2, 1, dtype=D64), dt=1.0, n_steps=10, blowup=5.0, chunk=10)
    _same(fast, ref)
    assert fast.n_diverged == 2 and fast.diverged_at.tolist() == [1.0, 1.0]


def test_fast_engine_paired_noise_and_non_finite_paths():
    torch.manual_seed(2)
    x0 = torch.randn(8, 2, dtype=D64)
    base = make_system("harmonic")
    a = simulate(base.with_controller(LinearGain(2, 1.0)), x0, dt=0.01, n_steps=100, seed=9, engine="fast")
    b = simulate(base.with_controller(LinearGain(2, 1.0)), x0, dt=0.01, n_steps=100, seed=9, engine="reference")
    _same(a, b)
    # take(k) is the same stream as k calls of next()
    n1, n2 = BrownianIncrements(3, 2, 0.1, seed=4, chunk=5), BrownianIncrements(3, 2, 0.1, seed=4, chunk=5)
    torch.testing.assert_close(n1.take(12), torch.stack([n2.next() for _ in range(12)]), rtol=0, atol=0)
    # a drift that turns NaN for some paths: counted as diverged, never dropped
    nan_sde = ControlledSDE(1, f0=lambda z: torch.where(z > 0, z * float("nan"), -z))
    x0 = torch.tensor([[1.0], [-1.0], [2.0]], dtype=D64)
    fast, ref = _both(nan_sde, x0, dt=0.1, n_steps=20, chunk=8)
    _same(fast, ref)
    assert fast.diverged.tolist() == [True, False, True] and fast.xs.shape == (21, 3, 1)
