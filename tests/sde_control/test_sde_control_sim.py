"""Simulator, metrics, systems: statistics with stated tolerances, closed forms, torchsde agreement."""

from __future__ import annotations

import math

import pytest
import torch
import torchsde

from auxfn.sde_control import (
    Box,
    BrownianIncrements,
    ControlledSDE,
    LinearGain,
    Trajectories,
    make_system,
    simulate,
)
from auxfn.sde_control.metrics import (
    convergence_time,
    energy_cost,
    hitting_times,
    linear_control_bounds,
    success_rate,
    summarize,
)
from auxfn.sde_control.systems import SYSTEMS, StuartLandau, echo_state_matrix

D64 = torch.float64


def gbm(a, k):
    return ControlledSDE(1, f0=lambda z: a * z, g0=lambda z: k * z, name="gbm")


def test_euler_maruyama_gbm_log_mean():
    # E[log x(T)] = (a - k^2/2) T, sd of log x(T) = k sqrt(T); 4000 paths: SE = 0.0079, test at 4 SE
    a, k, T, P = 0.1, 0.5, 1.0, 4000
    tr = simulate(gbm(a, k), torch.ones(P, 1, dtype=D64), dt=1e-3, n_steps=1000, seed=0, record_every=1000)
    logs = torch.log(tr.xs[-1, :, 0])
    se = k * math.sqrt(T) / math.sqrt(P)
    assert abs(float(logs.mean()) - (a - k * k / 2) * T) < 4 * se
    assert abs(float(logs.std()) - k * math.sqrt(T)) < 0.05 * k


def test_equals_torchsde_euler_on_the_same_brownian_interval():
    torch.manual_seed(0)
    sde = make_system("harmonic").with_controller(LinearGain(2, torch.tensor([[1.0, -0.5], [2.0, 0.3]])).double())
    x0 = torch.randn(5, 2, dtype=D64)
    dt, T = 2.0**-7, 1.0
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=(5, 1), dtype=D64, entropy=123)
    ours = simulate(sde, x0, dt=dt, n_steps=round(T / dt), bm=bm, record_every=round(T / dt))
    bm2 = torchsde.BrownianInterval(t0=0.0, t1=T, size=(5, 1), dtype=D64, entropy=123)
    ref = torchsde.sdeint(sde, x0, torch.tensor([0.0, T], dtype=D64), method="euler", dt=dt, bm=bm2)
    torch.testing.assert_close(ours.xs[-1], ref[-1], rtol=1e-12, atol=1e-12)


def test_milstein_beats_euler_pathwise_on_gbm():
    a, k, T, P, dt = 0.2, 0.8, 1.0, 500, 0.01
    n = round(T / dt)
    x0 = torch.ones(P, 1, dtype=D64)
    errs = {}
    for method in ("euler", "milstein"):
        tr = simulate(gbm(a, k), x0, dt=dt, n_steps=n, method=method, noise=BrownianIncrements(P, 1, dt, seed=7),
                      record_every=n)
        noise = BrownianIncrements(P, 1, dt, seed=7)
        W = sum(noise.next() for _ in range(n))
        exact = torch.exp((a - k * k / 2) * T + k * W)
        errs[method] = float((tr.xs[-1] - exact).abs().mean())
    # strong order 1 vs 1/2: at dt = 0.01 the Milstein error is several times smaller
    assert errs["milstein"] < 0.3 * errs["euler"], errs


def test_paired_noise_is_identical_across_systems():
    # additive noise: x_B - x_A = t exactly when both see the same increments
    A = ControlledSDE(1, f0=lambda z: torch.zeros_like(z), g0=lambda z: torch.ones_like(z))
    B = ControlledSDE(1, f0=lambda z: torch.ones_like(z), g0=lambda z: torch.ones_like(z))
    x0 = torch.zeros(8, 1, dtype=D64)
    ta = simulate(A, x0, dt=0.01, n_steps=100, seed=5)
    tb = simulate(B, x0, dt=0.01, n_steps=100, seed=5)
    torch.testing.assert_close(tb.xs - ta.xs, ta.ts.view(-1, 1, 1).expand_as(ta.xs), rtol=0, atol=1e-12)
    tc = simulate(A, x0, dt=0.01, n_steps=100, seed=6)
    assert (tc.xs[-1] - ta.xs[-1]).abs().max() > 1e-3  # another seed, other noise


def test_blowup_is_detected_counted_and_kept():
    # dx = x^2 dt from 2 explodes at t = 1/2; from -0.5 it does not
    sde = ControlledSDE(1, f0=lambda z: z * z)
    tr = simulate(sde, torch.tensor([[2.0], [-0.5]], dtype=D64), dt=1e-4, n_steps=10000, blowup=1e6)
    assert tr.diverged.tolist() == [True, False]
    assert abs(float(tr.diverged_at[0]) - 0.5) < 0.01
    assert torch.isnan(tr.xs[-1, 0]).all() and torch.isfinite(tr.xs[-1, 1]).all()
    m = summarize(tr, eps=0.01)
    assert m["diverged"] == 1 and m["paths"] == 2 and m["tau_mean_norm"] == math.inf
    e = energy_cost(tr, None)  # no control: 0 for the sound path, +inf for the diverged one
    assert e.tolist() == [math.inf, 0.0]


def _analytic(rates=(1.0,), c=2.0, T=5.0, dt=1e-4):
    ts = torch.arange(0, T + dt / 2, dt, dtype=D64)
    xs = torch.stack([torch.exp(-r * ts) for r in rates], 1).unsqueeze(-1)  # (K, P, 1)
    return Trajectories(ts=ts, xs=xs, u_sq=(c * xs[..., 0]) ** 2, diverged=torch.zeros(len(rates), dtype=torch.bool),
                        diverged_at=torch.full((len(rates),), math.inf, dtype=D64), dt=dt)


def test_metrics_on_analytic_paths():
    eps, c = 0.05, 2.0
    tr = _analytic((1.0,), c)
    assert abs(convergence_time(tr, eps) - math.log(1 / eps)) < 2e-4
    # energy of u = c x along x = e^{-t} up to tau: c^2 (1 - eps^2) / 2
    assert abs(float(energy_cost(tr, eps)[0]) - c * c * (1 - eps * eps) / 2) < 1e-3
    assert success_rate(tr, eps, T=3.0) == 1.0 and success_rate(tr, eps, T=2.9) == 0.0
    two = _analytic((1.0, 2.0), c)
    per = float(hitting_times(two, eps).mean())
    assert abs(per - 0.75 * math.log(1 / eps)) < 2e-4
    # mean-norm time solves (e^{-t} + e^{-2t})/2 = eps: e^{-t} = (-1 + sqrt(1 + 8 eps))/2
    t_mean = -math.log((-1 + math.sqrt(1 + 8 * eps)) / 2)
    assert abs(convergence_time(two, eps, "mean_norm") - t_mean) < 2e-4


def test_linear_control_time_bound_is_attained_in_1d():
    # dx = L x dt + k x dB: log x is a Brownian motion with drift L - k^2/2, so E tau_eps = T_eps exactly
    L, k, eps = 0.5, 2.0, 0.05
    sde = ControlledSDE(1, f0=lambda z: L * z, controller=LinearGain(1, k, trainable=False).double())
    P = 500
    tr = simulate(sde, torch.ones(P, 1, dtype=D64), dt=1e-3, n_steps=12000, seed=1)
    bound = linear_control_bounds(L, k, 1.0, eps)
    assert abs(bound["T_eps"] - 2 * math.log(1 / eps) / (k * k - 2 * L)) < 1e-12
    tau = hitting_times(tr, eps)
    assert torch.isfinite(tau).float().mean() > 0.99
    fin = tau[torch.isfinite(tau)]
    se = float(fin.std()) / math.sqrt(fin.numel())
    assert abs(float(fin.mean()) - bound["T_eps"]) < 4 * se + 0.02  # + discretisation (dt-scale)
    # energy: E int_0^{tau ^ T_eps} k^2 x^2 dt <= E_eps (a bound, not attained)
    assert float(energy_cost(tr, eps, T=bound["T_eps"]).mean()) <= bound["E_eps"]
    assert linear_control_bounds(1.0, 1.0, 1.0, eps)["T_eps"] == math.inf  # k^2 <= 2L: no guarantee


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_every_system_has_its_equilibrium_at_the_origin(name):
    kw = {"n": 4} if name == "stuart" else {"dim": 10} if name == "echo" else {}
    sde = make_system(name, **kw)
    z0 = torch.zeros(2, sde.dim, dtype=D64)
    F, G, _ = sde.drift_and_diffusion(z0)
    assert F.abs().max() < 1e-12 and G.abs().max() < 1e-12
    x = sde.domain.sample(7, generator=torch.Generator().manual_seed(0), dtype=D64)
    assert sde.f(0.0, x).shape == (7, sde.dim)


def test_lorenz_p2_is_shifted():
    sde = make_system("lorenz", target="P2")
    c = 6 * math.sqrt(2)
    torch.testing.assert_close(sde.equilibrium, torch.tensor([c, c, 27.0], dtype=D64))
    x = torch.tensor([[3.0, 5.0, 6.0]], dtype=D64)
    F = sde.f0(sde.to_error(x))
    torch.testing.assert_close(F, torch.tensor([[20.0, 3 * 22.0 - 5, 15 - 16.0]], dtype=D64))


def test_stuart_landau_matches_the_complex_network():
    n, s, c1, c2 = 4, 0.3, -1.8, 4.0
    sys_ = StuartLandau(n=n, sigma=s)
    z = torch.randn(6, 2 * n - 1, dtype=D64) * 0.5
    rho, theta = sys_.polar(z)
    w = rho * torch.exp(1j * theta)
    Lap = torch.eye(n, dtype=D64) - torch.full((n, n), 1.0 / n, dtype=D64)
    dw = w - (1 + 1j * c2) * (w.abs() ** 2) * w - s * (1 + 1j * c1) * (w @ Lap.T.to(w.dtype))
    drho = (dw * w.conj()).real / rho
    dth = (dw * w.conj()).imag / rho**2
    want = torch.cat([drho, dth[:, :-1] - dth[:, 1:]], 1)
    torch.testing.assert_close(sys_.f0(z), want)


def test_echo_state_matrix_is_seeded_with_the_requested_radius():
    A = echo_state_matrix(50, seed=3)
    assert torch.equal(A, echo_state_matrix(50, seed=3)) and not torch.equal(A, echo_state_matrix(50, seed=4))
    assert abs(float(torch.linalg.eigvals(A).abs().max()) - 2.0) < 1e-9
    assert (A >= 0).all()


def test_user_system_shape_errors():
    bad = ControlledSDE(2, f0=lambda z: z[:, :1], domain=Box.cube(2, -1, 1))
    with pytest.raises(ValueError, match=r"f0 must return shape \(3, 2\)"):
        bad.drift(torch.zeros(3, 2))
    badg = ControlledSDE(2, f0=lambda z: z, g0=lambda z: z.unsqueeze(-1))
    with pytest.raises(ValueError, match=r"g0 must return shape \(3, 2\) for noise_type='scalar'"):
        badg.drift(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x0 must have shape \(paths, 2\)"):
        simulate(badg, torch.zeros(3, 3), dt=0.1, n_steps=1)
    x0 = torch.zeros(4, 2)
    x0[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x0 must be finite; paths \[2\] hold nan or inf"):
        simulate(badg, x0, dt=0.1, n_steps=1)
    with pytest.raises(ValueError, match="noise_type"):
        ControlledSDE(2, f0=lambda z: z, noise_type="weird")
