"""Proposition 3.2: for dx = x log|x| dt + u dB no linear gain stabilises; u = 2x^2 does."""

from __future__ import annotations

import torch

from auxfn.sde_control import LinearGain, make_system, simulate


class Quadratic(torch.nn.Module):
    def forward(self, x):
        return 2 * x * x


def test_linear_gains_fail_and_quadratic_control_works():
    sde = make_system("prop32")
    x0 = torch.full((10, 1), 50.0, dtype=torch.float64)
    # u = kx: d log x = (log x - k^2/2) dt + k dB is an unstable OU process in log x; from
    # log 50 = 3.9 > k^2/2 it explodes for k = 1 and, with positive probability, for k = 2
    for k, at_least in ((1.0, 10), (2.0, 3)):
        tr = simulate(sde.with_controller(LinearGain(1, k, trainable=False).double()), x0, dt=1e-3, n_steps=3000,
                      seed=0, blowup=1e12, record_every=3000)
        assert tr.n_diverged >= at_least, (k, tr.n_diverged)
    # u = 2x^2 (official figure: dt = 1e-6, converges within about 1e-3 time units)
    tr = simulate(sde.with_controller(Quadratic()), x0, dt=1e-6, n_steps=3000, seed=0, record_every=3000)
    # (at coarser dt, Euler-Maruyama itself blows up on this superlinear diffusion)
    assert tr.n_diverged == 0
    assert float(tr.norms[-1].max()) < 20.0 and float(tr.norms[-1].median()) < 10.0
