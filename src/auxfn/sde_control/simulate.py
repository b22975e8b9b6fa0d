"""Batched Euler–Maruyama and Milstein for a :class:`ControlledSDE`, with paired noise and blow-up detection.

All paths step together (one model call per step for the whole batch). The Brownian
increments come from :class:`BrownianIncrements`: the same ``seed`` gives the same
increments, so simulating several controllers with one seed compares them on
identical noise (paired comparison); a ``torchsde.BrownianInterval`` can be used
instead (then our Euler–Maruyama equals ``torchsde.sdeint(method="euler")`` on it).

A path with an entry beyond ±``blowup`` or becomes non-finite is marked diverged at that
step, frozen, and recorded as NaN from then on: it is counted in every metric, never
dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from auxfn.sde_control.systems import ControlledSDE

__all__ = ["BrownianIncrements", "Trajectories", "simulate"]


class BrownianIncrements:
    """Seeded increments dW_k ~ N(0, dt I_m) for P paths, drawn in chunks of steps.

    ``bm`` (optional): a ``torchsde`` Brownian object; then dW_k = bm(t_k, t_{k+1}).
    """

    def __init__(self, n_paths: int, noise_dim: int, dt: float, *, seed: int = 0, dtype=torch.float64,
                 device="cpu", chunk: int = 1024, bm=None, t0: float = 0.0):
        self.shape = (n_paths, noise_dim)
        self.dt, self.dtype, self.device, self.chunk, self.bm, self.t0 = dt, dtype, device, chunk, bm, t0
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(seed)
        self._buf: Tensor | None = None
        self._pos = 0
        self._k = 0

    def next(self) -> Tensor:
        """The next increment, (P, m)."""
        if self.bm is not None:
            ta = self.t0 + self._k * self.dt
            self._k += 1
            return self.bm(ta, ta + self.dt)
        if self._buf is None or self._pos == self._buf.shape[0]:
            self._buf = torch.randn((self.chunk, *self.shape), generator=self._gen, dtype=self.dtype,
                                    device=self.device) * math.sqrt(self.dt)
            self._pos = 0
        out = self._buf[self._pos]
        self._pos += 1
        return out


@dataclass
class Trajectories:
    """A simulation: ``ts`` (K,), ``xs`` (K, P, d) error states (NaN after divergence),
    ``u_sq`` (K, P) = ‖u(x)‖² at the recorded times, ``diverged`` (P,) bool and
    ``diverged_at`` (P,) the time of divergence (inf if none)."""

    ts: Tensor
    xs: Tensor
    u_sq: Tensor
    diverged: Tensor
    diverged_at: Tensor
    dt: float

    @property
    def norms(self) -> Tensor:
        """‖x(t)‖ (K, P), +inf after divergence."""
        n = self.xs.norm(dim=-1)
        return torch.where(torch.isfinite(n), n, torch.full_like(n, math.inf))

    @property
    def n_diverged(self) -> int:
        return int(self.diverged.sum())


def _milstein_correction(sde: ControlledSDE, z: Tensor, G: Tensor, dW: Tensor, dt: float) -> Tensor:
    """½ Σ (∂G/∂x · G)(dW² - dt) for scalar or diagonal noise (commutative; no Lévy areas needed)."""
    zz = z.detach().requires_grad_(True)
    with torch.enable_grad():
        _, Gz, _ = sde.drift_and_diffusion(zz)
        if sde.noise_type == "scalar":
            # (J_g g)_i = Σ_j ∂g_i/∂x_j g_j: one vector-Jacobian-free product via double backward
            v = torch.zeros_like(Gz, requires_grad=True)
            (vjp,) = torch.autograd.grad(Gz, zz, v, create_graph=True)
            (jg,) = torch.autograd.grad(vjp, v, G.detach())
            return 0.5 * jg * (dW * dW - dt)
        # diagonal noise: needs ∂g_i/∂x_i only
        diag = torch.stack(
            [torch.autograd.grad(Gz[:, i].sum(), zz, retain_graph=True)[0][:, i] for i in range(z.shape[1])], dim=1
        )
    return 0.5 * diag * G * (dW * dW - dt)


@torch.no_grad()
def simulate(
    sde: ControlledSDE,
    x0: Tensor,
    *,
    dt: float,
    n_steps: int,
    seed: int = 0,
    method: str = "euler",
    record_every: int = 1,
    blowup: float = 1e6,
    dtype: torch.dtype = torch.float64,
    bm=None,
    noise: BrownianIncrements | None = None,
) -> Trajectories:
    """Simulate ``sde`` from error states ``x0`` (P, d) for ``n_steps`` steps of ``dt``.

    ``method``: ``"euler"`` (Euler–Maruyama, any noise) or ``"milstein"`` (scalar or
    diagonal noise). Noise: ``noise`` if given, else ``bm`` (torchsde), else seeded
    increments from ``seed`` (the same ``seed`` = the same noise for every controller).
    The model runs in ``dtype`` (float64 by default); the SDE's modules are cast to it
    for the simulation and cast back afterwards.
    """
    if x0.ndim != 2 or x0.shape[1] != sde.dim:
        raise ValueError(f"x0 must have shape (paths, {sde.dim}), got {tuple(x0.shape)}")
    if method not in ("euler", "milstein"):
        raise ValueError(f"method must be 'euler' or 'milstein', got {method!r}")
    if method == "milstein" and sde.noise_type == "general":
        raise ValueError("milstein needs scalar or diagonal noise (general noise needs Lévy areas); use euler")
    if not dt > 0 or n_steps < 1 or record_every < 1:
        raise ValueError(f"need dt > 0, n_steps >= 1, record_every >= 1; got {dt}, {n_steps}, {record_every}")
    P = x0.shape[0]
    old = {n: p.dtype for n, p in sde.named_parameters()}
    sde.to(dtype)
    try:
        z = x0.to(dtype).clone()
        if noise is None:
            noise = BrownianIncrements(P, sde.noise_dim, dt, seed=seed, dtype=dtype, device=z.device, bm=bm)
        diverged = torch.zeros(P, dtype=torch.bool, device=z.device)
        diverged_at = torch.full((P,), math.inf, dtype=dtype, device=z.device)
        ts, xs, us = [], [], []
        any_div = False

        def record(k: int, z: Tensor, u: Tensor | None) -> None:
            ts.append(k * dt)
            xs.append(torch.where(diverged.unsqueeze(1), torch.full_like(z, math.nan), z))
            usq = z.new_zeros(P) if u is None else (u.reshape(P, -1) ** 2).sum(-1)
            us.append(torch.where(diverged, torch.full_like(usq, math.nan), usq))

        for k in range(n_steps):
            F, G, u = sde.drift_and_diffusion(z)
            if k % record_every == 0:
                record(k, z, u)
            dW = noise.next()
            if sde.noise_type == "scalar":
                step = F * dt + G * dW  # dW (P, 1) broadcasts over d
            elif sde.noise_type == "diagonal":
                step = F * dt + G * dW
            else:
                step = F * dt + torch.einsum("pdm,pm->pd", G, dW)
            if method == "milstein":
                step = step + _milstein_correction(sde, z, G, dW, dt)
            new = z + step
            # one comparison per step: NaN compares False, so non-finite entries count as bad
            # (the sup norm is checked against blowup; bookkeeping only runs when something broke)
            bad = ~(new.abs() <= blowup).all(-1)
            if bool(bad.any()) or any_div:
                newly = bad & ~diverged
                diverged_at[newly] = (k + 1) * dt
                diverged |= bad
                any_div = True
                z = torch.where(diverged.unsqueeze(1), z, new)  # frozen at the last finite state
            else:
                z = new
        F, G, u = sde.drift_and_diffusion(z)
        if n_steps % record_every == 0:
            record(n_steps, z, u)
        return Trajectories(
            ts=torch.tensor(ts, dtype=dtype), xs=torch.stack(xs), u_sq=torch.stack(us),
            diverged=diverged, diverged_at=diverged_at, dt=dt,
        )
    finally:
        for n, p in sde.named_parameters():
            p.data = p.data.to(old[n])
