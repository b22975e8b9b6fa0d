"""Recurrent cells F(h, x) and their Jacobian-vector products.

A *cell* is any ``nn.Module`` called as ``cell(h, x) -> h_next`` with ``h: (B, n)``,
``x: (B, u)`` and ``h_next: (B, n)``. The JSLDS needs two things from it:

- ``cell_jvp(cell, h, x, dh, dx) -> (F(h, x), J_h dh + J_x dx)``: one forward-mode
  product. Cells may define a ``jvp`` method with the same signature (the built-in
  cells do, analytically); otherwise ``torch.func.jvp`` is used.
- ``cell_jacobians(cell, h, x) -> (J_h: (B, n, n), J_x: (B, n, u))`` for analysis,
  assembled from ``cell_jvp`` along the n + u basis directions under ``torch.func.vmap``.

The built-in cells follow the official JSLDS equations and initialisations:

- ``VanillaRNNCell``: ``F(h, x) = phi(x W_x + h W_h + b)`` with ``phi`` = tanh or relu,
  ``W_h ~ N(0, 0.9^2 / n)`` (or ``0.9 I``), ``W_x ~ N(0, 1 / u)``, ``b = 0``.
- ``GRUCell``: ``[r, z] = sigmoid([h, x] W_rz + b_rz)`` (``z`` is the update gate, plus a
  constant ``gate_bias``), ``c = tanh([r * h, x] W_c + b_c)``, ``F = z * h + (1 - z) * c``;
  recurrent blocks ``N(0, 1) * 0.9 / sqrt(n)``, input blocks ``N(0, 1) / sqrt(u)``, biases 0.

``TorchCell`` adapts ``torch.nn.RNNCell`` / ``torch.nn.GRUCell`` (called ``(x, h)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "GRUCell",
    "TorchCell",
    "VanillaRNNCell",
    "cell_dims",
    "cell_jacobians",
    "cell_jvp",
]


def _check_hx(name: str, h: torch.Tensor, x: torch.Tensor, n: int, u: int) -> None:
    if h.dim() != 2 or h.shape[1] != n:
        raise ValueError(f"{name}: h must have shape (batch, {n}), got {tuple(h.shape)}")
    if x.dim() != 2 or x.shape[1] != u or x.shape[0] != h.shape[0]:
        raise ValueError(f"{name}: x must have shape ({h.shape[0]}, {u}), got {tuple(x.shape)}")


class VanillaRNNCell(nn.Module):
    """``F(h, x) = phi(x W_x + h W_h + b)``; ``phi`` is ``"tanh"`` or ``"relu"``."""

    def __init__(
        self,
        n_state: int,
        n_input: int,
        nonlinearity: str = "tanh",
        *,
        recurrent_scale: float = 0.9,
        identity_recurrent: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_state < 1 or n_input < 1:
            raise ValueError(f"n_state and n_input must be >= 1, got {n_state}, {n_input}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.n_state, self.n_input, self.nonlinearity = n_state, n_input, nonlinearity
        if identity_recurrent:
            w_h = recurrent_scale * torch.eye(n_state)
        else:
            w_h = torch.randn(n_state, n_state, generator=generator) * recurrent_scale / math.sqrt(n_state)
        self.w_h = nn.Parameter(w_h)
        self.w_x = nn.Parameter(torch.randn(n_input, n_state, generator=generator) / math.sqrt(n_input))
        self.b = nn.Parameter(torch.zeros(n_state))

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z) if self.nonlinearity == "tanh" else torch.relu(z)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._act(torch.addmm(self.b, h, self.w_h) + x @ self.w_x)

    # Input-projected form (the training fast path, see JSLDS.forward): p = x W_x + b is affine in
    # x, so a whole sequence (and its tangent, without b) is projected with one matmul outside the
    # time loop, and the per-step work is one matmul against W_h.
    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_x`` (no bias) for ``x: (..., u)``."""
        return x @ self.w_x

    def input_bias(self) -> torch.Tensor:
        """What ``forward_px`` expects added to ``project_inputs`` for primal rows."""
        return self.b

    def forward_px(self, h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``F`` from ``p = x W_x + b``."""
        return self._act(torch.addmm(p, h, self.w_h))

    def fused_jvp_px(self, S: torch.Tensor, P: torch.Tensor, n_tangent: int):
        """F at every primal row and the JVP at the last ``n_tangent`` of them, with one matmul.

        ``S = [s; ds]`` stacks primal states ``s: (M, n)`` and the tangent ``ds: (K, n)`` of the
        last ``K = n_tangent`` primal rows; ``P`` stacks their projected inputs (``x W_x + b`` for
        primal rows, ``dx W_x`` for tangent rows). Returns ``(F(s): (M, n), J_h ds + J_x dx: (K, n))``.
        """
        K = n_tangent
        M = S.shape[0] - K
        z, dz = torch.addmm(P, S, self.w_h).split([M, K])
        f = self._act(z)
        return f, self._slope(z.split([M - K, K])[1], f.split([M - K, K])[1]) * dz

    def sequence_kind(self) -> str | None:
        """The whole-sequence training path's kind (:mod:`auxfn.jslds.fused`), or None for a subclass
        that changes the equations (it then trains with autograd)."""
        cls = type(self)
        same = all(getattr(cls, m) is getattr(VanillaRNNCell, m) for m in ("forward", "forward_px", "project_inputs", "input_bias"))
        return self.nonlinearity if same else None

    def sequence_weights(self) -> tuple[torch.Tensor, None]:
        """``[W_h; W_x; b]: (n + u + 1, n)`` for the whole-sequence path (differentiable), and None."""
        return torch.cat([self.w_h, self.w_x, self.b.unsqueeze(0)]), None

    def _slope(self, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return 1 - f * f if self.nonlinearity == "tanh" else (z > 0).to(f.dtype)

    def jvp(self, h, x, dh, dx):
        """``(F, phi'(z) * (dh W_h + dx W_x))``: two extra matmuls instead of a dual pass."""
        z = torch.addmm(self.b, h, self.w_h) + x @ self.w_x
        f = self._act(z)
        return f, self._slope(z, f) * (dh @ self.w_h + dx @ self.w_x)

    def jacobians(self, h, x):
        """``J_h = diag(phi') W_h^T``, ``J_x = diag(phi') W_x^T`` in closed form."""
        z = torch.addmm(self.b, h, self.w_h) + x @ self.w_x
        s = self._slope(z, self._act(z))
        return s[:, :, None] * self.w_h.T, s[:, :, None] * self.w_x.T

    def extra_repr(self) -> str:
        return f"n_state={self.n_state}, n_input={self.n_input}, nonlinearity={self.nonlinearity}"


class GRUCell(nn.Module):
    """The GRU of the official JSLDS code (reset gate ``r``, update gate ``z``)::

        [r, z] = sigmoid(h W_rz_h + x W_rz_x + b_rz)    (z gets + gate_bias)
        c      = tanh((r * h) W_c_h + x W_c_x + b_c)
        F      = z * h + (1 - z) * c
    """

    def __init__(
        self,
        n_state: int,
        n_input: int,
        *,
        recurrent_scale: float = 0.9,
        input_scale: float = 1.0,
        gate_bias: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_state < 1 or n_input < 1:
            raise ValueError(f"n_state and n_input must be >= 1, got {n_state}, {n_input}")
        n, u = n_state, n_input
        self.n_state, self.n_input, self.gate_bias = n, u, float(gate_bias)
        rh, rx = recurrent_scale / math.sqrt(n), input_scale / math.sqrt(u)
        self.w_rz_h = nn.Parameter(torch.randn(n, 2 * n, generator=generator) * rh)
        self.w_rz_x = nn.Parameter(torch.randn(u, 2 * n, generator=generator) * rx)
        self.b_rz = nn.Parameter(torch.zeros(2 * n))
        self.w_c_h = nn.Parameter(torch.randn(n, n, generator=generator) * rh)
        self.w_c_x = nn.Parameter(torch.randn(u, n, generator=generator) * rx)
        self.b_c = nn.Parameter(torch.zeros(n))

    def _gates(self, h, x):
        pre = torch.addmm(self.b_rz, h, self.w_rz_h) + x @ self.w_rz_x
        if self.gate_bias:
            pre = pre + torch.cat([pre.new_zeros(self.n_state), pre.new_full((self.n_state,), self.gate_bias)])
        rz = torch.sigmoid(pre)
        return rz[:, : self.n_state], rz[:, self.n_state :]

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r, z = self._gates(h, x)
        c = torch.tanh(torch.addmm(self.b_c, r * h, self.w_c_h) + x @ self.w_c_x)
        return c + z * (h - c)

    def jvp(self, h, x, dh, dx):
        """Analytic forward-mode product (chain rule through the gates); the primal comes with it."""
        n = self.n_state
        r, z = self._gates(h, x)
        c = torch.tanh(torch.addmm(self.b_c, r * h, self.w_c_h) + x @ self.w_c_x)
        drz = dh @ self.w_rz_h + dx @ self.w_rz_x
        dr = r * (1 - r) * drz[:, :n]
        dz = z * (1 - z) * drz[:, n:]
        dc = (1 - c * c) * ((dr * h + r * dh) @ self.w_c_h + dx @ self.w_c_x)
        f = c + z * (h - c)
        return f, dz * (h - c) + z * dh + (1 - z) * dc

    # Input-projected form (the training fast path, see JSLDS.forward): p = [x W_rz_x + b_rz, x W_c_x + b_c]
    # is affine in x, so a whole sequence (and its tangent, without biases) is projected with one
    # matmul outside the time loop; per step there remain the two recurrent matmuls.
    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x [W_rz_x, W_c_x]``: ``(..., 3n)``, no bias."""
        return x @ torch.cat([self.w_rz_x, self.w_c_x], 1)

    def input_bias(self) -> torch.Tensor:
        """``[b_rz (+ gate_bias on the update half), b_c]``, added to primal rows of ``project_inputs``."""
        b = torch.cat([self.b_rz, self.b_c])
        if self.gate_bias:
            n = self.n_state
            b = b + torch.cat([b.new_zeros(n), b.new_full((n,), self.gate_bias), b.new_zeros(n)])
        return b

    def forward_px(self, h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``F`` from ``p = project_inputs(x) + input_bias()``."""
        p_rz, p_c = p.split([2 * self.n_state, self.n_state], 1)
        r, z = torch.sigmoid(torch.addmm(p_rz, h, self.w_rz_h)).chunk(2, 1)
        c = torch.tanh(torch.addmm(p_c, r * h, self.w_c_h))
        return c + z * (h - c)

    def sequence_kind(self) -> str | None:
        """``"gru"`` for the whole-sequence training path (:mod:`auxfn.jslds.fused`), or None for a
        subclass that changes the equations (it then trains with autograd)."""
        cls = type(self)
        same = all(getattr(cls, m) is getattr(GRUCell, m) for m in ("forward", "forward_px", "project_inputs", "input_bias"))
        return "gru" if same else None

    def sequence_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[W_rz_h; W_rz_x; b_rz (+ gate_bias)]`` and ``[W_c_h; W_c_x; b_c]``, each ``(n + u + 1, .)``,
        for the whole-sequence path (differentiable)."""
        b = self.input_bias().unsqueeze(0)
        b_rz, b_c = b.split([2 * self.n_state, self.n_state], 1)
        return torch.cat([self.w_rz_h, self.w_rz_x, b_rz]), torch.cat([self.w_c_h, self.w_c_x, b_c])

    def fused_jvp_px(self, S: torch.Tensor, P: torch.Tensor, n_tangent: int):
        """F at every primal row and the JVP at the last ``n_tangent`` of them, two matmuls in all.

        ``S = [s; ds]`` stacks primal states ``s: (M, n)`` (e.g. the RNN state and the expansion
        point) and the tangent ``ds: (K, n)`` of the last ``K = n_tangent`` primal rows; ``P`` stacks
        their projected inputs (``+ input_bias()`` on primal rows, none on tangent rows). The gate
        and candidate products of the primal and of the tangent share one matmul each.
        Returns ``(F(s): (M, n), J_h ds + J_x dx: (K, n))``.
        """
        # split/chunk rather than slicing: a slice's backward zero-fills a gradient of the whole tensor
        n, K = self.n_state, n_tangent
        M = S.shape[0] - K
        s, ds = S.split([M, K])
        e = S.split([M - K, K, K])[1]
        p_rz, p_c = P.split([2 * n, n], 1)
        g, dg = torch.addmm(p_rz, S, self.w_rz_h).split([M, K])
        rz = torch.sigmoid(g)
        r, z = rz.chunk(2, 1)
        rz_e = rz.split([M - K, K])[1]
        r_e, z_e = rz_e.chunk(2, 1)
        dr, dz = (rz_e * (1 - rz_e) * dg).chunk(2, 1)
        cc, dcc = torch.addmm(p_c, torch.cat([r * s, dr * e + r_e * ds]), self.w_c_h).split([M, K])
        c = torch.tanh(cc)
        c_e = c.split([M - K, K])[1]
        f = c + z * (s - c)
        return f, dz * (e - c_e) + z_e * ds + (1 - z_e) * ((1 - c_e * c_e) * dcc)

    def extra_repr(self) -> str:
        return f"n_state={self.n_state}, n_input={self.n_input}"


class TorchCell(nn.Module):
    """Adapter: ``torch.nn.RNNCell`` / ``GRUCell`` / any ``cell(x, h)`` as ``F(h, x)``."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        if not all(hasattr(cell, a) for a in ("hidden_size", "input_size")):
            raise TypeError(f"TorchCell wraps a cell with hidden_size and input_size, got {type(cell).__name__}")
        if isinstance(cell, nn.LSTMCell):
            raise TypeError("TorchCell cannot wrap an LSTMCell: its state is a pair (h, c), not one tensor")
        self.cell = cell
        self.n_state, self.n_input = cell.hidden_size, cell.input_size

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x, h)


def cell_dims(cell: nn.Module) -> tuple[int, int]:
    """``(n_state, n_input)`` of a cell: its attributes, or those of a wrapped torch cell."""
    if isinstance(cell, (nn.RNNCell, nn.GRUCell)):
        raise TypeError(f"wrap torch.nn.{type(cell).__name__} in auxfn.jslds.TorchCell (it is called (x, h))")
    n, u = getattr(cell, "n_state", None), getattr(cell, "n_input", None)
    if not isinstance(n, int) or not isinstance(u, int):
        raise TypeError(
            f"cell {type(cell).__name__} must define integer attributes n_state and n_input "
            "(or pass n_state= and n_input= explicitly)"
        )
    return n, u


def cell_jvp(cell: nn.Module, h, x, dh, dx) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F(h, x), J_h(h, x) dh + J_x(h, x) dx)`` for a batch, without forming J.

    Uses the cell's own ``jvp`` when it has one, else one ``torch.func.jvp`` (forward mode),
    which also returns the primal, so F(h, x) is never computed twice.
    """
    own = getattr(cell, "jvp", None)
    if callable(own):
        return own(h, x, dh, dx)
    # contiguous(): forward-mode AD refuses primals whose elements share memory (expand())
    c = lambda t: t.contiguous()  # noqa: E731
    return torch.func.jvp(cell, (c(h), c(x)), (c(dh), c(dx)))


def cell_jacobians(cell: nn.Module, h: torch.Tensor, x: torch.Tensor, *, chunk_size: int | None = 64):
    """Per-point Jacobians ``J_h: (B, n, n)`` and ``J_x: (B, n, u)`` of ``F`` at ``(h, x)``.

    Closed form for cells that define ``jacobians``; otherwise n + u forward-mode products
    (``cell_jvp`` along basis directions) batched with ``torch.func.vmap``. Forward mode is
    the right direction here because one pass gives a column for every point at once.
    """
    own = getattr(cell, "jacobians", None)
    if callable(own):
        return own(h, x)
    B, n = h.shape
    u = x.shape[1]
    eye = torch.eye(n + u, dtype=h.dtype, device=h.device)
    dh = eye[:, None, :n].expand(n + u, B, n)
    dx = eye[:, None, n:].expand(n + u, B, u)
    cols = torch.func.vmap(lambda a, b: cell_jvp(cell, h, x, a, b)[1], chunk_size=chunk_size)(dh, dx)
    jac = cols.permute(1, 2, 0)  # (B, n, n + u): column k is J e_k
    return jac[:, :, :n], jac[:, :, n:]
