"""Whole-sequence training path for the built-in cells: the forward loop and a hand-written BPTT.

``sequence_forward`` runs the RNN and/or the JSLDS over all T steps inside one
``torch.autograd.Function``. Per step, the rows ``S = [h_{t-1}; e_t; a_{t-1} - e_t]`` go through
the cell's recurrent matmuls together (the RNN step, ``F(e_t, x*)`` and the tangent of the JVP
share each product), with intermediate values written into buffers preallocated for the whole
sequence. The backward pass walks the steps in reverse with the derivatives written out by hand:
per step only the products against the transposed recurrent weights remain; the weight gradients
are one matmul over all steps at the end (``S_all^T dG_all``).

The JVP's backward needs the cell's second-order terms: ``d = J(e)(a - e)`` depends on ``e``
through the Jacobian, e.g. for ``phi = tanh``, ``d = (1 - f_e^2) * dz`` gives
``d d / d f_e = -2 f_e dz``; for the GRU the gate slopes ``sigma' = rz (1 - rz)`` give
``(1 - 2 rz)`` terms and the candidate's ``(1 - c^2)`` a ``-2 c`` term (see ``_gru_bwd``).
Tests check the Function with ``torch.autograd.gradcheck`` in float64 and against the
autograd paths (values and every parameter gradient).

Equations (built-in cells, inputs already projected: ``p = x W_x + b``, ``q = x* W_x + b``,
``dq = (x - x*) W_x``)::

    vanilla:  f = phi(s W_h + p);   d = phi'(e W_h + q) * (ds W_h + dq)
    GRU:      [r, z] = sigmoid(s W_rz + p_rz);   c = tanh((r * s) W_c + p_c);   f = c + z (s - c)
              [dr, dz] = sigma'(e) * (ds W_rz + dq_rz);   dc = (1 - c_e^2) ((dr * e + r_e * ds) W_c + dq_c)
              d = dz (e - c_e) + z_e ds + (1 - z_e) dc
    JSLDS:    e_t = E(a_{t-1}) (E's residuals folded: z <- tanh(z M_l + b_l), M_l = I + W_l^T)
              ds = a_{t-1} - e_t,   a_t = e_t + d
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.autograd.function import once_differentiable

__all__ = ["SequenceSpec", "sequence_forward"]


@dataclass(frozen=True)
class SequenceSpec:
    """What ``sequence_forward`` runs: the cell kind (``"gru"``, ``"tanh"``, ``"relu"``), which
    recurrences, and the number of expansion layers."""

    cell: str
    rnn: bool
    jslds: bool
    n_layers: int

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "tanh", "relu"):
            raise ValueError(f"SequenceSpec.cell must be 'gru', 'tanh' or 'relu', got {self.cell!r}")
        if not (self.rnn or self.jslds):
            raise ValueError("SequenceSpec: at least one of rnn and jslds must be run")
        if self.jslds and self.n_layers < 1:
            raise ValueError(f"SequenceSpec.n_layers must be >= 1 for the JSLDS, got {self.n_layers}")


# --------------------------------------------------------------------------- cell kernels
# Rows of a step: H RNN rows (h), then K expansion-point rows (e), then K tangent rows (ds);
# M = H + K primal rows, R = M + K rows in all. H is 0 or B, K is 0 or B.


def _vanilla_alloc(buf, T, R, M, K, n, m, like):
    buf.Z = like.new_empty(T, R, n)  # pre-activations, all rows


def _vanilla_fwd(buf, t, Sf, St, Wa, Wb, F, H, M, K, relu):
    Zt = buf.Z[t]
    torch.mm(Sf, Wa, out=Zt)
    f = F[t]
    if relu:
        torch.clamp_min(Zt[:M], 0, out=f)
    else:
        torch.tanh(Zt[:M], out=f)
    if not K:
        return None
    f_e = f[H:]
    slope = (Zt[H:M] > 0).to(f.dtype) if relu else 1 - f_e * f_e
    return slope * Zt[M:]


def _vanilla_bwd(buf, t, St, gf, gd, Wa, Wb, F, gG, gCC, H, M, K, relu, n):
    """Returns (gS: (R, n), extra grad on e: (K, n) or None, extra grad on ds or None); fills gG[t].
    ``Wa`` here is the transposed state block ``W_h^T`` (contiguous)."""
    Zt, f, gpre = buf.Z[t], F[t], gG[t]
    if relu:
        torch.mul(gf, (Zt[:M] > 0).to(gf.dtype), out=gpre[:M])
        if K:
            torch.mul(gd, (Zt[H:M] > 0).to(gd.dtype), out=gpre[M:])
    else:
        slope = 1 - f * f
        if K:
            torch.mul(gd, slope[H:], out=gpre[M:])
            gf = gf.clone()
            gf[H:].addcmul_(f[H:] * Zt[M:], gd, value=-2.0)  # d = (1 - f_e^2) dz: the second-order term
        torch.mul(gf, slope, out=gpre[:M])
    return gpre @ Wa, None, None


def _gru_alloc(buf, T, R, M, K, n, m, like):
    buf.G = like.new_empty(T, R, 2 * n)  # gate pre-activations (primal) and their tangents
    buf.RZ = like.new_empty(T, M, 2 * n)  # sigmoid gates of the primal rows
    buf.Cin = like.new_empty(T, R, m)  # inputs of the candidate matmul: [r * s | inputs | 1]
    buf.CC = like.new_empty(T, R, n)  # candidate pre-activations and tangents
    buf.C = like.new_empty(T, M, n)  # tanh candidates
    if K:
        buf.DRZ = like.new_empty(T, K, 2 * n)  # [dr, dz]
        buf.DC = like.new_empty(T, K, n)  # dc


def _gru_fwd(buf, t, Sf, St, Wa, Wb, F, H, M, K, n):
    Gt, RZ, Cinf, CC, c, f = buf.G[t], buf.RZ[t], buf.Cin[t], buf.CC[t], buf.C[t], F[t]
    Cin = Cinf[:, :n]
    torch.mm(Sf, Wa, out=Gt)
    torch.sigmoid(Gt[:M], out=RZ)
    r, z = RZ[:, :n], RZ[:, n:]
    s = St[:M]
    torch.mul(r, s, out=Cin[:M])
    if K:
        e, ds = St[H:M], St[M:]
        rz_e = RZ[H:]
        drz = buf.DRZ[t]
        torch.mul(rz_e * (1 - rz_e), Gt[M:], out=drz)
        torch.addcmul(drz[:, :n] * e, r[H:], ds, out=Cin[M:])
    torch.mm(Cinf, Wb, out=CC)
    torch.tanh(CC[:M], out=c)
    torch.sub(s, c, out=f)
    f.mul_(z).add_(c)
    if not K:
        return None
    c_e, z_e = c[H:], z[H:]
    dc = buf.DC[t]
    torch.mul(1 - c_e * c_e, CC[M:], out=dc)
    # d = dz (e - c_e) + z_e ds + (1 - z_e) dc = dz (e - c_e) + dc + z_e (ds - dc)
    d = drz[:, n:] * (e - c_e)
    d += dc
    d.addcmul_(z_e, ds - dc)
    return d


def _gru_bwd(buf, t, St, gf, gd, Wa, Wb, F, gG, gCC, H, M, K, relu, n):
    """Returns (gS: (R, n), extra grad on e, extra grad on ds); fills gG[t] and gCC[t].
    ``Wa``, ``Wb`` here are the transposed state blocks ``W_rz_h^T``, ``W_c_h^T`` (contiguous)."""
    RZ, c = buf.RZ[t], buf.C[t]
    r, z = RZ[:, :n], RZ[:, n:]
    s = St[:M]
    gCCt, gGt = gCC[t], gG[t]
    tc = 1 - c * c  # tanh'
    sg = RZ * (1 - RZ)  # sigmoid'
    gs = gf * z
    gc = gf - gs
    gz = gf * (s - c)
    ge = gde = None
    if K:
        e, ds = St[H:M], St[M:]
        c_e, z_e, r_e = c[H:], z[H:], r[H:]
        drz, dc = buf.DRZ[t], buf.DC[t]
        dr, dz = drz[:, :n], drz[:, n:]
        dcc = buf.CC[t][M:]
        g_drz = torch.empty_like(drz)
        torch.mul(gd, e - c_e, out=g_drz[:, n:])
        ge = gd * dz
        gc[H:] -= ge
        gz[H:].addcmul_(gd, ds - dc)
        gde = gd * z_e
        g_dc = gd - gde
        torch.mul(g_dc, tc[H:], out=gCCt[M:])
        gc[H:].addcmul_(c_e * dcc, g_dc, value=-2.0)  # dc = (1 - c_e^2) dcc: the second-order term
    torch.mul(gc, tc, out=gCCt[:M])
    gCin = gCCt @ Wb
    g_rz = torch.empty_like(RZ)
    torch.mul(gCin[:M], s, out=g_rz[:, :n])
    g_rz[:, n:] = gz
    gs.addcmul_(gCin[:M], r)
    if K:
        gT = gCin[M:]
        ge.addcmul_(gT, dr)
        g_rz[H:, :n].addcmul_(gT, ds)
        gde.addcmul_(gT, r_e)
        torch.mul(gT, e, out=g_drz[:, :n])
        torch.mul(g_drz, sg[H:], out=gGt[M:])
        g_rz[H:].addcmul_(g_drz * buf.G[t][M:], 1 - 2 * RZ[H:])  # drz = sigma'(rz_e) dG: second-order term
    torch.mul(g_rz, sg, out=gGt[:M])
    gS = gGt @ Wa
    gS[:M] += gs
    return gS, ge, gde


# --------------------------------------------------------------------------- the Function


class _Sequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: SequenceSpec, s0, X, Wa, Wb, *E):
        B, n = s0.shape
        T, R, ux = X.shape
        m = n + ux  # columns of the stacked rows: [state | inputs | 1 (primal) or 0 (tangent)]
        H = B if spec.rnn else 0
        K = B if spec.jslds else 0
        M = H + K
        if R != M + K:
            raise ValueError(f"sequence_forward: X has {R} rows per step, expected {M + K}")
        gru = spec.cell == "gru"
        relu = spec.cell == "relu"
        Eb, Em = E[0::2], E[1::2]
        L = len(Em)
        buf = SimpleNamespace()  # the step functions' preallocated (T, rows, width) buffers
        S = s0.new_empty(T, R, m)
        S[:, :, n:] = X
        F = s0.new_empty(T, M, n)
        (_gru_alloc if gru else _vanilla_alloc)(buf, T, R, M, K, n, m, s0)
        if gru:
            buf.Cin[:, :, n:] = X
        A = s0.new_empty(T, B, n) if K else s0.new_empty(0)
        Eo = s0.new_empty(T, B, n) if K else s0.new_empty(0)
        Zs = [s0.new_empty(T, B, n) for _ in range(L - 1)] if K else []  # E's hidden layers
        h = a = s0
        for t in range(T):
            Sf = S[t]
            St = Sf[:, :n]
            if H:
                St[:H] = h
            if K:
                z = a
                for layer in range(L):
                    out = Eo[t] if layer == L - 1 else Zs[layer][t]
                    torch.addmm(Eb[layer], z, Em[layer], out=out)
                    z = out.tanh_()
                St[H:M] = z
                torch.sub(a, z, out=St[M:])
            if gru:
                d = _gru_fwd(buf, t, Sf, St, Wa, Wb, F, H, M, K, n)
            else:
                d = _vanilla_fwd(buf, t, Sf, St, Wa, Wb, F, H, M, K, relu)
            if H:
                h = F[t][:H]
            if K:
                a = torch.add(Eo[t], d, out=A[t])
        ctx.spec, ctx.buf, ctx.dims = spec, buf, (B, n, T, H, M, K, m)
        ctx.save_for_backward(s0, Wa, Wb, S, F, A, Eo, *Zs, *Em)
        ctx.n_hidden = len(Zs)
        empty = s0.new_empty(0)
        return (F[:, :H] if H else empty), (F[:, H:] if K else empty), A, Eo

    @staticmethod
    @once_differentiable
    def backward(ctx, gFh, gFe, gA, gEo):
        spec, buf = ctx.spec, ctx.buf
        B, n, T, H, M, K, m = ctx.dims
        s0, Wa, Wb, S, F, A, Eo, *rest = ctx.saved_tensors
        Zs, Em = rest[: ctx.n_hidden], rest[ctx.n_hidden :]
        L = len(Em)
        gru = spec.cell == "gru"
        relu = spec.cell == "relu"
        kernel = _gru_bwd if gru else _vanilla_bwd
        R = M + K
        gG = s0.new_empty(T, R, Wa.shape[1])
        gCC = s0.new_empty(T, R, n) if gru else None
        gP = [s0.new_empty(T, B, n) for _ in range(L)] if K else []  # grads of E's pre-activations
        gh = s0.new_zeros(B, n) if H else None
        ga = s0.new_zeros(B, n) if K else None
        WaT = Wa[:n].T.contiguous()
        WbT = Wb[:n].T.contiguous() if gru else None
        EmT = [w.T.contiguous() for w in Em]
        for t in reversed(range(T)):
            St = S[t][:, :n]
            if H and K:
                gf = torch.cat([gFh[t] + gh, gFe[t]])
            elif H:
                gf = gFh[t] + gh
            else:
                gf = gFe[t]
            gd = gA[t] + ga if K else None
            gS, ge_x, gde_x = kernel(buf, t, St, gf, gd, WaT, WbT, F, gG, gCC, H, M, K, relu, n)
            if H:
                gh = gS[:H]
            if K:
                ge = gEo[t] + gd + gS[H:M]  # a = e + d, and e's rows of the stacked products
                if ge_x is not None:
                    ge += ge_x
                gde = gS[M:] if gde_x is None else gS[M:] + gde_x
                ge -= gde  # ds = a_{t-1} - e
                g = ge
                for layer in reversed(range(L)):
                    out = Eo[t] if layer == L - 1 else Zs[layer][t]
                    torch.mul(g, 1 - out * out, out=gP[layer][t])
                    g = gP[layer][t] @ EmT[layer]
                ga = gde + g
        g_s0 = None
        if ctx.needs_input_grad[1]:
            g_s0 = gh if not K else (ga if not H else gh + ga)
        gWa = S.reshape(-1, m).T @ gG.reshape(T * R, -1) if ctx.needs_input_grad[3] else None
        gWb = None
        if gru and ctx.needs_input_grad[4]:
            gWb = buf.Cin.reshape(-1, m).T @ gCC.reshape(T * R, n)
        gE = []
        if K:
            a_prev = torch.cat([s0.unsqueeze(0), A[:-1]], 0)
            inputs = [a_prev, *Zs]
            for layer in range(L):
                gp = gP[layer].reshape(T * B, n)
                gE += [gp.sum(0), inputs[layer].reshape(T * B, n).T @ gp]
        else:
            gE = [None] * (len(ctx.needs_input_grad) - 5)
        return (None, g_s0, None, gWa, gWb, *gE)


def sequence_forward(spec: SequenceSpec, s0: torch.Tensor, X: torch.Tensor, Wa: torch.Tensor, Wb: torch.Tensor | None,
                     expansion: list[tuple[torch.Tensor, torch.Tensor]]):
    """Run the recurrences of ``spec`` over all steps; differentiable (hand-written backward) in
    ``s0``, the weights and the expansion net (not in ``X``: inputs are data).

    Args:
        s0: ``(B, n)`` initial state of both recurrences.
        X: ``(T, R, u + 1)`` per-step input rows ``[x_t, 1]`` (RNN rows, if ``spec.rnn``), ``[x*_t, 1]``
            (expansion-point rows) and ``[x_t - x*_t, 0]`` (tangent rows, if ``spec.jslds``).
        Wa, Wb: the cell's weights stacked over ``[state; input; bias]`` rows: GRU ``Wa = [W_rz_h;
            W_rz_x; b_rz]: (n + u + 1, 2n)``, ``Wb = [W_c_h; W_c_x; b_c]: (n + u + 1, n)``; vanilla
            ``Wa = [W_h; W_x; b]``, ``Wb`` None. Inputs and biases then ride in the recurrent
            products (no separate input projection, and their gradients come with the weights').
        expansion: ``[(b_l, M_l)]`` of the folded expansion net (``M_l = I + W_l^T``).

    Returns ``(h: (T, B, n), F_e: (T, B, n), a: (T, B, n), e: (T, B, n))``, empty for a recurrence
    not run: RNN states, ``F(e_t, x*_t)``, JSLDS states and expansion points.
    """
    flat = [t for pair in expansion for t in pair] if spec.jslds else []
    return _Sequence.apply(spec, s0, X.contiguous(), Wa, Wb, *flat)
