"""JSLDS: an RNN co-trained with its Jacobian switching linear dynamical system.

Two recurrences start from one learned state ``h0`` and share the cell ``F`` and one
affine readout ``y = W s + b`` (Smith, Linderman & Sussillo 2021, Sec. 3)::

    RNN:    h_t = F(h_{t-1}, x_t)
    JSLDS:  e_t = E(a_{t-1})                                    expansion point
            a_t = e_t + J_h(e_t, x*)(a_{t-1} - e_t) + J_x(e_t, x*)(x_t - x*)

The JSLDS replaces the zeroth-order Taylor term F(e_t, x*) by e_t, which is exact when
e_t is a fixed point; the fixed-point loss pushes it there. The first-order term is one
forward-mode product per step (``cell_jvp``): J is never formed in training, and
F(e_t, x*) comes from the same pass (its primal), for the fixed-point loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from auxfn.jslds.cells import cell_dims, cell_jacobians, cell_jvp
from auxfn.jslds.expansion import ExpansionNet

__all__ = ["JSLDS", "StaticChannels", "Trajectories"]


@dataclass
class Trajectories:
    """What ``JSLDS.forward`` returns; every tensor is ``(batch, time, ...)``.

    ``h``: RNN states, ``a``: JSLDS states, ``e``: expansion points ``E(a_{t-1})``,
    ``F_e``: ``F(e_t, x*_t)``, ``y_rnn`` / ``y_jslds``: readouts of ``h`` / ``a``.
    Fields of a recurrence that was not run are ``None``.
    """

    h: torch.Tensor | None
    a: torch.Tensor | None
    e: torch.Tensor | None
    F_e: torch.Tensor | None
    y_rnn: torch.Tensor | None
    y_jslds: torch.Tensor | None

    def detach(self) -> Trajectories:
        return Trajectories(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).detach() for f in fields(self)})

    def squared_distance(self, a: str, b: str) -> torch.Tensor | None:
        """``sum (self.a - self.b)^2`` when the forward pass already computed it, else None.

        The native sequence kernel accumulates the fixed-point (``"F_e", "e"``) and approx
        (``"h", "a"``) totals as it runs, and adds their gradients inside its backward; the loss
        then needs no pass over the trajectories. The total is used only while both fields are
        still the very tensors it was computed from (a replaced or edited trajectory is summed anew).
        """
        hit = getattr(self, "_sums", {}).get((a, b))
        if hit is None or hit[0] is not getattr(self, a) or hit[1] is not getattr(self, b):
            return None
        return hit[2]


class StaticChannels:
    """``x*(x_t)``: zeros except the listed input channels, copied from ``x_t``.

    For the context-integration task, ``StaticChannels([2, 3])`` gives ``x* = [0, 0, 1, 0]``
    in the motion context and ``[0, 0, 0, 1]`` in the colour context.
    """

    def __init__(self, channels: Sequence[int]):
        self.channels = [int(c) for c in channels]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[..., self.channels] = x[..., self.channels]
        return out

    def __repr__(self) -> str:
        return f"StaticChannels({self.channels})"


XStar = None | str | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


class JSLDS(nn.Module):
    """An RNN cell ``F`` co-trained with its JSLDS; see the module docstring for the equations.

    Args:
        cell: ``F(h: (B, n), x: (B, u)) -> (B, n)``; defines ``n_state`` / ``n_input`` or pass them.
        expansion: ``E: (.., n) -> (.., n)``; default ``ExpansionNet(n, 2)`` (zero-initialised).
        n_out: readout dimension o.
        x_star: input expansion point ``x*``: ``None``/``"zeros"``, a ``(u,)`` tensor, or a
            callable mapping ``x_t: (B, u)`` to ``x*_t: (B, u)`` (e.g. ``StaticChannels``).
        h0_scale: the learned initial state starts as ``N(0, 1) * h0_scale``.
        fused: built-in cells with the built-in expansion net run the whole sequence in one autograd
            Function with a hand-written backward (:mod:`auxfn.jslds.fused`; fastest, same values and
            gradients); ``False`` uses per-step autograd. Other cells always use autograd.
        native: where the whole-sequence path applies (``fused``, CPU, float32/float64), run it on the
            C++ kernel (:mod:`auxfn.jslds.native`: the same values and gradients, two calls per step
            instead of about a hundred ops per time step). Built at first use (needs a C++ compiler and
            ninja); if the build fails, a warning says why and the Python Function runs instead.
    """

    def __init__(
        self,
        cell: nn.Module,
        expansion: nn.Module | None = None,
        n_out: int = 1,
        x_star: XStar = None,
        *,
        n_state: int | None = None,
        n_input: int | None = None,
        h0_scale: float = 0.1,
        generator: torch.Generator | None = None,
        fused: bool = True,
        native: bool = False,
    ):
        super().__init__()
        if n_state is None or n_input is None:
            n, u = cell_dims(cell)
            n_state, n_input = n_state or n, n_input or u
        if n_out < 1:
            raise ValueError(f"n_out must be >= 1, got {n_out}")
        self.n_state, self.n_input, self.n_out = int(n_state), int(n_input), int(n_out)
        self.fused = bool(fused)
        self.native = bool(native)
        # per-step path: E with its residuals folded into the weights (ExpansionNet.folded); False runs
        # E's own forward. Off under train(compile=True): with torch 2.13's inductor, a compiled loss
        # that returns every loss term (not the total alone) gave wrong gradients with the folded E
        # (training diverged from eager from the second step); the unfolded E agrees (slow tests in
        # tests/jslds/test_jslds_sequence.py).
        self.fold_expansion = True
        self.cell = cell
        self.expansion = expansion if expansion is not None else ExpansionNet(self.n_state)
        self.readout = nn.Linear(self.n_state, self.n_out)
        with torch.no_grad():
            self.readout.weight.copy_(torch.randn(self.n_out, self.n_state, generator=generator) / self.n_state**0.5)
            self.readout.bias.zero_()
        self.h0 = nn.Parameter(torch.randn(self.n_state, generator=generator) * h0_scale)
        if x_star is None or (isinstance(x_star, str) and x_star == "zeros"):
            self.register_buffer("x_star_const", torch.zeros(self.n_input))
            self.x_star_fn = None
        elif isinstance(x_star, torch.Tensor):
            if x_star.shape != (self.n_input,):
                raise ValueError(f"x_star must have shape ({self.n_input},) to match the cell's input, got {tuple(x_star.shape)}")
            self.register_buffer("x_star_const", x_star.detach().clone())
            self.x_star_fn = None
        elif callable(x_star):
            self.x_star_const = None
            self.x_star_fn = x_star
        else:
            raise TypeError(f"x_star must be None, 'zeros', a tensor or a callable, got {x_star!r}")

    # ------------------------------------------------------------------ pieces
    def x_star(self, x: torch.Tensor) -> torch.Tensor:
        """The input expansion point for inputs ``x: (..., u)``, same shape."""
        if self.x_star_fn is None:
            return self.x_star_const.to(x.dtype).expand_as(x)
        xs = self.x_star_fn(x)
        if not isinstance(xs, torch.Tensor) or xs.shape != x.shape:
            raise ValueError(f"x_star callable must return a tensor of shape {tuple(x.shape)}, got {getattr(xs, 'shape', xs)}")
        return xs

    def initial_state(self, batch_size: int) -> torch.Tensor:
        # repeat (not expand): forward-mode AD refuses primals whose elements share memory
        return self.h0.unsqueeze(0).repeat(batch_size, 1)

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[2] != self.n_input:
            raise ValueError(f"x must have shape (batch, time, {self.n_input}) for this cell, got {tuple(x.shape)}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *, run_rnn: bool = True, run_jslds: bool = True, h0: torch.Tensor | None = None) -> Trajectories:
        """Run both recurrences over ``x: (B, T, u)``; returns :class:`Trajectories`."""
        self._check_x(x)
        B, T, _ = x.shape
        s0 = self.initial_state(B) if h0 is None else h0
        if s0.shape != (B, self.n_state):
            raise ValueError(f"h0 must have shape ({B}, {self.n_state}), got {tuple(s0.shape)}")
        hs, as_, es, fes = [], [], [], []
        # Cells with an input-projected form (the built-in ones) take the fast paths: the whole-sequence
        # Function with a hand-written backward (_forward_sequence), else per-step autograd (_forward_fast).
        if all(callable(getattr(self.cell, m, None)) for m in ("project_inputs", "input_bias", "forward_px", "fused_jvp_px")):
            if (run_rnn or run_jslds) and self.sequence_kind() is not None and not x.requires_grad:
                return self._forward_sequence(x, s0, run_rnn, run_jslds)
            return self._forward_fast(x, s0, run_rnn, run_jslds)
        # unbind, not x[:, t]: the backward of indexing would zero-fill a full-size gradient per step
        if run_rnn:
            h = s0
            for x_t in x.unbind(1):
                h = self.cell(h, x_t)
                hs.append(h)
        if run_jslds:
            xs = self.x_star(x)
            xs_t, dx_t = xs.unbind(1), (x - xs).unbind(1)
            a = s0
            for t in range(T):
                e = self.expansion(a)
                f_e, d = cell_jvp(self.cell, e, xs_t[t], a - e, dx_t[t])
                a = e + d
                as_.append(a)
                es.append(e)
                fes.append(f_e)
        stack = lambda v: torch.stack(v, 1) if v else None  # noqa: E731
        h_bt, a_bt = stack(hs), stack(as_)
        return Trajectories(
            h=h_bt, a=a_bt, e=stack(es), F_e=stack(fes),
            y_rnn=self.readout(h_bt) if h_bt is not None else None,
            y_jslds=self.readout(a_bt) if a_bt is not None else None,
        )

    def sequence_kind(self) -> str | None:
        """``"gru"`` / ``"tanh"`` / ``"relu"`` when ``forward`` runs the whole-sequence path
        (:mod:`auxfn.jslds.fused`): a built-in cell (not a subclass changing its equations), the
        built-in ``ExpansionNet`` and ``self.fused`` true; else ``None`` (per-step autograd)."""
        if not self.fused:
            return None
        kind = getattr(self.cell, "sequence_kind", None)
        kind = kind() if callable(kind) else None
        if kind is None or type(self.expansion) is not ExpansionNet:
            return None
        return kind

    def _forward_sequence(self, x: torch.Tensor, s0: torch.Tensor, run_rnn: bool, run_jslds: bool) -> Trajectories:
        """All steps in one autograd Function with a hand-written BPTT (see :mod:`auxfn.jslds.fused`);
        the same values and gradients as ``_forward_fast``. The inputs and a constant 1 (0 on the
        tangent rows) ride as extra columns of the stacked rows, against the cell's weights stacked
        as ``[W_h; W_x; b]``; readouts and losses are computed on the stacked trajectories by autograd."""
        from auxfn.jslds.fused import SequenceSpec, sequence_forward

        B, T, _ = x.shape
        kind = self.sequence_kind()
        one, zero = x.new_ones(B, T, 1), x.new_zeros(B, T, 1)
        rows = [torch.cat([x, one], -1)] if run_rnn else []
        if run_jslds:
            xs = self.x_star(x)
            rows += [torch.cat([xs, one], -1), torch.cat([x - xs, zero], -1)]
        X = torch.cat(rows, 0).transpose(0, 1)  # (T, rows, u + 1)
        wa, wb = self.cell.sequence_weights()
        spec = SequenceSpec(kind, run_rnn, run_jslds, len(self.expansion.layers))
        expansion = self.expansion.folded_weights() if run_jslds else []
        if self.native:  # falls back to the Python Function off CPU, for other dtypes, or without a build
            from auxfn.jslds.native import sequence_forward as native_forward

            h, F_e, A, E, sums = native_forward(spec, s0, X, wa, wb, expansion, with_sums=True)
        else:
            h, F_e, A, E = sequence_forward(spec, s0, X, wa, wb, expansion)
            sums = None
        # the kernels' outputs are (T, B, n), dense: the readout reads them in that order (the (B, T, n)
        # view would be copied first, and its gradient copied back) and only its small output is transposed
        traj = Trajectories(
            h=h.transpose(0, 1) if run_rnn else None, a=A.transpose(0, 1) if run_jslds else None,
            e=E.transpose(0, 1) if run_jslds else None, F_e=F_e.transpose(0, 1) if run_jslds else None,
            y_rnn=self.readout(h).transpose(0, 1) if run_rnn else None,
            y_jslds=self.readout(A).transpose(0, 1) if run_jslds else None,
        )
        if sums is not None and run_jslds:
            # the native kernel's totals of the two co-training terms (see Trajectories.squared_distance)
            traj._sums = {("F_e", "e"): (traj.F_e, traj.e, sums[0])}
            if run_rnn:
                traj._sums[("h", "a")] = (traj.h, traj.a, sums[1])
        return traj

    def _forward_fast(self, x: torch.Tensor, s0: torch.Tensor, run_rnn: bool, run_jslds: bool) -> Trajectories:
        """The training path for cells with an input-projected form.

        - Inputs enter F affinely (``x W_x + b``), so the RNN's inputs, the JSLDS's ``x*`` and the
          tangent ``x - x*`` are projected in one matmul before the loop; ``unbind`` hands out the
          steps (its backward is one stack, where indexing ``P[:, t]`` would zero-fill a full-size
          gradient at every step).
        - Per step, the RNN state ``h``, the expansion point ``e`` and the tangent ``a - e`` go
          through the cell as one stacked batch: ``fused_jvp_px`` returns ``F(h)``, ``F(e, x*)``
          (the JVP's primal, used by the fixed-point loss) and ``J_h (a - e) + J_x (x - x*)``.
        - ``E`` runs with its residuals folded into the weights; readouts and the loss terms are
          computed on the stacked trajectories after the loop.
        """
        B, T, _ = x.shape
        cell = self.cell
        bias = cell.input_bias()
        if not run_jslds:
            if not run_rnn:
                return Trajectories(None, None, None, None, None, None)
            P = (cell.project_inputs(x) + bias).unbind(1)
            h, hs = s0, []
            for t in range(T):
                h = cell.forward_px(h, P[t])
                hs.append(h)
            h_bt = torch.stack(hs, 1)
            return Trajectories(h=h_bt, a=None, e=None, F_e=None, y_rnn=self.readout(h_bt), y_jslds=None)
        xs = self.x_star(x)
        primal = [x, xs] if run_rnn else [xs]
        m = len(primal)
        P = cell.project_inputs(torch.cat([*primal, x - xs], 0))  # ((m + 1) B, T, k)
        P_primal, P_tangent = P.split([m * B, B])
        P = torch.cat([P_primal + bias, P_tangent], 0).unbind(1)
        folded = getattr(self.expansion, "folded", None) if self.fold_expansion else None
        E = folded() if callable(folded) else self.expansion
        h, a = s0, s0
        Fs, as_, es = [], [], []
        for t in range(T):
            e = E(a)
            S = torch.cat([h, e, a - e] if run_rnn else [e, a - e], 0)
            f, d = cell.fused_jvp_px(S, P[t], B)
            if run_rnn:
                h = f.split([B, B])[0]
            a = e + d
            Fs.append(f)
            as_.append(a)
            es.append(e)
        F_all = torch.stack(Fs, 1)  # (m B, T, n): F(h_{t-1}, x_t) rows, then F(e_t, x*_t) rows
        a_bt = torch.stack(as_, 1)
        h_bt, F_e = F_all.split([B, B]) if run_rnn else (None, F_all)
        return Trajectories(
            h=h_bt, a=a_bt, e=torch.stack(es, 1), F_e=F_e,
            y_rnn=self.readout(h_bt) if run_rnn else None, y_jslds=self.readout(a_bt),
        )

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def expansion_points(self, a: torch.Tensor) -> torch.Tensor:
        """``E(a)`` for JSLDS states ``a: (..., n)``."""
        return self.expansion(a)

    def linear_system(self, e: torch.Tensor, x_star: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(J_h: (N, n, n), J_x: (N, n, u))`` of F at expansion points ``e: (N, n)``.

        ``x_star``: ``(u,)`` or ``(N, u)``; default the model's constant x* (zeros).
        """
        if e.dim() != 2 or e.shape[1] != self.n_state:
            raise ValueError(f"e must have shape (N, {self.n_state}), got {tuple(e.shape)}")
        if x_star is None:
            if self.x_star_const is None:
                raise ValueError("this model's x* depends on the input: pass x_star of shape (N, u) or (u,)")
            x_star = self.x_star_const
        x_star = x_star.to(e.dtype)
        if x_star.dim() == 1:
            x_star = x_star.expand(e.shape[0], -1)
        if x_star.shape != (e.shape[0], self.n_input):
            raise ValueError(f"x_star must have shape ({self.n_input},) or ({e.shape[0]}, {self.n_input}), got {tuple(x_star.shape)}")
        with torch.no_grad():
            return cell_jacobians(self.cell, e.detach(), x_star.contiguous())
