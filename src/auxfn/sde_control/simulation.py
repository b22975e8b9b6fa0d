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
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from auxfn.sde_control.systems import ControlledSDE

__all__ = ["ENGINES", "BrownianIncrements", "Trajectories", "simulate"]

ENGINES = ("fast", "reference", "picard", "compiled")
_SLOW_SWEEPS = 32  # the Picard engine's progress check: sweeps per block
_RECOMPILE_LIMIT = 64  # compiled engine: cached compilations of its block (models x shapes x unroll) per process


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
    info: dict = field(default_factory=dict)

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
    window: int = 128,
    tol: float = 1e-13,
    unroll: int = 32,
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

    ``engine="picard"`` (Euler only): the same Euler–Maruyama solution, computed by Picard
    (waveform-relaxation) sweeps over a sliding window of ``window`` steps, each sweep one
    batched model call on window·P states and a cumulative sum (:meth:`_Run.picard`); states
    are accepted once their change in a sweep is at most ``tol·max_i |x_i|`` on every path, so the paths
    agree with the step-by-step loop to about ``tol`` relative (not bit for bit: the sums
    are taken in another order). Windows that leave the blow-up box or contract slowly
    (stiff) are stepped by the fast engine, so divergence is detected and recorded the same
    way. The returned ``info`` holds the number of sweeps and steps per sweep. The model
    must act row by row (each state's F, G, u depend on that state only), as for torchsde.

    ``engine="compiled"`` (Euler only): ``unroll`` Euler–Maruyama steps per call of one
    function compiled with ``torch.compile`` (inductor, C++ wrapper, static shapes), fed a
    (unroll, P, m) block of the same increments; the last ``n_steps % unroll`` steps run on
    the fast engine. A block whose states leave the blow-up box (or turn non-finite) is
    re-run step by step by the fast engine, so divergence is detected and recorded exactly
    as by the loop; once paths diverged, the batch stays at P rows (padded with copies of an
    active path and its noise), so one compilation serves the whole run. The first call
    compiles (tens of seconds; inductor's on-disk caches shorten it in later processes);
    ``info`` holds ``first_call_s``, ``calls`` and ``replayed_steps``. The paths equal the
    loop's to rounding (the compiled kernels sum in another order). A model that cannot be
    traced whole (a graph break, e.g. autograd inside the controller) falls back to the fast
    engine with a warning and ``info["compile_error"]``.
    """
    if x0.ndim != 2 or x0.shape[1] != sde.dim:
        raise ValueError(f"x0 must have shape (paths, {sde.dim}), got {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        bad = (~torch.isfinite(x0)).any(1).nonzero().flatten()
        raise ValueError(f"x0 must be finite; paths {bad[:5].tolist()}{' ...' if bad.numel() > 5 else ''} hold nan or inf")
    if method not in ("euler", "milstein"):
        raise ValueError(f"method must be 'euler' or 'milstein', got {method!r}")
    if method == "milstein" and sde.noise_type == "general":
        raise ValueError("milstein needs scalar or diagonal noise (general noise needs Lévy areas); use euler")
    if not dt > 0 or n_steps < 1 or record_every < 1:
        raise ValueError(f"need dt > 0, n_steps >= 1, record_every >= 1; got {dt}, {n_steps}, {record_every}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "picard" and method != "euler":
        raise ValueError(f"engine='picard' computes Euler–Maruyama only; got method={method!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if engine == "compiled" and method != "euler":
        raise ValueError(f"engine='compiled' computes Euler–Maruyama only; got method={method!r}")
    if not isinstance(unroll, int) or not 1 <= unroll <= 256:
        raise ValueError(f"unroll must be an integer in [1, 256] (Euler steps per compiled call), got {unroll!r}")
    if not 0.0 < tol < 1e-6:
        raise ValueError(f"tol must lie in (0, 1e-6) (Picard acceptance tolerance, relative), got {tol!r}")
    kw = dict(dt=dt, n_steps=n_steps, seed=seed, record_every=record_every, blowup=blowup, dtype=dtype, bm=bm,
              noise=noise)
    if method == "milstein" or engine == "reference":
        return _simulate_reference(sde, x0, method=method, **kw)
    return _simulate_fast(sde, x0, chunk=chunk, picard=(window, tol) if engine == "picard" else None,
                          unroll=unroll if engine == "compiled" else None, **kw)


def _simulate_fast(sde, x0, *, dt, n_steps, seed, record_every, blowup, dtype, bm, noise, chunk,
                   picard: tuple[int, float] | None = None, unroll: int | None = None) -> Trajectories:
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
            run = _Run(sde.lean_parts(), sde.noise_type, P, d, n_steps, record_every, dt, blowup, dtype, z.device,
                       noise)
            za = z
            if unroll is not None:
                za = run.compiled(za, unroll=unroll, chunk=chunk)
            elif picard is None:
                k0 = 0
                while k0 < n_steps and za.shape[0]:  # (stops early once every path diverged)
                    c = min(chunk, n_steps - k0)
                    za = run.stepwise(za, k0, c)
                    k0 += c
            else:
                za = run.picard(za, window=picard[0], tol=picard[1], chunk=chunk)
            if n_steps % record_every == 0 and za.shape[0]:
                _, _, u = run.parts(za)
                run.put(n_steps, za, u)
            run.fill_pending_u()
            ts = (torch.arange(run.n_rec, dtype=torch.int64) * record_every).to(dtype) * dt
        return Trajectories(ts=ts.clone(), xs=run.xs.clone(), u_sq=run.us.clone(), diverged=run.diverged.clone(),
                            diverged_at=run.diverged_at.clone(), dt=dt, info=run.info)
    finally:
        for n, p in sde.named_parameters():
            p.data = p.data.to(old[n])


class _Run:
    """The state of one fast simulation: recorded rows, divergence record, the active paths, the noise stream.

    Increments are drawn for all P paths in order of steps (so every engine sees the same
    noise) and kept in a buffer until used; ``active`` (None = all) indexes the paths still
    running, which are the rows of the state ``za`` the stepping functions carry.
    """

    def __init__(self, parts, kind, P, d, n_steps, record_every, dt, blowup, dtype, device, noise):
        self.parts, self.kind, self.P, self.d, self.dt, self.blowup = parts, kind, P, d, dt, blowup
        self.n_steps, self.record_every, self.noise = n_steps, record_every, noise
        self.n_rec = n_steps // record_every + 1
        self.xs = torch.full((self.n_rec, P, d), math.nan, dtype=dtype, device=device)
        self.us = torch.full((self.n_rec, P), math.nan, dtype=dtype, device=device)
        self.pending = torch.zeros((self.n_rec, P), dtype=torch.bool, device=device)  # x recorded, u still to do
        self.diverged = torch.zeros(P, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((P,), math.inf, dtype=dtype, device=device)
        self.active: Tensor | None = None
        self._buf: Tensor | None = None  # increments of steps [_buf_k0, _buf_k0 + len)
        self._buf_k0 = 0
        self.info: dict = {}

    # ------------------------------------------------------------------ noise and records
    def dW(self, k: int, c: int) -> Tensor:
        """Increments of steps k .. k+c-1 for the active paths, (c, Pa, m)."""
        have = 0 if self._buf is None else self._buf_k0 + self._buf.shape[0]
        if self._buf is not None and k > self._buf_k0:  # drop what was used
            self._buf = self._buf[k - self._buf_k0:]
            self._buf_k0 = k
        if k + c > have:
            # in blocks (one draw per block, not per sweep), never beyond the last step
            new = self.noise.take(min(max(k + c - have, 4096), self.n_steps - have))
            self._buf = new if self._buf is None else torch.cat([self._buf, new])
            if have == 0:
                self._buf_k0 = 0
        out = self._buf[k - self._buf_k0:k - self._buf_k0 + c]
        return out if self.active is None else out[:, self.active]

    def put(self, k: int, za: Tensor, u: Tensor | None) -> None:
        r = k // self.record_every
        usq = za.new_zeros(za.shape[0]) if u is None else u.flatten(1).square().sum(-1)
        if self.active is None:
            self.xs[r] = za
            self.us[r] = usq
        else:
            self.xs[r, self.active] = za
            self.us[r, self.active] = usq

    def put_states(self, k: int, za: Tensor, Y: Tensor) -> None:
        """Record the states of steps k .. k+a-1 (``za`` at step k, then Y (a-1, Pa, d)) whose step is a
        multiple of record_every; their ‖u‖² is filled in at the end by :meth:`fill_pending_u` (one
        batched call)."""
        re = self.record_every
        first = -(-k // re) * re
        if first >= k + 1 + Y.shape[0]:
            return
        X = torch.cat([za.unsqueeze(0), Y])
        idx = torch.arange(first - k, X.shape[0], re, device=X.device)
        rows = torch.arange(first // re, first // re + idx.numel(), device=X.device)
        if self.active is None:
            self.xs[rows] = X[idx]
            self.pending[rows] = True
        else:
            self.xs[rows.unsqueeze(1), self.active] = X[idx]
            self.pending[rows.unsqueeze(1), self.active] = True

    def fill_pending_u(self) -> None:
        if not bool(self.pending.any()):
            return
        r, p = self.pending.nonzero(as_tuple=True)
        _, _, u = self.parts(self.xs[r, p])
        self.us[r, p] = self.xs.new_zeros(r.numel()) if u is None else u.flatten(1).square().sum(-1)
        self.pending.zero_()

    # ------------------------------------------------------------------ stepping
    def _increment(self, F: Tensor, G: Tensor, dw: Tensor) -> Tensor:
        if self.kind == "general":
            return torch.add(torch.bmm(G, dw.unsqueeze(-1)).squeeze(-1), F, alpha=self.dt)
        return torch.addcmul(F * self.dt, G, dw)  # scalar dw (N, 1) broadcasts

    def _step(self, za: Tensor, F: Tensor, G: Tensor, dw: Tensor) -> Tensor:
        if self.kind == "general":
            return torch.add(za, F, alpha=self.dt).add_(torch.bmm(G, dw.unsqueeze(-1)).squeeze(-1))
        return torch.addcmul(torch.add(za, F, alpha=self.dt), G, dw)

    def stepwise(self, za: Tensor, k0: int, c: int) -> Tensor:
        """``c`` Euler steps from step ``k0``: a pass with a running max of |x|, replayed step by step with a
        check after every step only when some path left the blow-up box (or turned non-finite)."""
        parts, re, blowup, dt = self.parts, self.record_every, self.blowup, self.dt
        dW = self.dW(k0, c)
        start = za
        hi = torch.zeros_like(za)
        for j in range(c):
            F, G, u = parts(za)
            if (k0 + j) % re == 0:
                self.put(k0 + j, za, u)
            za = self._step(za, F, G, dW[j])
            torch.maximum(hi, za.abs(), out=hi)  # NaN propagates, so non-finite paths show too
        if bool((hi <= blowup).all()):
            return za
        # replay the chunk with a check after every step (same arithmetic, same noise)
        za = start
        active = self.active
        dloc = torch.zeros(za.shape[0], dtype=torch.bool, device=za.device)
        for j in range(c):
            k = k0 + j
            F, G, u = parts(za)
            if k % re == 0:
                # overwrites what the first pass recorded: NaN once a path diverged
                self.put(k, za, u)
                if bool(dloc.any()):
                    rows = dloc.nonzero().squeeze(1) if active is None else active[dloc]
                    self.xs[k // re, rows] = math.nan
                    self.us[k // re, rows] = math.nan
            new = self._step(za, F, G, dW[j])
            bad = ~(new.abs() <= blowup).all(-1)
            newly = bad & ~dloc
            if bool(newly.any()):
                idx = newly.nonzero().squeeze(1) if active is None else active[newly]
                self.diverged_at[idx] = (k + 1) * dt
                self.diverged[idx] = True
                dloc |= bad
            za = torch.where(dloc.unsqueeze(1), za, new)  # frozen at the last finite state
        keep = ~dloc
        self.active = keep.nonzero().squeeze(1) if active is None else active[keep]
        return za[keep]

    def compiled(self, za: Tensor, *, unroll: int, chunk: int) -> Tensor:
        """Blocks of ``unroll`` Euler steps, each one call of a compiled function (:func:`_compiled_block`).

        The block returns its ``unroll`` states and whether all of them lie inside the blow-up box;
        a block that left it is re-run by :meth:`stepwise` (exact divergence record). The batch
        stays at P rows: once paths diverged, the active ones are padded with copies of the first
        active path and its increments (they evolve exactly as that path, so they cannot leave
        the box on their own). The last ``n_steps % unroll`` steps are stepped by :meth:`stepwise`.
        """
        n_steps = self.n_steps
        info = {"engine": "compiled", "unroll": unroll, "calls": 0, "replayed_steps": 0, "first_call_s": None}
        self.info = info
        try:
            fn = _compiled_block(self.parts, self.kind, unroll)
        except RuntimeError as e:  # torch.compile unavailable
            fn, info["compile_error"] = None, f"{type(e).__name__}: {e}"
        dt_t = torch.tensor(self.dt, dtype=za.dtype, device=za.device)
        bound = torch.tensor(self.blowup, dtype=za.dtype, device=za.device)
        # every model, shape and unroll is one entry in the compiled block's cache; past dynamo's default
        # limit (8 per function) further ones would silently run uncompiled, so the limit is raised here
        import torch._dynamo as dynamo

        with dynamo.config.patch(recompile_limit=max(dynamo.config.recompile_limit, _RECOMPILE_LIMIT)):
            k, za = self._compiled_blocks(fn, za, unroll, dt_t, bound, info)
        while k < n_steps and za.shape[0]:  # the remainder (or everything, without a compiled block)
            c = min(chunk, n_steps - k)
            za = self.stepwise(za, k, c)
            k += c
        return za

    def _compiled_blocks(self, fn, za: Tensor, unroll: int, dt_t: Tensor, bound: Tensor,
                         info: dict) -> tuple[int, Tensor]:
        """The compiled blocks of :meth:`compiled`: the next step and the state there."""
        n_steps, P = self.n_steps, self.P
        k = 0
        while fn is not None and k + unroll <= n_steps and za.shape[0]:
            dW = self.dW(k, unroll)
            Pa = za.shape[0]
            if Pa < P:  # pad with copies of active path 0 (and its noise): fixed shapes, one compilation
                pad = torch.zeros(P, dtype=torch.long, device=za.device)
                pad[:Pa] = torch.arange(Pa, device=za.device)
                zin, dWin = za[pad], dW[:, pad]
            else:
                zin, dWin = za, dW
            t0 = time.perf_counter() if info["first_call_s"] is None else 0.0
            try:
                Y, inside = fn(zin, dWin, dt_t, bound)
            except Exception as e:  # noqa: BLE001 (a model the compiler cannot take whole: run it on the fast engine)
                if info["calls"]:
                    raise
                warnings.warn(f"engine='compiled': the model could not be compiled ({type(e).__name__}); "
                              "using the fast engine", RuntimeWarning, stacklevel=5)
                info["compile_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                break
            if info["first_call_s"] is None:
                info["first_call_s"] = time.perf_counter() - t0
            info["calls"] += 1
            if bool(inside):
                Y = Y[:, :Pa] if Pa < P else Y
                self.put_states(k, za, Y[:-1])
                za = Y[-1]
            else:
                za = self.stepwise(za, k, unroll)
                info["replayed_steps"] += unroll
            k += unroll
        return k, za

    def picard(self, za: Tensor, *, window: int, tol: float, chunk: int) -> Tensor:
        """Euler–Maruyama by Picard (waveform-relaxation) sweeps over a sliding window of ``window`` steps.

        With the state x_k of the first step of the window exact and the increments dW fixed, the
        Euler recursion x_{i+1} = x_i + F(x_i) dt + G(x_i) dW_i is the fixed point of

            X^{j+1}_{k+i} = x_k + Σ_{l<i} [F(X^j_{k+l}) dt + G(X^j_{k+l}) dW_{k+l}],

        one batched model call for all window·P states and a cumulative sum per sweep. Sweep j
        makes the first j states exact; the states whose change in the last sweep is at most
        ``tol·max_i |x_i|`` on every path (relative, path by path; a leading run) are accepted, together with the one after them
        (computed from accepted states only), so every sweep advances by at least one step. The
        window then slides past them, keeping the later iterates as the next guesses. A window
        whose accepted states leave the blow-up box, or a block of ``_SLOW_SWEEPS`` sweeps that
        advances by fewer than 2 steps per sweep on average (stiff: Picard contracts slowly),
        hand ``chunk`` steps to
        :meth:`stepwise`, which detects and records divergence exactly as the fast engine.
        """
        n_steps, d, blowup = self.n_steps, self.d, self.blowup
        k = 0
        Y: Tensor | None = None  # (Kw, Pa, d): the current iterates of the states of steps k+1 .. k+Kw
        sweeps = picard_steps = fallback_steps = fallbacks = run_sweeps = run_steps = 0
        while k < n_steps and za.shape[0]:
            Kw = min(window, n_steps - k)
            Pa = za.shape[0]
            if Y is None:
                Y = za.unsqueeze(0).expand(Kw, Pa, d).clone()
            elif Y.shape[0] > Kw:
                Y = Y[:Kw]
            dW = self.dW(k, Kw)
            F, G, _ = self.parts(torch.cat([za.unsqueeze(0), Y[:-1]]).view(Kw * Pa, d))
            Yn = self._increment(F, G, dW.reshape(Kw * Pa, -1)).view(Kw, Pa, d)
            Yn[0] += za
            Yn.cumsum_(0)  # Yn_i = x_k + Σ_{l<=i} increment_l
            sweeps += 1
            # per path and step: max_i |change| <= tol max_i |x| (relative, also for paths near 0)
            change = (Yn - Y).abs_().amax(2)
            scale = Yn.abs().amax(2)
            ok = (change <= scale.mul(tol)).all(1)  # NaN compares False
            a = min(int(ok.cumprod(0).sum()) + 1, Kw)
            # progress check over blocks of _SLOW_SWEEPS sweeps (a fresh window needs ~10-20
            # sweeps before its iterates reach tol, advancing one step per sweep meanwhile)
            run_sweeps, run_steps = run_sweeps + 1, run_steps + a
            slow = run_sweeps >= _SLOW_SWEEPS and run_steps < 2 * run_sweeps
            if run_sweeps >= _SLOW_SWEEPS:
                run_sweeps = run_steps = 0
            if slow or not float(scale[:a].max()) <= blowup:
                c = min(chunk, n_steps - k)
                za = self.stepwise(za, k, c)
                k += c
                fallback_steps += c
                fallbacks += 1
                Y, run_sweeps, run_steps = None, 0, 0
                continue
            self.put_states(k, za, Yn[:a - 1])
            za = Yn[a - 1]
            k += a
            picard_steps += a
            Y = torch.cat([Yn[a:], Yn[-1:].expand(a, Pa, d)]) if a < Kw else None
        self.info = {"engine": "picard", "window": window, "tol": tol, "sweeps": sweeps,
                     "picard_steps": picard_steps, "fallback_steps": fallback_steps, "fallbacks": fallbacks,
                     "steps_per_sweep": picard_steps / max(sweeps, 1)}
        return za


def _compiled_block(parts, kind: str, unroll: int):
    """``(z (P, d), dW (unroll, P, m), dt, blowup) -> (Y (unroll, P, d), inside)``: ``unroll``
    Euler–Maruyama steps x_{i+1} = x_i + F(x_i) dt + G(x_i) dW_i (the loop unrolled at trace time),
    Y_i = x_{i+1}, and ``inside`` = every entry of Y finite and within ±blowup; compiled by inductor
    with the C++ wrapper (a lower per-call cost) and static shapes. ``dt`` and ``blowup`` are 0-d
    tensors and the weights are read as inputs, so another step size, bound or set of weights of the
    same model reuses the compiled code.

    The step is written ``z + F * dt`` rather than ``torch.add(z, F, alpha=dt)``: inductor
    (torch 2.13) fuses ``add(mm(a, b), alpha=c)`` into ``addmm`` and drops ``alpha``, which
    gave wrong paths for linear drifts (measured; the tests compare with the loop).
    """

    def block(z: Tensor, dW: Tensor, dt: Tensor, blowup: Tensor):
        ys = []
        for j in range(unroll):
            F, G, _ = parts(z)
            if kind == "general":
                z = z + F * dt + torch.bmm(G, dW[j].unsqueeze(-1)).squeeze(-1)
            else:
                z = torch.addcmul(z + F * dt, G, dW[j])  # scalar dW (P, 1) broadcasts over d
            ys.append(z)
        Y = torch.stack(ys)
        return Y, (Y.abs() <= blowup).all()  # NaN compares False

    return torch.compile(block, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


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
