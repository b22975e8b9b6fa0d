"""Controlled Itô SDEs: the user's problem as one object, and the paper's systems.

A :class:`ControlledSDE` describes

    dx = F(x) dt + G(x) dB_t,   F = f0 + [u_drift],   G = g0 + [u],   B_t in R^m

in **error coordinates** ``z = x - x*`` (``x*`` = ``equilibrium``): every method of the
object takes and returns ``z``, so the target is always the origin and a controller
with ``u(0) = 0`` keeps it an equilibrium. Use :meth:`ControlledSDE.to_error` /
:meth:`ControlledSDE.from_error` to convert states.

Shapes (B = batch, d = ``dim``, m = ``noise_dim``):

- ``f0(z)`` -> (B, d);
- ``g0(z)`` -> (B, d) for ``noise_type`` ``"scalar"`` (one Brownian motion, m = 1; the
  paper's default) and ``"diagonal"`` (m = d independent motions, G = diag(g)),
  (B, d, m) for ``"general"``;
- ``f(t, z)`` / ``g(t, z)``: the torchsde interface (``g`` is (B, d, 1) for scalar noise,
  (B, d) diagonal, (B, d, m) general), so the object runs in ``torchsde.sdeint``;
- ``drift(z)`` (B, d) and ``diffusion_matrix(z)`` (B, d, m): the dense forms that the
  losses and the generator use.

A new system: subclass and implement ``f0``/``g0``, or pass two callables::

    sde = ControlledSDE(dim=1, f0=lambda z: z * torch.log1p(z.abs()), domain=Box([0.0], [50.0]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "SYSTEMS",
    "Box",
    "ControlledSDE",
    "CellFate",
    "EchoState",
    "Energy1D",
    "Harmonic",
    "Hopf",
    "InvertedPendulum",
    "Lorenz",
    "Prop32",
    "StuartLandau",
    "echo_state_matrix",
    "make_system",
]

NOISE_TYPES = ("scalar", "diagonal", "general")
CONTROL_ENTRIES = ("diffusion", "drift", "both")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``low <= z <= high`` (error coordinates) to draw training states from."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __init__(self, low: Sequence[float], high: Sequence[float]):
        low, high = tuple(float(v) for v in low), tuple(float(v) for v in high)
        if len(low) != len(high) or not low:
            raise ValueError(f"Box: low and high must have the same non-zero length, got {len(low)} and {len(high)}")
        if any(h <= lo for lo, h in zip(low, high, strict=True)):
            raise ValueError(f"Box: every high must exceed its low, got low={low}, high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def cube(cls, dim: int, low: float, high: float) -> Box:
        return cls([low] * dim, [high] * dim)

    @property
    def dim(self) -> int:
        return len(self.low)

    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
        """``n`` states uniform in the box: (n, dim)."""
        lo = torch.tensor(self.low, dtype=dtype)
        hi = torch.tensor(self.high, dtype=dtype)
        return lo + (hi - lo) * torch.rand(n, self.dim, generator=generator, dtype=dtype)


class ControlledSDE(nn.Module):
    """dz = (f0(z) [+ u_drift(z)]) dt + (g0(z) [+ u(z)]) dB_t in error coordinates z = x - x*.

    Args:
        dim: state dimension d.
        f0: uncontrolled drift, (B, d) -> (B, d); or override :meth:`f0` in a subclass.
        g0: uncontrolled diffusion (shapes in the module docstring); ``None`` = no noise
            without control (the paper's systems except the harmonic oscillator).
        noise_type: ``"scalar"`` | ``"diagonal"`` | ``"general"``.
        noise_dim: m (only for ``"general"``; 1 for scalar, d for diagonal).
        controller: u, a module (B, d) -> (B, d) (or (B, d, m) for general noise) with u(0) = 0.
        control_entry: where ``controller`` enters: ``"diffusion"`` (the paper), ``"drift"``,
            or ``"both"`` (then ``drift_controller`` drives the drift, ``controller`` the noise).
        drift_controller: the drift control for ``control_entry="both"``.
        equilibrium: x* (d,), the target in original coordinates (default 0).
        domain: :class:`Box` of error coordinates to draw training states from.
    """

    sde_type = "ito"

    def __init__(
        self,
        dim: int,
        *,
        f0: Callable[[Tensor], Tensor] | None = None,
        g0: Callable[[Tensor], Tensor] | None = None,
        noise_type: str = "scalar",
        noise_dim: int | None = None,
        controller: nn.Module | None = None,
        control_entry: str = "diffusion",
        drift_controller: nn.Module | None = None,
        equilibrium: Sequence[float] | Tensor | None = None,
        domain: Box | None = None,
        name: str = "custom",
    ):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
        if control_entry not in CONTROL_ENTRIES:
            raise ValueError(f"control_entry must be one of {CONTROL_ENTRIES}, got {control_entry!r}")
        if control_entry == "both" and drift_controller is None and controller is not None:
            raise ValueError("control_entry='both' needs drift_controller (the drift control) besides controller")
        self.dim = dim
        self.noise_type = noise_type
        if noise_type == "scalar":
            self.noise_dim = 1
        elif noise_type == "diagonal":
            self.noise_dim = dim
        else:
            if noise_dim is None or noise_dim < 1:
                raise ValueError(f"noise_type='general' needs noise_dim >= 1, got {noise_dim!r}")
            self.noise_dim = int(noise_dim)
        self._f0 = f0
        self._g0 = g0
        # add_module (not plain assignment) so that None is a registered slot that
        # with_controller can fill, rather than an instance attribute shadowing it
        self.add_module("controller", controller)
        self.add_module("drift_controller", drift_controller)
        self.control_entry = control_entry
        eq = torch.zeros(dim) if equilibrium is None else torch.as_tensor(equilibrium, dtype=torch.float64).reshape(-1)
        if eq.numel() != dim:
            raise ValueError(f"equilibrium must have {dim} entries, got {eq.numel()}")
        self.register_buffer("equilibrium", eq.to(torch.float64), persistent=False)
        self.domain = domain if domain is not None else Box.cube(dim, -1.0, 1.0)
        if self.domain.dim != dim:
            raise ValueError(f"domain has dimension {self.domain.dim}, the system has dim={dim}")
        self.name = name

    # ------------------------------------------------------------------ to override
    def f0(self, z: Tensor) -> Tensor:
        """Uncontrolled drift (B, d) in error coordinates."""
        if self._f0 is None:
            raise NotImplementedError("pass f0=... or override f0 in a subclass")
        return self._f0(z)

    def g0(self, z: Tensor) -> Tensor | None:
        """Uncontrolled diffusion ((B, d) scalar/diagonal, (B, d, m) general), or None for zero."""
        return None if self._g0 is None else self._g0(z)

    # ------------------------------------------------------------------ coordinates
    def to_error(self, x: Tensor) -> Tensor:
        return x - self.equilibrium.to(x)

    def from_error(self, z: Tensor) -> Tensor:
        return z + self.equilibrium.to(z)

    def with_controller(self, controller: nn.Module | None, drift_controller: nn.Module | None = None) -> ControlledSDE:
        """A shallow copy of this system with another controller (``None`` = uncontrolled)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._modules = dict(self._modules)
        new._parameters = dict(self._parameters)
        new._buffers = dict(self._buffers)
        new._modules["controller"] = controller
        new._modules["drift_controller"] = drift_controller if drift_controller is not None else (
            self.drift_controller if controller is not None else None
        )
        return new

    # ------------------------------------------------------------------ checked pieces
    def _check_state(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"state z must have shape (batch, {self.dim}), got {tuple(z.shape)}")

    def _g_shape(self, b: int) -> tuple[int, ...]:
        return (b, self.dim, self.noise_dim) if self.noise_type == "general" else (b, self.dim)

    def _checked_f0(self, z: Tensor) -> Tensor:
        out = self.f0(z)
        if out.shape != z.shape:
            raise ValueError(f"{self.name}: f0 must return shape {tuple(z.shape)} (batch, dim), got {tuple(out.shape)}")
        return out

    def _checked_g0(self, z: Tensor) -> Tensor:
        out = self.g0(z)
        want = self._g_shape(z.shape[0])
        if out is None:
            return z.new_zeros(want)
        if tuple(out.shape) != want:
            raise ValueError(
                f"{self.name}: g0 must return shape {want} for noise_type={self.noise_type!r}, got {tuple(out.shape)}"
            )
        return out

    def control(self, z: Tensor) -> Tensor | None:
        """The diffusion (or, with ``control_entry='drift'``, the drift) control u(z), or None."""
        if self.controller is None:
            return None
        u = self.controller(z)
        want_g = self._g_shape(z.shape[0])
        if self.control_entry == "drift":
            if u.shape != z.shape:
                raise ValueError(f"controller must return shape {tuple(z.shape)} for drift control, got {tuple(u.shape)}")
        elif tuple(u.shape) != want_g:
            raise ValueError(
                f"controller must return shape {want_g} for noise_type={self.noise_type!r}, got {tuple(u.shape)}"
            )
        return u

    def drift_and_diffusion(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """F(z) (B, d), G(z) in the noise type's compact shape, and the control(s) applied.

        The third output is u(z) (B, ...) for the energy cost; with ``control_entry='both'``
        it is the concatenation of the diffusion and drift controls.
        """
        self._check_state(z)
        F = self._checked_f0(z)
        G = self._checked_g0(z)
        u = self.control(z)
        applied = None
        if u is not None:
            if self.control_entry == "drift":
                F = F + u
                applied = u
            else:
                G = G + u
                applied = u.reshape(u.shape[0], -1)
                if self.control_entry == "both":
                    ud = self.drift_controller(z)
                    if ud.shape != z.shape:
                        raise ValueError(f"drift_controller must return shape {tuple(z.shape)}, got {tuple(ud.shape)}")
                    F = F + ud
                    applied = torch.cat([applied, ud], dim=1)
        return F, G, applied

    def dense(self, G: Tensor) -> Tensor:
        """Compact G -> the dense (B, d, m) diffusion matrix."""
        if self.noise_type == "scalar":
            return G.unsqueeze(-1)
        if self.noise_type == "diagonal":
            return torch.diag_embed(G)
        return G

    def drift(self, z: Tensor) -> Tensor:
        return self.drift_and_diffusion(z)[0]

    def diffusion_matrix(self, z: Tensor) -> Tensor:
        """G(z) as a dense (B, d, m) matrix (diagonal noise is expanded)."""
        return self.dense(self.drift_and_diffusion(z)[1])

    def lean_parts(self) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]:
        """A lean ``z -> drift_and_diffusion(z)`` for the simulator's inner loop (same numbers).

        It skips the per-call shape checks (the simulator checks shapes once with
        :meth:`drift_and_diffusion` before using it) and evaluates the built-in controllers
        from their weights with ``addmm`` instead of module calls: at 20 paths the cost of a
        step is per-operation dispatch, not arithmetic. The weights are read when this is
        called, so build it after casting the module and do not train while using it.
        """
        f0, g0, entry = self.f0, self.g0, self.control_entry
        u_fn = None if self.controller is None else _lean_controller(self.controller)
        ud_fn = None if self.drift_controller is None else _lean_controller(self.drift_controller)
        shape_g = self._g_shape

        def parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
            F = f0(z)
            G = g0(z)
            if u_fn is None:
                return F, (z.new_zeros(shape_g(z.shape[0])) if G is None else G), None
            u = u_fn(z)
            if entry == "drift":
                return F + u, (z.new_zeros(shape_g(z.shape[0])) if G is None else G), u
            Gt = u if G is None else G + u
            if entry == "both":
                ud = ud_fn(z)
                return F + ud, Gt, torch.cat([u.reshape(u.shape[0], -1), ud], dim=1)
            return F, Gt, u

        return parts

    # ------------------------------------------------------------------ torchsde interface
    def f(self, t, z: Tensor) -> Tensor:
        return self.drift(z)

    def g(self, t, z: Tensor) -> Tensor:
        G = self.drift_and_diffusion(z)[1]
        return G.unsqueeze(-1) if self.noise_type == "scalar" else G

    def default_x0(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """Initial error states for evaluation: (n, d); systems override with the paper's choice."""
        return self.domain.sample(n, generator=generator, dtype=dtype) * 0.5


# Above this many rows a product z W^T is taken as (W z^T)^T: for the skinny matrices of small
# controllers (inner sizes 2-80) BLAS is several times faster with the long dimension last
# (measured 4-6x at 2560 rows, float64); the Picard engine evaluates thousands of rows at once.
_FEATURE_MAJOR_ROWS = 256
# While torch.compile traces (the compiled simulation engine), products with an inner size up to this
# are written as a broadcast product and a sum, which inductor fuses with the surrounding elementwise
# code into its own loops instead of calling BLAS once per product (at 20 rows the call, not the
# arithmetic, is the cost). Set from measurements (benchmarks/sde_control/speed.py, section unroll).
_COMPILED_SUM_INNER = 16


def _small_product(z: Tensor, Wt: Tensor) -> Tensor:
    return (z.unsqueeze(-1) * Wt).sum(-2)


def rows_matmul(z: Tensor, Wt: Tensor) -> Tensor:
    """z @ Wt for z (B, i), Wt (i, o), in the faster memory layout for large B (same values up to rounding)."""
    if Wt.shape[0] <= _COMPILED_SUM_INNER and torch.compiler.is_compiling():
        return _small_product(z, Wt)
    if z.shape[0] >= _FEATURE_MAJOR_ROWS:
        return torch.mm(Wt.t(), z.t()).t()
    return torch.mm(z, Wt)


def _lean_mlp(seq: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """``seq`` (an ``nn.Sequential`` of Linear and ReLU/Tanh layers) as a closure of addmm calls, or None."""
    if not isinstance(seq, nn.Sequential):
        return None
    ops: list[tuple[str, Tensor | None, Tensor | None, Tensor | None, Tensor | None]] = []
    for layer in seq:
        if isinstance(layer, nn.Linear):
            b = layer.bias
            ops.append(("linear", layer.weight.t(), b, layer.weight, None if b is None else b.unsqueeze(1)))
        elif isinstance(layer, nn.ReLU):
            ops.append(("relu", None, None, None, None))
        elif isinstance(layer, nn.Tanh):
            ops.append(("tanh", None, None, None, None))
        else:
            return None

    def run(h: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # see _COMPILED_SUM_INNER
            for kind, Wt, b, _, _ in ops:
                if kind == "linear":
                    if Wt.shape[0] <= _COMPILED_SUM_INNER:
                        h = _small_product(h, Wt) if b is None else _small_product(h, Wt) + b
                    else:
                        h = torch.mm(h, Wt) if b is None else torch.addmm(b, h, Wt)
                else:
                    h = h.relu() if kind == "relu" else h.tanh()
            return h
        if h.shape[0] >= _FEATURE_MAJOR_ROWS:
            g = h.t()  # (features, rows): see rows_matmul
            for kind, _, _, W, bcol in ops:
                if kind == "linear":
                    g = torch.mm(W, g) if bcol is None else torch.addmm(bcol, W, g)
                elif kind == "relu":
                    g = g.relu_()
                else:
                    g = g.tanh_()
            return g.t()
        for kind, Wt, b, _, _ in ops:
            if kind == "linear":
                h = torch.mm(h, Wt) if b is None else torch.addmm(b, h, Wt)
            elif kind == "relu":
                h = h.relu_()  # h is a fresh output of addmm here, never the caller's state
            else:
                h = h.tanh_()
        return h

    return run if ops and ops[0][0] == "linear" else None


def _lean_controller(ctrl: nn.Module) -> Callable[[Tensor], Tensor]:
    """The built-in controllers evaluated from their weights (same values as ``ctrl(z)``); others as calls."""
    from auxfn.sde_control.controllers import LinearGain, ZeroPreservingMLP

    if type(ctrl) is LinearGain:
        Kt = ctrl.K.t()
        return lambda z: rows_matmul(z, Kt.to(z.dtype))
    if type(ctrl) is ZeroPreservingMLP:
        net = _lean_mlp(ctrl.net)
        if net is not None:
            d, m = ctrl.dim, ctrl.noise_dim
            if m == 1:
                return lambda z: net(z).mul_(z)
            return lambda z: net(z).view(-1, d, m).mul_(z.unsqueeze(-1))
    return ctrl


# ============================================================================ the paper's systems


class Energy1D(ControlledSDE):
    """dx = x log(1 + |x|) dt + u dB (paper §5, 'Energy'), x0 = 20.

    The official code trains on U(0, 50); paths from 20 do cross 0 under the control's noise,
    where such a controller was never trained (2 of 10 paths diverged in our runs), so the
    default box is the symmetric (-50, 50).
    """

    def __init__(self, **kw):
        kw.setdefault("domain", Box([-50.0], [50.0]))
        super().__init__(1, name="energy", **kw)

    def f0(self, z):
        return z * torch.log1p(z.abs())

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return torch.full((n, 1), 20.0, dtype=dtype)


class Prop32(ControlledSDE):
    """dx = x log|x| dt + u dB (Proposition 3.2): no linear u = kx stabilises it, u = 2x^2 does."""

    def __init__(self, **kw):
        kw.setdefault("domain", Box([0.0], [50.0]))
        super().__init__(1, name="prop32", **kw)

    def f0(self, z):
        a = z.abs()
        # x log|x| -> 0 as x -> 0; clamp keeps log finite and the value exactly 0 at 0
        return torch.where(a > 0, z * torch.log(a.clamp_min(1e-300)), torch.zeros_like(z))

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return torch.full((n, 1), 50.0, dtype=dtype)


class Harmonic(ControlledSDE):
    """Harmonic oscillator with destabilising multiplicative noise (paper §5.1).

    dx1 = x2 dt + u1 dB,  dx2 = (-x1 - 2 beta x2) dt + (k1 x1 + k2 x2 + u2) dB, one scalar B.
    """

    def __init__(self, beta: float = 0.5, k1: float = -3.0, k2: float = 2.15, **kw):
        kw.setdefault("domain", Box.cube(2, -6.0, 6.0))
        super().__init__(2, name="harmonic", **kw)
        self.beta, self.k1, self.k2 = beta, k1, k2
        # both parts are linear: f0(z) = z A^T, g0(z) = z C^T (one matmul each, cheap to simulate)
        self.register_buffer("At", torch.tensor([[0.0, 1.0], [-1.0, -2.0 * beta]], dtype=torch.float64).T.contiguous(),
                             persistent=False)
        self.register_buffer("Ct", torch.tensor([[0.0, 0.0], [k1, k2]], dtype=torch.float64).T.contiguous(),
                             persistent=False)

    def f0(self, z):
        return rows_matmul(z, self.At.to(z.dtype))

    def g0(self, z):
        g = rows_matmul(z, self.Ct.to(z.dtype))
        return g if self.noise_type != "general" else g.unsqueeze(-1)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return Box.cube(2, -2.0, 2.0).sample(n, generator=generator, dtype=dtype)


class InvertedPendulum(ControlledSDE):
    """theta'' = (G/L) sin theta - b theta'/(m L^2), control (theta u1, theta' u2) dB (paper §5.2)."""

    def __init__(self, gravity: float = 9.81, length: float = 0.5, mass: float = 0.15, friction: float = 0.1, **kw):
        kw.setdefault("domain", Box.cube(2, -10.0, 10.0))
        super().__init__(2, name="pendulum", **kw)
        self.gravity, self.length, self.mass, self.friction = gravity, length, mass, friction

    def f0(self, z):
        th, om = z[:, 0], z[:, 1]
        acc = self.gravity / self.length * torch.sin(th) - self.friction * om / (self.mass * self.length**2)
        return torch.stack([om, acc], dim=1)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        pts = torch.tensor([[-5.0, 5.0], [-3.0, 4.0], [-1.0, 3.0], [1.0, -3.0], [3.0, -4.0], [5.0, -5.0]], dtype=dtype)
        return pts[torch.arange(n) % 6]


class Hopf(ControlledSDE):
    """Radius of the Hopf normal form around its unstable cycle rho = 5: z = rho - 5, dz = z(z+5)(z+10) dt + u dB."""

    def __init__(self, **kw):
        kw.setdefault("domain", Box([-30.0], [30.0]))
        super().__init__(1, name="hopf", **kw)

    def f0(self, z):
        return z * (z + 5.0) * (z + 10.0)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return Box([-2.0], [5.0]).sample(n, generator=generator, dtype=dtype)  # rho0 ~ U(3, 10)


class Lorenz(ControlledSDE):
    """Lorenz system (sigma=10, rho=28, beta=8/3); target ``"P1"`` = 0 or ``"P2"`` = (6 sqrt2, 6 sqrt2, 27)."""

    def __init__(self, target: str = "P1", sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0, **kw):
        if target not in ("P1", "P2"):
            raise ValueError(f"Lorenz target must be 'P1' or 'P2', got {target!r}")
        c = math.sqrt(beta * (rho - 1.0))
        eq = (0.0, 0.0, 0.0) if target == "P1" else (c, c, rho - 1.0)
        kw.setdefault("domain", Box.cube(3, -10.0, 10.0))
        super().__init__(3, name=f"lorenz-{target}", equilibrium=eq, **kw)
        self.target, self.sigma, self.rho, self.beta = target, sigma, rho, beta

    def f0(self, z):
        x = self.from_error(z)
        a, b, c = x[:, 0], x[:, 1], x[:, 2]
        return torch.stack([self.sigma * (b - a), a * (self.rho - c) - b, a * b - self.beta * c], dim=1)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return self.to_error(torch.tensor([[3.0, 5.0, 6.0]], dtype=dtype)).expand(n, 3).clone()  # Q2


class StuartLandau(ControlledSDE):
    """A Stuart-Landau network of n oscillators, synchronised in phase on the unit circle (paper §5.5).

    z_j' = z_j - (1 + i c2)|z_j|^2 z_j - sigma (1 + i c1) sum_k L_jk z_k, L = I - 11^T/n, in
    the coordinates phi_j = rho_j - 1 (j = 1..n) and dtheta_j = theta_j - theta_{j+1}
    (j = 1..n-1): d = 2n - 1. Diagonal noise (one Brownian motion per coordinate).
    """

    def __init__(self, n: int = 20, sigma: float = 0.01, c1: float = -1.8, c2: float = 4.0, **kw):
        if n < 2:
            raise ValueError(f"StuartLandau needs n >= 2 oscillators, got {n}")
        d = 2 * n - 1
        kw.setdefault("noise_type", "diagonal")
        kw.setdefault("domain", Box([0.0] * n + [-10.0] * (n - 1), [5.0] * n + [10.0] * (n - 1)))
        super().__init__(d, name=f"stuart-{n}", **kw)
        self.n, self.sigma, self.c1, self.c2 = n, sigma, c1, c2
        self._mat_cache: dict = {}

    def polar(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(rho, theta) (B, n) from error coordinates; theta_n = 0 (only differences matter)."""
        n = self.n
        rho = z[:, :n] + 1.0
        dth = z[:, n:]
        # theta_j = sum_{k >= j} dtheta_k, a reversed cumulative sum
        tail = torch.flip(torch.cumsum(torch.flip(dth, [1]), 1), [1])
        theta = torch.cat([tail, torch.zeros_like(rho[:, :1])], dim=1)
        return rho, theta

    def _mats(self, z: Tensor) -> Tensor:
        """U (n-1, n) with theta = dtheta U (theta_j = sum_{k >= j} dtheta_k, theta_n = 0), cached per
        dtype/device."""
        key = (z.dtype, z.device)
        if key not in self._mat_cache:
            n = self.n
            U = torch.zeros(n - 1, n, dtype=z.dtype, device=z.device)
            U[:, :-1] = torch.tril(torch.ones(n - 1, n - 1, dtype=z.dtype, device=z.device))
            self._mat_cache[key] = U
        return self._mat_cache[key]

    def f0(self, z):
        s, c1, c2, n = self.sigma, self.c1, self.c2, self.n
        # sum_k L_jk h_k = h_j - mean(h) (global coupling, L = I - 11^T/n), and the O(n^2) sums
        # mean_k rho_k cos(theta_k - theta_j), mean_k rho_k sin(theta_k - theta_j) are
        # Re / Im of e^{-i theta_j} M with the order parameter M = mc + i ms = mean_k rho_k e^{i theta_k}:
        # O(n). Written with few tensor operations (a step's cost is per-operation dispatch):
        #   mean_cos - c1 mean_sin = cos_j A + sin_j B,  c1 mean_cos + mean_sin = cos_j B - sin_j A,
        #   A = mc - c1 ms,  B = ms + c1 mc.
        rho = z[:, :n] + 1.0
        U = self._mats(z)
        theta = torch.mm(z[:, n:], U)  # (B, n), theta_n = 0 (only differences matter)
        cos, sin = torch.cos(theta), torch.sin(theta)
        mc = (rho * cos).mean(dim=1, keepdim=True)
        ms = (rho * sin).mean(dim=1, keepdim=True)
        A = torch.add(mc, ms, alpha=-c1)
        B = torch.add(ms, mc, alpha=c1)
        P = torch.addcmul(cos * A, sin, B)
        Q = torch.addcmul(cos * B, sin, A, value=-1.0)
        r2 = rho * rho
        # drho = rho - rho^3 - s (rho - P);  dtheta = -c2 rho^2 - s (c1 rho - Q) / rho
        drho = torch.addcmul(P * s, rho, torch.rsub(r2, 1.0 - s))
        dtheta = torch.addcdiv(r2 * (-c2) - s * c1, Q, rho, value=s)
        # the phase-difference coordinates: one slice difference (not a product with a difference
        # matrix: under engine="compiled" a product is a BLAS call per step, a difference fuses)
        return torch.cat([drho, dtheta[:, :-1] - dtheta[:, 1:]], dim=1)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return Box([0.0] * self.n + [-3.0] * (self.n - 1), [2.0] * self.n + [3.0] * (self.n - 1)).sample(
            n, generator=generator, dtype=dtype
        )


def echo_state_matrix(dim: int = 50, *, p: float | None = None, scale: float = 0.3, radius: float = 2.0, seed: int = 0) -> Tensor:
    """A seeded Erdős–Rényi reservoir: edges with probability p (6/dim), weights U(0, scale), spectral radius ``radius``."""
    rng = np.random.default_rng(seed)
    p = 6.0 / dim if p is None else p
    A = (rng.random((dim, dim)) < p) * rng.uniform(0.0, scale, (dim, dim))
    rad = np.max(np.abs(np.linalg.eigvals(A)))
    if rad == 0:
        raise ValueError("echo_state_matrix: the random graph has no cycle (spectral radius 0); change seed or p")
    return torch.from_numpy(A * (radius / rad))


class EchoState(ControlledSDE):
    """Echo-state network dx = tanh(A x) dt + u(x) dB (paper §5.6), A from :func:`echo_state_matrix`."""

    def __init__(self, dim: int = 50, seed: int = 0, activation: str = "tanh", **kw):
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        kw.setdefault("domain", Box.cube(dim, -10.0, 10.0))
        super().__init__(dim, name=f"echo-{dim}", **kw)
        self.register_buffer("A", echo_state_matrix(dim, seed=seed), persistent=False)
        self.activation = activation

    def f0(self, z):
        h = z @ self.A.to(z).T
        return torch.tanh(h) if self.activation == "tanh" else torch.relu(h)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        return torch.linspace(-2.0, 2.0, self.dim, dtype=dtype).expand(n, self.dim).clone()


CELL_FATE_U2 = (0.5, 0.74645887, 1.05370735, 0.38154169, 1.68833014, 0.83746371)


class CellFate(ControlledSDE):
    """A 6-gene cell-fate regulatory network around its saddle U2 (rebuttal, model-free experiment).

        x1' = 0.5 - a x1
        x2' = 5 x1 / ((1 + x1)(1 + x3^4)) - b x2
        x3' = 5 x4 / ((1 + x4)(1 + x2^4)) - c x3
        x4' = 0.5 / (1 + x2^4) - a x4
        x5' = (x1 x4 / (1 + x1 x4) + 4 x3 / (1 + x3)) / (1 + x2^4) - a x5
        x6' = (x1 x4 / (1 + x1 x4) + 4 x2 / (1 + x2)) / (1 + x3^4) - a x6

    a = b = c = 1. The target U2 (:data:`CELL_FATE_U2`) is an equilibrium with one unstable
    direction (Jacobian eigenvalue about +0.72): uncontrolled paths leave it for another cell
    fate. Scalar noise; the paper's controller pins gene 2 only (``pin=(1,)``: u acts on the
    noise of x2 and sees only x2). Training box: error coordinates in [-1, 1]^6, which holds
    the official initial state (0.5, -0.9, 0.6, -0.6, -0.9, 0.5) and keeps every denominator
    positive (x1, x3, x4 > -1 and x1 x4 > -1 there).
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 1.0, **kw):
        u2 = torch.tensor(CELL_FATE_U2, dtype=torch.float64)
        kw.setdefault("domain", Box.cube(6, -1.0, 1.0))
        super().__init__(6, name="cellfate", equilibrium=u2, **kw)
        self.a, self.b, self.c = a, b, c
        self._offset: dict = {}  # f(U2) per (dtype, device)

    def f0(self, z):
        # U2 is known to 8 digits (|f(U2)| ~ 1e-8): subtract f(U2) so the origin is an exact equilibrium
        key = (z.dtype, z.device)
        if key not in self._offset:
            self._offset[key] = self._rhs(self.equilibrium.to(z).unsqueeze(0))
        return self._rhs(self.from_error(z)) - self._offset[key]

    def _rhs(self, x):
        x1, x2, x3, x4, x5, x6 = x.unbind(1)
        h2 = 1.0 / (1.0 + x2**4)
        h3 = 1.0 / (1.0 + x3**4)
        p14 = x1 * x4 / (1.0 + x1 * x4)
        return torch.stack([
            0.5 - self.a * x1,
            5.0 * x1 / (1.0 + x1) * h3 - self.b * x2,
            5.0 * x4 / (1.0 + x4) * h2 - self.c * x3,
            0.5 * h2 - self.a * x4,
            (p14 + 4.0 * x3 / (1.0 + x3)) * h2 - self.a * x5,
            (p14 + 4.0 * x2 / (1.0 + x2)) * h3 - self.a * x6,
        ], dim=1)

    def default_x0(self, n, *, generator=None, dtype=torch.float64):
        # the official initial state (error coordinates)
        return torch.tensor([[0.5, -0.9, 0.6, -0.6, -0.9, 0.5]], dtype=dtype).expand(n, 6).clone()


SYSTEMS: dict[str, Callable[..., ControlledSDE]] = {
    "energy": Energy1D,
    "prop32": Prop32,
    "harmonic": Harmonic,
    "pendulum": InvertedPendulum,
    "hopf": Hopf,
    "lorenz": Lorenz,
    "stuart": StuartLandau,
    "echo": EchoState,
    "cellfate": CellFate,
}


def make_system(name: str, **kwargs) -> ControlledSDE:
    """Build one of :data:`SYSTEMS` by name."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")
    return SYSTEMS[name](**kwargs)
