"""Baselines the paper compares with: linear gains, LQR, and the CLF-QP controller.

- :func:`lqr_gain`: K from the continuous algebraic Riccati equation (scipy), u = -K x in the drift.
- :class:`CLFQP`: the single-constraint control-Lyapunov QP with the control in the drift,

      min_{u, δ} ‖u‖² + p δ²   s.t.   LV(x; u) + V(x)/ε ≤ δ,

  where LV(x; u) = ∇V·(f0 + u) + ½ tr(g0ᵀ ∇²V g0). Writing a = ∇V and
  h = -(∇V·f0 + ½ tr(g0ᵀ∇²V g0)) - V/ε, the constraint is aᵀu - δ ≤ h and the solution is
  closed-form: u = 0 if h ≥ 0, else u = h a / (‖a‖² + 1/p) (δ = -h/(p ‖a‖² + 1)).
  With V = ½‖x‖² on the harmonic oscillator, h = x2² - ½γ² - ‖x‖²/(2ε), γ = -3x1 + 2.15x2
  (the sign the official baseline got wrong on the uncontrolled terms).
- Linear diffusion gains u = kx: :class:`auxfn.sde_control.controllers.LinearGain` with
  ``gain=k, trainable=False``; their theory is :func:`auxfn.sde_control.metrics.linear_control_bounds`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import solve_continuous_are
from torch import Tensor, nn

from auxfn.sde_control.ito_generator import generator
from auxfn.sde_control.systems import ControlledSDE

__all__ = ["CLFQP", "HalfSquare", "clf_qp_solve", "lqr_gain"]


def lqr_gain(A, B, Q, R) -> np.ndarray:
    """K = R⁻¹ Bᵀ P with P solving Aᵀ P + P A - P B R⁻¹ Bᵀ P + Q = 0 (u = -K x)."""
    A, B, Q, R = (np.atleast_2d(np.asarray(m, dtype=float)) for m in (A, B, Q, R))
    n = A.shape[0]
    if A.shape != (n, n) or B.shape[0] != n or Q.shape != (n, n) or R.shape != (B.shape[1], B.shape[1]):
        raise ValueError(f"lqr_gain: shapes A {A.shape}, B {B.shape}, Q {Q.shape}, R {R.shape} do not fit")
    P = solve_continuous_are(A, B, Q, R)
    return np.linalg.solve(R, B.T @ P)


def clf_qp_solve(a: Tensor, h: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Closed-form min ‖u‖² + p δ² s.t. aᵀu - δ ≤ h, batched: a (B, d), h (B,) -> u (B, d), δ (B,)."""
    if a.ndim != 2 or h.shape != a.shape[:1]:
        raise ValueError(f"clf_qp_solve: a must be (batch, d) and h (batch,), got {tuple(a.shape)}, {tuple(h.shape)}")
    if not p > 0:
        raise ValueError(f"clf_qp_solve: p must be > 0, got {p}")
    lam = torch.clamp(-h, min=0.0) / ((a * a).sum(-1) + 1.0 / p)  # multiplier of the active constraint
    return -lam.unsqueeze(-1) * a, lam / p


class HalfSquare(nn.Module):
    """V(x) = ½‖x‖² (the CLF of the official HDSCLF baseline)."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (x * x).sum(-1)


class CLFQP(nn.Module):
    """u(x) from :func:`clf_qp_solve` for ``system`` (uncontrolled) and CLF ``V``; use with ``control_entry="drift"``."""

    def __init__(self, system: ControlledSDE, V: nn.Module | None = None, eps: float = 0.1, p: float = 10.0):
        super().__init__()
        if system.controller is not None:
            raise ValueError("CLFQP needs the uncontrolled system (system.with_controller(None))")
        self.system, self.V = system, V if V is not None else HalfSquare()
        self.eps, self.p = eps, p

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            F, G, _ = self.system.drift_and_diffusion(x)
            t = generator(self.V, x.detach(), F.detach(), self.system.dense(G).detach())
        h = -(t.LV.detach() + t.V.detach() / self.eps)
        u, _ = clf_qp_solve(t.Vx.detach(), h, self.p)
        return u
