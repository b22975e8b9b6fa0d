"""LQR, the CLF-QP closed form (vs a numerical QP solve) and the CLF-QP baseline on the harmonic oscillator."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

from auxfn.sde_control import simulate
from auxfn.sde_control.baselines import CLFQP, clf_qp_solve, lqr_gain
from auxfn.sde_control.metrics import summarize
from auxfn.sde_control.systems import Harmonic

D64 = torch.float64


def test_lqr_solves_the_riccati_equation():
    A = np.array([[0.0, 1.0], [-1.0, -1.0]])
    B, Q, R = np.eye(2), 20 * np.eye(2), np.eye(2)
    K = lqr_gain(A, B, Q, R)
    P = K  # K = R^-1 B^T P with B = R = I
    res = A.T @ P + P @ A - P @ B @ np.linalg.solve(R, B.T) @ P + Q
    assert np.abs(res).max() < 1e-9
    assert np.linalg.eigvals(A - B @ K).real.max() < 0


def test_clf_qp_closed_form_matches_a_numerical_solve():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=3)
        h = rng.normal()
        p = 10.0
        u, d = clf_qp_solve(torch.tensor(a[None]), torch.tensor([h]), p)
        cons = {"type": "ineq", "fun": lambda w, a=a, h=h: h - (a @ w[:3] - w[3])}
        sol = minimize(lambda w, p=p: w[:3] @ w[:3] + p * w[3] ** 2, np.zeros(4), constraints=[cons], method="SLSQP",
                       options={"ftol": 1e-12})
        np.testing.assert_allclose(u[0].numpy(), sol.x[:3], atol=1e-5)
        np.testing.assert_allclose(float(d[0]), sol.x[3], atol=1e-5)


def test_clf_qp_stabilises_the_harmonic_oscillator_with_the_correct_sign():
    base = Harmonic()
    qp = CLFQP(base, eps=0.1, p=10.0)
    # the constraint's h for V = |x|^2/2: x2^2 - gamma^2/2 - |x|^2/(2 eps), gamma = -3x1 + 2.15x2
    x = torch.randn(50, 2, dtype=D64)
    gam = -3 * x[:, 0] + 2.15 * x[:, 1]
    h = x[:, 1] ** 2 - 0.5 * gam**2 - (x * x).sum(1) / (2 * 0.1)
    u = qp(x)
    want, _ = clf_qp_solve(x, h, 10.0)
    torch.testing.assert_close(u, want)
    assert qp(torch.zeros(1, 2, dtype=D64)).abs().max() == 0
    ctrl = Harmonic(control_entry="drift", controller=qp)
    x0 = base.default_x0(10, generator=torch.Generator().manual_seed(0))
    # the slack (p = 10) relaxes the constraint near 0, so the paths settle around |x| ~ 0.05:
    # test convergence to eps = 0.2; the uncontrolled paths grow on the same noise
    m = summarize(simulate(ctrl, x0, dt=1e-3, n_steps=2000, seed=0, record_every=10), eps=0.2)
    assert m["success_rate"] == 1.0 and m["diverged"] == 0 and m["final_mean_norm"] < 0.2
    unc = summarize(simulate(base, x0, dt=1e-3, n_steps=2000, seed=0, record_every=10), eps=0.2)
    assert unc["final_mean_norm"] > 1.0 and unc["tau_mean_norm"] == float("inf")
