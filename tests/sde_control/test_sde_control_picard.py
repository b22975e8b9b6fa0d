"""The Picard (waveform-relaxation) engine returns the Euler–Maruyama solution to its tolerance.

It is compared with the step-by-step loop and with ``torchsde.sdeint(method="euler")`` on the
same ``BrownianInterval``, on a trained controller, on a stiff system where it has to fall
back to stepping, with divergence, drift/both control entries and diagonal/general noise.
"""

from __future__ import annotations

import pytest
import torch
import torchsde

from auxfn.sde_control import (
    ControlledSDE,
    LinearGain,
    ZeroPreservingMLP,
    make_system,
    simulate,
)
from auxfn.sde_control.systems import StuartLandau

D64 = torch.float64


def test_picard_equals_loop_and_torchsde_on_a_trained_controller(trained_harmonic, same_paths):
    sde = trained_harmonic
    x0 = sde.default_x0(20, generator=torch.Generator().manual_seed(0))
    dt, n = 1e-4, 3000
    pic = simulate(sde, x0, dt=dt, n_steps=n, seed=5, record_every=7, engine="picard", window=64)
    ref = simulate(sde, x0, dt=dt, n_steps=n, seed=5, record_every=7, engine="reference")
    same_paths(pic, ref, tol=1e-10)
    # it really iterated: most steps came from sweeps, several steps per sweep
    info = pic.info
    assert info["engine"] == "picard" and info["picard_steps"] + info["fallback_steps"] == n
    assert info["picard_steps"] > 0.9 * n and info["steps_per_sweep"] > 3.0
    # the controlled paths converge (a path that diverges numerically at this dt is counted, as in the loop)
    assert int((pic.norms[-1] < 0.05).sum()) >= 15

    dt, T = 2.0**-12, 2.0**-3  # dyadic: torchsde's time grid hits T exactly
    n = round(T / dt)
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=(20, 1), dtype=D64, entropy=11)
    ours = simulate(sde, x0, dt=dt, n_steps=n, bm=bm, record_every=n, engine="picard", window=32)
    bm2 = torchsde.BrownianInterval(t0=0.0, t1=T, size=(20, 1), dtype=D64, entropy=11)
    sde64 = sde.double()
    ts = torch.tensor([0.0, T], dtype=D64)
    ref = torchsde.sdeint(sde64, x0, ts, method="euler", dt=dt, bm=bm2)
    torch.testing.assert_close(ours.xs[-1], ref[-1], rtol=1e-10, atol=1e-10)


def test_picard_falls_back_on_a_stiff_system_and_stays_exact(same_paths):
    # dz = -lam z dt + 0.3 dB with lam dt = 1.5: Euler is stable (|1 - lam dt| < 1) but the Picard
    # iterates over a window grow like (lam dt k)^j / j! before they contract
    lam = 150.0
    stiff = ControlledSDE(1, f0=lambda z: -lam * z, g0=lambda z: torch.full_like(z, 0.3))
    x0 = torch.linspace(-2, 2, 6, dtype=D64).unsqueeze(1)
    pic = simulate(stiff, x0, dt=0.01, n_steps=400, seed=2, record_every=3, engine="picard", window=64, chunk=50)
    ref = simulate(stiff, x0, dt=0.01, n_steps=400, seed=2, record_every=3, engine="reference")
    same_paths(pic, ref, tol=1e-10)
    assert pic.info["fallbacks"] > 0 and pic.info["fallback_steps"] > 200


def test_picard_records_divergence_like_the_loop(same_paths):
    torch.manual_seed(0)
    u = ZeroPreservingMLP(2, (6, 6))
    sde = make_system("harmonic").with_controller(u)
    x0 = torch.randn(12, 2, dtype=D64) * 2
    pic = simulate(sde, x0, dt=0.01, n_steps=500, seed=3, record_every=3, blowup=20.0, engine="picard", window=16,
                   chunk=37)
    ref = simulate(sde, x0, dt=0.01, n_steps=500, seed=3, record_every=3, blowup=20.0, engine="reference")
    same_paths(pic, ref, tol=1e-10)
    assert 0 < pic.n_diverged < 12
    # a NaN drift on some paths: counted as diverged, never dropped
    nan_sde = ControlledSDE(1, f0=lambda z: torch.where(z > 0, z * float("nan"), -z))
    x0 = torch.tensor([[1.0], [-1.0], [2.0]], dtype=D64)
    pic = simulate(nan_sde, x0, dt=0.1, n_steps=20, engine="picard", window=8)
    same_paths(pic, simulate(nan_sde, x0, dt=0.1, n_steps=20, engine="reference"), tol=1e-10)
    assert pic.diverged.tolist() == [True, False, True]


@pytest.mark.parametrize("entry", ["drift", "both"])
def test_picard_control_in_the_drift_and_in_both(entry, same_paths):
    torch.manual_seed(3)
    base = make_system("pendulum")
    if entry == "drift":
        sde = ControlledSDE(2, f0=base.f0, g0=lambda z: 0.2 * z, controller=ZeroPreservingMLP(2, (8,)),
                            control_entry="drift")
    else:
        sde = ControlledSDE(2, f0=base.f0, controller=ZeroPreservingMLP(2, (8,)), control_entry="both",
                            drift_controller=LinearGain(2, -2.0))
    x0 = torch.randn(7, 2, dtype=D64)
    kw = dict(dt=1e-3, n_steps=700, seed=4, record_every=10)
    same_paths(simulate(sde, x0, engine="picard", window=48, **kw), simulate(sde, x0, engine="reference", **kw), tol=1e-10)


def test_picard_diagonal_and_general_noise(same_paths):
    torch.manual_seed(1)
    sl = StuartLandau(n=3)
    sde = sl.with_controller(ZeroPreservingMLP(5, (8,)))
    x0 = sl.default_x0(6, generator=torch.Generator().manual_seed(0))
    kw = dict(dt=1e-3, n_steps=300, seed=1, record_every=5)
    same_paths(simulate(sde, x0, engine="picard", window=40, **kw), simulate(sde, x0, engine="reference", **kw), tol=1e-10)

    B = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.1]], dtype=D64)
    gen = ControlledSDE(2, f0=lambda z: -z, g0=lambda z: z.unsqueeze(-1) * B, noise_type="general", noise_dim=3)
    x0 = torch.randn(5, 2, dtype=D64)
    kw = dict(dt=0.01, n_steps=150, seed=2, record_every=4)
    same_paths(simulate(gen, x0, engine="picard", window=20, **kw), simulate(gen, x0, engine="reference", **kw), tol=1e-10)


def test_picard_bad_options():
    sde = make_system("harmonic")
    x0 = torch.zeros(2, 2, dtype=D64)
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="picard", window=1)
    with pytest.raises(ValueError, match=r"tol must lie in \(0, 1e-6\)"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="picard", tol=0.1)
    with pytest.raises(ValueError, match="Euler–Maruyama only"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="picard", method="milstein")
    with pytest.raises(ValueError, match="engine must be one of"):
        simulate(sde, x0, dt=0.1, n_steps=3, engine="fastest")


def test_lean_model_equals_module_calls_in_both_layouts():
    # above 256 rows the built-in controllers and the harmonic parts take products as (W z^T)^T
    torch.manual_seed(0)
    for ctrl in (ZeroPreservingMLP(4, (8, 8), noise_dim=3), ZeroPreservingMLP(4, (8,), activation="tanh"),
                 LinearGain(4)):
        noise = "general" if getattr(ctrl, "noise_dim", 1) > 1 else "scalar"
        sde = ControlledSDE(4, f0=lambda z: -z, noise_type=noise, noise_dim=3 if noise == "general" else None,
                            controller=ctrl).double()
        parts = sde.lean_parts()
        for rows in (10, 300, 3000):
            z = torch.randn(rows, 4, dtype=D64)
            with torch.no_grad():
                for a, b in zip(parts(z), sde.drift_and_diffusion(z), strict=True):
                    # (the applied control u is compared flat: only its squared norm is used)
                    torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-13, atol=1e-13)
    h = make_system("harmonic").double()
    z = torch.randn(1000, 2, dtype=D64)
    torch.testing.assert_close(h.f0(z), z @ h.At.T.T, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(h.g0(z), z @ h.Ct, rtol=1e-14, atol=1e-14)
