"""Auxiliary (Lyapunov) functions V: R^d -> R_+ with V(0) = 0, for the ES learner.

- :class:`ICNNLyapunov`: V(x) = s(g(x) - g(0)) + eps ‖x‖², g an input-convex network and s the
  C² smooth ReLU (:func:`smooth_relu`); the construction of Manek & Kolter with an activation
  smooth enough for Itô's formula (the generator needs ∇²V).
- :class:`DiagQuadLyapunov`: V(x) = x^T diag(l + N(x)²) x (the paper's "quadratic" V).
- :class:`QuadraticLyapunov`: V(x) = x^T P x with P = L L^T + eps I (a true constant quadratic).

Each maps (B, d) -> (B,).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

__all__ = ["DiagQuadLyapunov", "ICNNLyapunov", "QuadraticLyapunov", "smooth_relu"]


def smooth_relu(r: Tensor, d: float = 0.1) -> Tensor:
    """C² smooth ReLU: 0 for r <= 0, (2 d r³ - r⁴)/(2 d³) on (0, d), r - d/2 for r >= d.

    Value, first and second derivative are continuous at 0 (all 0) and at d (d/2, 1, 0).
    """
    rc = r.clamp(0.0, d)  # the quartic piece, evaluated only where it applies
    quartic = (2 * d * rc**3 - rc**4) / (2 * d**3)
    return torch.where(r >= d, r - d / 2, torch.where(r > 0, quartic, torch.zeros_like(r)))


def _check(x: Tensor, dim: int, who: str) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: x must have shape (batch, {dim}), got {tuple(x.shape)}")


class ICNNLyapunov(nn.Module):
    """V(x) = s(g(x) - g(0)) + eps ‖x‖² with an input-convex g.

    g: z_1 = s(W_0 x + b_0), z_{k+1} = s(W_k x + b_k + softplus(U_k) z_k), g = z_K (scalar
    last layer). softplus keeps the z-to-z weights positive and s is convex and
    non-decreasing, so g is convex in x (Amos et al. 2017); V is then convex, V(0) = 0 and
    V >= eps ‖x‖². Layer sizes ``hidden`` end with 1 for g's output, e.g. (6, 6, 1).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (6, 6, 1), eps: float = 1e-3, smooth_d: float = 0.1):
        super().__init__()
        hidden = tuple(hidden)
        if not hidden or hidden[-1] != 1:
            raise ValueError(f"ICNNLyapunov: hidden must end with 1 (the scalar output), got {hidden}")
        if eps <= 0 or smooth_d <= 0:
            raise ValueError(f"ICNNLyapunov: eps and smooth_d must be > 0, got {eps}, {smooth_d}")
        self.dim, self.eps, self.smooth_d = dim, eps, smooth_d
        self.W = nn.ModuleList([nn.Linear(dim, h) for h in hidden])
        self.U = nn.ParameterList([nn.Parameter(torch.empty(h, hp)) for hp, h in zip(hidden[:-1], hidden[1:], strict=True)])
        for lin in self.W:
            nn.init.xavier_normal_(lin.weight)
        for U in self.U:
            nn.init.xavier_normal_(U)

    def g(self, x: Tensor) -> Tensor:
        """The input-convex network, (B, d) -> (B,)."""
        z = smooth_relu(self.W[0](x), self.smooth_d)
        for lin, U in zip(self.W[1:], self.U, strict=True):
            z = smooth_relu(lin(x) + z @ Fn.softplus(U).T, self.smooth_d)
        return z[..., 0]

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "ICNNLyapunov")
        g0 = self.g(torch.zeros(1, self.dim, dtype=x.dtype, device=x.device))
        return smooth_relu(self.g(x) - g0, self.smooth_d) + self.eps * (x * x).sum(-1)


class DiagQuadLyapunov(nn.Module):
    """V(x) = Σ_j (l + N_j(x)²) x_j² = x^T diag(l + N(x)²) x, N a tanh MLP (paper's "quadratic" V)."""

    def __init__(self, dim: int, hidden: Sequence[int] = (6,), l: float = 0.01):  # noqa: E741 (the paper's l)
        super().__init__()
        from auxfn.sde_control.controllers import mlp

        if l <= 0:
            raise ValueError(f"DiagQuadLyapunov: l must be > 0, got {l}")
        self.dim, self.l = dim, l
        self.net = mlp(dim, hidden, dim, "tanh")

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "DiagQuadLyapunov")
        return ((self.l + self.net(x) ** 2) * x * x).sum(-1)


class QuadraticLyapunov(nn.Module):
    """V(x) = x^T P x with P = L L^T + eps I (positive definite by construction)."""

    def __init__(self, dim: int, eps: float = 1e-3, init: Tensor | None = None):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.L = nn.Parameter(torch.eye(dim) if init is None else torch.as_tensor(init, dtype=torch.float32).clone())
        if self.L.shape != (dim, dim):
            raise ValueError(f"QuadraticLyapunov: init must have shape ({dim}, {dim}), got {tuple(self.L.shape)}")

    @property
    def P(self) -> Tensor:
        return self.L @ self.L.T + self.eps * torch.eye(self.dim, dtype=self.L.dtype, device=self.L.device)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "QuadraticLyapunov")
        return ((x @ self.P.to(x.dtype)) * x).sum(-1)
