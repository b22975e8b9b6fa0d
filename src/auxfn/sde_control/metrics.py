"""Metrics of simulated paths and the theory of linear control u = k x (paper §4).

Convergence time τ_ε, both definitions found in the paper's code:

- ``"mean_norm"``: the first time the mean over paths of ‖x(t)‖ falls below ε;
- ``"per_path"``: the mean over paths of τ_ε^i = inf{t: ‖x_i(t)‖ <= ε}.

A diverged path has ‖x‖ = +inf from its divergence on, and τ^i = +inf if it never hit ε
before diverging: it is never dropped, so a single diverged path makes the mean-norm
time infinite if it diverged before the mean fell below ε.

Energy cost E ∫_0^{τ_ε^i ∧ T} ‖u(x_t)‖² dt by the trapezoid rule on the recorded grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from auxfn.sde_control.simulation import Trajectories

__all__ = [
    "convergence_time",
    "energy_cost",
    "hitting_times",
    "linear_control_bounds",
    "min_norm",
    "summarize",
    "success_rate",
]


def hitting_times(traj: Trajectories, eps: float) -> Tensor:
    """τ_ε^i per path (P,): first recorded time with ‖x_i‖ <= ε, +inf if never."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    hit = traj.norms <= eps  # (K, P)
    first = torch.argmax(hit.to(torch.int8), dim=0)
    t = traj.ts[first].clone()
    t[~hit.any(0)] = math.inf
    return t


def convergence_time(traj: Trajectories, eps: float, mode: str = "mean_norm") -> float:
    """τ_ε by ``mode`` ``"mean_norm"`` or ``"per_path"`` (module docstring); +inf if not reached."""
    if mode == "mean_norm":
        below = traj.norms.mean(dim=1) <= eps
        return float(traj.ts[int(torch.argmax(below.to(torch.int8)))]) if below.any() else math.inf
    if mode == "per_path":
        return float(hitting_times(traj, eps).mean())
    raise ValueError(f"mode must be 'mean_norm' or 'per_path', got {mode!r}")


def success_rate(traj: Trajectories, eps: float, T: float | None = None) -> float:
    """Fraction of paths with τ_ε^i <= T (T = the simulated horizon by default)."""
    T = float(traj.ts[-1]) if T is None else T
    return float((hitting_times(traj, eps) <= T).to(torch.float64).mean())


def energy_cost(traj: Trajectories, eps: float | None = None, T: float | None = None) -> Tensor:
    """∫_0^{τ_ε^i ∧ T} ‖u‖² dt per path (P,) by trapezoids; ``eps=None``: up to T; ``T=None``: the horizon.

    A path that diverged before its stopping time costs +inf.
    """
    K, P = traj.u_sq.shape
    horizon = traj.ts[-1] if T is None else torch.minimum(traj.ts[-1], torch.tensor(T, dtype=traj.ts.dtype))
    end = horizon.expand(P).clone() if eps is None else torch.minimum(hitting_times(traj, eps), horizon)
    u = traj.u_sq
    dts = traj.ts[1:] - traj.ts[:-1]  # (K-1,)
    seg = 0.5 * (u[1:] + u[:-1]) * dts.unsqueeze(1)  # (K-1, P)
    inside = traj.ts[1:].unsqueeze(1) <= end.unsqueeze(0)  # segments that end by the stopping time
    seg = torch.where(inside, seg, torch.zeros_like(seg))
    out = seg.nansum(0)
    out[traj.diverged & (traj.diverged_at <= end)] = math.inf
    return out


def min_norm(traj: Trajectories) -> float:
    """The minimum over time of the mean over paths of ‖x(t)‖ (+inf once any path diverged)."""
    return float(traj.norms.mean(dim=1).min())


def summarize(traj: Trajectories, eps: float) -> dict[str, float]:
    """``eval/*`` metrics of one simulation."""
    energy = energy_cost(traj, eps)
    return {
        "tau_mean_norm": convergence_time(traj, eps, "mean_norm"),
        "tau_per_path": convergence_time(traj, eps, "per_path"),
        "success_rate": success_rate(traj, eps),
        "energy": float(energy.mean()),
        "min_mean_norm": min_norm(traj),
        "final_mean_norm": float(traj.norms[-1].mean()),
        "diverged": traj.n_diverged,
        "paths": int(traj.xs.shape[1]),
    }


def linear_control_bounds(L: float, k: float, x0_norm: float, eps: float) -> dict[str, float]:
    """Theory of u = k x entering the diffusion when ⟨x, f(x)⟩ <= L ‖x‖² (paper §4, derived in the notes).

    d log‖x‖ <= (L - k²/2) dt + dM, so for k² > 2L the zero solution is a.s. exponentially
    stable with rate k²/2 - L and E τ_ε <= T_ε = 2 log(‖x0‖/ε)/(k² - 2L); E‖x_t‖² <= ‖x0‖² e^{(2L + k²) t},
    so the energy up to T_ε is at most E_ε = k² ‖x0‖² (e^{(2L + k²) T_ε} - 1)/(2L + k²).
    """
    if k * k <= 2 * L:
        return {"T_eps": math.inf, "E_eps": math.inf, "rate": k * k / 2 - L}
    T = 2 * math.log(x0_norm / eps) / (k * k - 2 * L)
    c = 2 * L + k * k
    E = k * k * x0_norm**2 * (math.expm1(c * T) / c if c != 0 else T)
    return {"T_eps": T, "E_eps": E, "rate": k * k / 2 - L}
