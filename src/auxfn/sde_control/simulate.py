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

    def take(self, k: int) -> Tensor:
        """The next ``k`` increments at once, (k, P, m): the same stream as ``k`` calls of :meth:`next`."""
        if self.bm is not None:
            return torch.stack([self.next() for _ in range(k)])
        parts = []
        while k > 0:
            if self._buf is None or self._pos == self._buf.shape[0]:
                self._refill()
            n = min(k, self._buf.shape[0] - self._pos)
            parts.append(self._buf[self._pos:self._pos + n])
            self._pos += n
            k -= n
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _refill(self) -> None:
        self._buf = torch.randn((self.chunk, *self.shape), generator=self._gen, dtype=self.dtype,
                                device=self.device) * math.sqrt(self.dt)
        self._pos = 0

    def next(self) -> Tensor:
        """The next increment, (P, m)."""
        if self.bm is not None:
            ta = self.t0 + self._k * self.dt
            self._k += 1
            return self.bm(ta, ta + self.dt)
        if self._buf is None or self._pos == self._buf.shape[0]:
            self._refill()
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
    engine: str = "fast",
    chunk: int = 256,
) -> Trajectories:
    """Simulate ``sde`` from error states ``x0`` (P, d) for ``n_steps`` steps of ``dt``.

    ``method``: ``"euler"`` (Euler–Maruyama, any noise) or ``"milstein"`` (scalar or
    diagonal noise). Noise: ``noise`` if given, else ``bm`` (torchsde), else seeded
    increments from ``seed`` (the same ``seed`` = the same noise for every controller).
    The model runs in ``dtype`` (float64 by default); the SDE's modules are cast to it
    for the simulation and cast back afterwards.

    ``engine``: ``"fast"`` (Euler only; the default) or ``"reference"`` (a plain loop with a
    blow-up check after every step). Both give the same paths and the same divergence
    record; the fast engine draws the increments ``chunk`` steps at a time, runs under
    ``torch.no_grad`` with the lean model evaluation of
    :meth:`ControlledSDE.lean_parts`, keeps a running max of ``|x|`` instead of a
    per-step check, and replays a chunk step by step only when some path left the
    ``blowup`` box (or turned non-finite) inside it. Diverged paths then leave the active
    batch (frozen, recorded as NaN, counted).
    """
    if x0.ndim != 2 or x0.shape[1] != sde.dim:
        raise ValueError(f"x0 must have shape (paths, {sde.dim}), got {tuple(x0.shape)}")
    if method not in ("euler", "milstein"):
        raise ValueError(f"method must be 'euler' or 'milstein', got {method!r}")
    if method == "milstein" and sde.noise_type == "general":
        raise ValueError("milstein needs scalar or diagonal noise (general noise needs Lévy areas); use euler")
    if not dt > 0 or n_steps < 1 or record_every < 1:
        raise ValueError(f"need dt > 0, n_steps >= 1, record_every >= 1; got {dt}, {n_steps}, {record_every}")
    if engine not in ("fast", "reference"):
        raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    kw = dict(dt=dt, n_steps=n_steps, seed=seed, record_every=record_every, blowup=blowup, dtype=dtype, bm=bm,
              noise=noise)
    if method == "milstein" or engine == "reference":
        return _simulate_reference(sde, x0, method=method, **kw)
    return _simulate_fast(sde, x0, chunk=chunk, **kw)


def _simulate_fast(sde, x0, *, dt, n_steps, seed, record_every, blowup, dtype, bm, noise, chunk) -> Trajectories:
    P, d = x0.shape
    old = {n: p.dtype for n, p in sde.named_parameters()}
    sde.to(dtype)
    try:
        # no_grad rather than inference_mode: a controller may differentiate inside (the CLF-QP's ∇V)
        with torch.no_grad():
            z = x0.to(dtype).clone()
            if noise is None:
                noise = BrownianIncrements(P, sde.noise_dim, dt, seed=seed, dtype=dtype, device=z.device, bm=bm,
                                           chunk=max(chunk, 1024))
            sde.drift_and_diffusion(z[:1])  # the shape checks, once
            parts = sde.lean_parts()
            kind = sde.noise_type
            n_rec = n_steps // record_every + 1
            xs = torch.full((n_rec, P, d), math.nan, dtype=dtype, device=z.device)
            us = torch.full((n_rec, P), math.nan, dtype=dtype, device=z.device)
            diverged = torch.zeros(P, dtype=torch.bool, device=z.device)
            diverged_at = torch.full((P,), math.inf, dtype=dtype, device=z.device)
            active: Tensor | None = None  # None = all paths; else the indices still running

            def put(k: int, za: Tensor, u: Tensor | None, rows: Tensor | None) -> None:
                r = k // record_every
                usq = za.new_zeros(za.shape[0]) if u is None else u.flatten(1).square().sum(-1)
                if rows is None:
                    xs[r] = za
                    us[r] = usq
                else:
                    xs[r, rows] = za
                    us[r, rows] = usq

            def step(za: Tensor, F: Tensor, G: Tensor, dw: Tensor) -> Tensor:
                if kind == "general":
                    return torch.add(za, F, alpha=dt).add_(torch.bmm(G, dw.unsqueeze(-1)).squeeze(-1))
                return torch.addcmul(torch.add(za, F, alpha=dt), G, dw)  # scalar dw (P, 1) broadcasts

            k0 = 0
            za = z
            while k0 < n_steps and za.shape[0]:  # (stops early once every path diverged)
                c = min(chunk, n_steps - k0)
                dW = noise.take(c)
                if active is not None:
                    dW = dW[:, active]
                start = za
                hi = torch.zeros_like(za)
                for j in range(c):
                    F, G, u = parts(za)
                    if (k0 + j) % record_every == 0:
                        put(k0 + j, za, u, active)
                    za = step(za, F, G, dW[j])
                    torch.maximum(hi, za.abs(), out=hi)  # NaN propagates, so non-finite paths show too
                if not bool((hi <= blowup).all()):
                    # replay the chunk with a check after every step (same arithmetic, same noise)
                    za = start
                    dloc = torch.zeros(za.shape[0], dtype=torch.bool, device=za.device)
                    for j in range(c):
                        k = k0 + j
                        F, G, u = parts(za)
                        if k % record_every == 0:
                            # overwrites what the first pass recorded: NaN once a path diverged
                            put(k, za, u, active)
                            if bool(dloc.any()):
                                rows = dloc.nonzero().squeeze(1) if active is None else active[dloc]
                                xs[k // record_every, rows] = math.nan
                                us[k // record_every, rows] = math.nan
                        new = step(za, F, G, dW[j])
                        bad = ~(new.abs() <= blowup).all(-1)
                        newly = bad & ~dloc
                        if bool(newly.any()):
                            idx = newly.nonzero().squeeze(1) if active is None else active[newly]
                            diverged_at[idx] = (k + 1) * dt
                            diverged[idx] = True
                            dloc |= bad
                        za = torch.where(dloc.unsqueeze(1), za, new)  # frozen at the last finite state
                    keep = ~dloc
                    active = keep.nonzero().squeeze(1) if active is None else active[keep]
                    za = za[keep]
                k0 += c
            if n_steps % record_every == 0 and za.shape[0]:
                _, _, u = parts(za)
                put(n_steps, za, u, active)
            ts = (torch.arange(n_rec, dtype=torch.int64) * record_every).to(dtype) * dt
        return Trajectories(ts=ts.clone(), xs=xs.clone(), u_sq=us.clone(), diverged=diverged.clone(),
                            diverged_at=diverged_at.clone(), dt=dt)
    finally:
        for n, p in sde.named_parameters():
            p.data = p.data.to(old[n])


@torch.no_grad()
def _simulate_reference(
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
    """The step-by-step loop (one blow-up check per step): Milstein, and the reference for the fast engine."""
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
