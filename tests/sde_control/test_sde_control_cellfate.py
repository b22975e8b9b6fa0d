"""The 6-gene cell-fate network, pinning control on gene 2, and the model-free route on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from auxfn.core.config import ConfigError
from auxfn.sde_control import ControlConfig, preset, train
from auxfn.sde_control.controllers import PinnedMLP
from auxfn.sde_control.model_free import model_free_control
from auxfn.sde_control.systems import CELL_FATE_U2, CellFate

D64 = torch.float64


def _numpy_rhs(x):
    x1, x2, x3, x4, x5, x6 = x
    return np.array([
        0.5 - x1,
        5 * x1 / ((1 + x1) * (1 + x3**4)) - x2,
        5 * x4 / ((1 + x4) * (1 + x2**4)) - x3,
        0.5 / (1 + x2**4) - x4,
        (x1 * x4 / (1 + x1 * x4) + 4 * x3 / (1 + x3)) / (1 + x2**4) - x5,
        (x1 * x4 / (1 + x1 * x4) + 4 * x2 / (1 + x2)) / (1 + x3**4) - x6,
    ])


def test_cell_fate_drift_equilibrium_and_saddle():
    sys_ = CellFate()
    z = sys_.domain.sample(5, generator=torch.Generator().manual_seed(0), dtype=D64)
    want = np.stack([_numpy_rhs(x) for x in (z.numpy() + np.array(CELL_FATE_U2))])
    # f0 = f(z + U2) - f(U2); U2 is given to 8 digits, so the shift is below 1e-7
    np.testing.assert_allclose(sys_.f0(z).numpy(), want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(sys_._rhs(z + torch.tensor(CELL_FATE_U2, dtype=D64)).numpy(), want, rtol=1e-12, atol=1e-12)
    zero = torch.zeros(1, 6, dtype=D64)
    assert float(sys_.f0(zero).abs().max()) == 0.0
    J = torch.autograd.functional.jacobian(lambda v: sys_.f0(v.unsqueeze(0))[0], zero[0])
    ev = torch.linalg.eigvals(J)
    assert int((ev.real > 0).sum()) == 1  # one unstable direction: a saddle
    assert abs(float(ev.real.max()) - 0.7239) < 1e-3


def test_pinned_controller_acts_on_one_coordinate_only():
    torch.manual_seed(0)
    u = PinnedMLP(6, (1,), (6, 6))
    x = torch.randn(7, 6)
    out = u(x)
    assert torch.equal(out[:, [0, 2, 3, 4, 5]], torch.zeros(7, 5))
    assert torch.equal(u(torch.zeros(1, 6)), torch.zeros(1, 6))
    x2 = x.clone()
    x2[:, [0, 2, 3, 4, 5]] = torch.randn(7, 5)  # only x2 matters
    torch.testing.assert_close(u(x2), out)
    with pytest.raises(ValueError, match="pin"):
        PinnedMLP(6, (6,))
    with pytest.raises(ConfigError, match="pin"):
        ControlConfig(system="cellfate", method="es-quad", pin=(1,))


def test_pinned_as_on_the_known_model_and_the_model_free_route(tmp_path):
    cfg = dataclasses.replace(preset("cellfate", "as", "quick"), eval_paths=0, certify_samples=5000)
    s = train(cfg, out=tmp_path / "known").summary
    assert s["reached_zero"] and s["heldout_violation_rate"] < 0.01

    # model-free: the learner sees only noise-free observed trajectories of the true network
    true = CellFate()
    x0 = true.domain.sample(6, generator=torch.Generator().manual_seed(0), dtype=D64)
    ts = torch.linspace(0.0, 6.0, 61, dtype=D64)
    r = model_free_control(true, cfg, x0_obs=x0, ts=ts, out=tmp_path / "mf", certify_samples=5000,
                           fit=dict(iters=120, hidden=(50,), batch_time=8, batch_size=20, lr=1e-2))
    assert r["fit/final_l1"] < 0.05
    assert r["train/iters_to_zero"] is not None
    # the controller learned on the fitted model satisfies the pinned AS condition on the true network
    assert r["true/heldout_violation_rate"] < 0.01
