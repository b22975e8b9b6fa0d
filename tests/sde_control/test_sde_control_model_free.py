"""Model-free route: fit the drift with a neural ODE, learn AS control on the fit, stabilise the true system."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

from auxfn.sde_control import Box, ControlConfig, ControlledSDE, simulate, train
from auxfn.sde_control.metrics import summarize
from auxfn.sde_control.model_free import NeuralDrift, fit_neural_ode, fitted_system

A = torch.tensor([[0.3, 1.0], [-1.0, 0.3]])  # an unstable spiral (eigenvalues 0.3 ± i)


def test_fitted_system_has_its_equilibrium_at_the_origin_and_inputs_are_checked():
    torch.manual_seed(0)
    f_hat = NeuralDrift(3, (8,))
    eq = torch.tensor([0.5, -1.0, 2.0])
    model = fitted_system(f_hat, Box.cube(3, -1.0, 1.0), equilibrium=eq)
    assert model.drift(torch.zeros(4, 3)).abs().max() == 0
    z = torch.randn(5, 3)
    torch.testing.assert_close(model.drift(z), f_hat(0.0, z + eq) - f_hat(0.0, eq.unsqueeze(0)))
    with pytest.raises(ValueError, match=r"ts must be \(T,\) and xs \(T, n_traj, d\)"):
        fit_neural_ode(torch.linspace(0, 1, 5), torch.zeros(4, 2, 3))


@pytest.mark.slow  # about 10-20 s on 2 shared cores (neural-ODE fit + training + simulation)
def test_fit_then_control_stabilises_the_true_system(tmp_path):
    torch.manual_seed(0)
    true = ControlledSDE(2, f0=lambda z: z @ A.to(z).T, domain=Box.cube(2, -3.0, 3.0), name="spiral")
    ts = torch.linspace(0, 2.0, 41)
    x0 = Box.cube(2, -2.0, 2.0).sample(8, generator=torch.Generator().manual_seed(1))
    xs = odeint(lambda t, x: x @ A.T, x0, ts)  # observed, noise-free, uncontrolled
    f_hat, losses = fit_neural_ode(ts, xs, hidden=(32,), iters=150, lr=2e-2, batch_time=6, batch_size=16)
    assert losses[-1] < 0.2 * losses[0]
    probe = Box.cube(2, -2.0, 2.0).sample(200, generator=torch.Generator().manual_seed(2))
    err = (f_hat(0.0, probe) - probe @ A.T).norm(dim=1).mean() / (probe @ A.T).norm(dim=1).mean()
    assert err < 0.15  # relative drift error inside the observed region

    model = fitted_system(f_hat, Box.cube(2, -3.0, 3.0))
    cfg = ControlConfig(method="as", alpha=0.5, n_samples=400, max_iters=300, certify_samples=0, eval_paths=0)
    res = train(cfg, system=model, out=tmp_path / "run")
    assert res.summary["reached_zero"]
    closed = true.with_controller(res.controller)
    x_eval = Box.cube(2, -2.0, 2.0).sample(10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m = summarize(simulate(closed, x_eval, dt=1e-3, n_steps=3000, seed=0, record_every=10), eps=0.05)
    u = summarize(simulate(true, x_eval, dt=1e-3, n_steps=3000, seed=0, record_every=10), eps=0.05)
    assert m["success_rate"] == 1.0 and m["diverged"] == 0
    assert u["success_rate"] == 0.0 and u["final_mean_norm"] > 2.0
