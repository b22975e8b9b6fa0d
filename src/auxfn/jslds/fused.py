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
        _tanh_of_doubled_(torch.mul(Zt[:M], 2.0, out=f))
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


# --------------------------------------------------------------------------- GRU kernels
# The GRU steps read and write per-step views prepared once per call (``_gru_views``): at the
# small sizes per-op overhead dominates, and slicing inside the loop doubled the op count.


def _tanh_of_doubled_(x: torch.Tensor) -> torch.Tensor:
    """In place, ``x = 2z`` -> ``tanh(z) = 2 sigmoid(2z) - 1``: the same function in three cheap
    kernels. ATen's float32 ``tanh`` kernel took 2x as long as these three together on our CPUs
    (``benchmarks/jslds/RESULTS.md``); rounding differs from ``torch.tanh`` by about 1e-7 absolute."""
    return x.sigmoid_().mul_(2).sub_(1)


def _gru_alloc(buf, T, R, M, K, n, m, like):
    buf.G = like.new_empty(T, R, 2 * n)  # gate pre-activations (primal) and their tangents
    buf.RZ = like.new_empty(T, M, 2 * n)  # sigmoid gates of the primal rows
    buf.Cin = like.new_empty(T, R, m)  # inputs of the candidate matmul: [r * s | inputs | 1]
    buf.CC = like.new_empty(T, R, n)  # candidate pre-activations and tangents
    buf.C = like.new_empty(T, M, n)  # tanh candidates
    if K:
        buf.DRZ = like.new_empty(T, K, 2 * n)  # [dr, dz]
        buf.DC = like.new_empty(T, K, n)  # dc


def _per_step(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return x.unbind(0)


def _gru_views(buf, S, H, M, K, n) -> SimpleNamespace:
    """Per-step views (tuples over t) of the buffers, built with one slice and one unbind each."""
    v = SimpleNamespace()
    v.G, v.Gp, v.Gt = _per_step(buf.G), _per_step(buf.G[:, :M]), _per_step(buf.G[:, M:])
    v.RZ, v.r, v.z = _per_step(buf.RZ), _per_step(buf.RZ[:, :, :n]), _per_step(buf.RZ[:, :, n:])
    v.Cin, v.Cin_p = _per_step(buf.Cin), _per_step(buf.Cin[:, :M, :n])
    v.CC, v.CC_p = _per_step(buf.CC), _per_step(buf.CC[:, :M])
    v.C = _per_step(buf.C)
    v.s = _per_step(S[:, :M, :n])
    if K:
        v.rz_e, v.r_e, v.z_e = _per_step(buf.RZ[:, H:]), _per_step(buf.RZ[:, H:, :n]), _per_step(buf.RZ[:, H:, n:])
        v.Cin_t, v.CC_t, v.c_e = _per_step(buf.Cin[:, M:, :n]), _per_step(buf.CC[:, M:]), _per_step(buf.C[:, H:])
        v.DRZ, v.dr, v.dz, v.DC = _per_step(buf.DRZ), _per_step(buf.DRZ[:, :, :n]), _per_step(buf.DRZ[:, :, n:]), _per_step(buf.DC)
        v.e, v.ds = _per_step(S[:, H:M, :n]), _per_step(S[:, M:, :n])
    return v


def _gru_fwd(v, t, Sf, Wa, Wb, F, A, K):
    """One step; writes ``F[t]`` and, with tangent rows, ``A[t] = e + d``."""
    torch.mm(Sf, Wa, out=v.G[t])
    RZ = v.RZ[t]
    torch.sigmoid(v.Gp[t], out=RZ)
    s = v.s[t]
    torch.mul(v.r[t], s, out=v.Cin_p[t])
    if K:
        e, ds, rz_e, drz = v.e[t], v.ds[t], v.rz_e[t], v.DRZ[t]
        torch.mul(rz_e, v.Gt[t], out=drz)
        drz.addcmul_(drz, rz_e, value=-1.0)  # [dr, dz] = sigma (1 - sigma) dG
        Cin_t = v.Cin_t[t]
        torch.mul(v.dr[t], e, out=Cin_t)
        Cin_t.addcmul_(v.r_e[t], ds)  # d(r * s) = dr * e + r_e * ds
    torch.mm(v.Cin[t], Wb, out=v.CC[t])
    c = v.C[t]
    _tanh_of_doubled_(torch.mul(v.CC_p[t], 2.0, out=c))
    torch.lerp(c, s, v.z[t], out=F[t])  # f = c + z (s - c)
    if not K:
        return
    c_e, CC_t, dc, a = v.c_e[t], v.CC_t[t], v.DC[t], A[t]
    torch.addcmul(CC_t, c_e * CC_t, c_e, value=-1.0, out=dc)  # dc = (1 - c_e^2) dcc
    # a = e + d,  d = dz (e - c_e) + z_e ds + (1 - z_e) dc = dz (e - c_e) + lerp(dc, ds, z_e)
    torch.lerp(dc, ds, v.z_e[t], out=a)
    a.addcmul_(v.dz[t], e - c_e)
    a.add_(e)


def _gru_bwd(v, t, gf, gd, WaT, WbT, gv, H, M, K, n):
    """Returns (gS: (R, n), extra grad on e: (K, n) or None, extra grad on ds or None); fills
    ``gG[t]`` and ``gCC[t]``. ``WaT``, ``WbT``: the transposed state blocks ``W_rz_h^T``, ``W_c_h^T``."""
    c, z, s, RZ = v.C[t], v.z[t], v.s[t], v.RZ[t]
    gs = gf * z  # f = c + z (s - c)
    gc = gf - gs
    g_rz = gv.g_rz
    torch.mul(gf, s - c, out=gv.g_z)
    ge = gde = None
    if K:
        e, ds, c_e, z_e, dc, dz = v.e[t], v.ds[t], v.c_e[t], v.z_e[t], v.DC[t], v.dz[t]
        torch.mul(gd, e - c_e, out=gv.g_dz)
        ge = gd * dz
        gc_e = gc[H:]
        gc_e.sub_(ge)
        gv.g_z_e.addcmul_(gd, ds - dc)
        gde = gd * z_e
        g_dc = gd - gde
        t5 = g_dc * c_e
        torch.addcmul(g_dc, t5, c_e, value=-1.0, out=gv.gCC_t[t])  # dcc's gradient: (1 - c_e^2) g_dc
        gc_e.addcmul_(t5, v.CC_t[t], value=-2.0)  # dc = (1 - c_e^2) dcc: the second-order term
    t6 = gc * c
    torch.addcmul(gc, t6, c, value=-1.0, out=gv.gCC_p[t])  # (1 - c^2) gc
    torch.mm(gv.gCC[t], WbT, out=gv.gCin)
    gCin_p = gv.gCin_p
    torch.mul(gCin_p, s, out=gv.g_r)
    gs.addcmul_(gCin_p, v.r[t])
    if K:
        gT, e, ds = gv.gCin_t, v.e[t], v.ds[t]
        ge.addcmul_(gT, v.dr[t])
        gv.g_r_e.addcmul_(gT, ds)
        gde.addcmul_(gT, v.r_e[t])
        torch.mul(gT, e, out=gv.g_dr)
        rz_e, g_drz = v.rz_e[t], gv.g_drz
        t7 = g_drz * rz_e
        torch.addcmul(t7, t7, rz_e, value=-1.0, out=gv.gG_t[t])  # sigma (1 - sigma) g_drz
        t8 = g_drz * v.Gt[t]  # drz = sigma'(rz_e) dG: second-order term g_drz dG (1 - 2 sigma)
        gv.g_rz_e.add_(t8).addcmul_(t8, rz_e, value=-2.0)
    t9 = g_rz * RZ
    torch.addcmul(t9, t9, RZ, value=-1.0, out=gv.gG_p[t])
    gS = torch.mm(gv.gG[t], WaT, out=gv.gS)
    gv.gS_p.add_(gs)
    return gS, ge, gde


def _gru_grad_views(s0, gG, gCC, T, R, H, M, K, n) -> SimpleNamespace:
    """Backward work buffers reused at every step, and per-step views of the gradient buffers."""
    gv = SimpleNamespace()
    gv.g_rz = s0.new_empty(M, 2 * n)
    gv.g_r, gv.g_z = gv.g_rz[:, :n], gv.g_rz[:, n:]
    gv.gCin = s0.new_empty(R, n)
    gv.gCin_p, gv.gCin_t = gv.gCin[:M], gv.gCin[M:]
    gv.gS = s0.new_empty(R, n)
    gv.gS_p, gv.gS_h, gv.gS_e, gv.gS_t = gv.gS[:M], gv.gS[:H], gv.gS[H:M], gv.gS[M:]
    gv.gG, gv.gG_p, gv.gG_t = _per_step(gG), _per_step(gG[:, :M]), _per_step(gG[:, M:])
    gv.gCC, gv.gCC_p, gv.gCC_t = _per_step(gCC), _per_step(gCC[:, :M]), _per_step(gCC[:, M:])
    if K:
        gv.g_rz_e, gv.g_r_e, gv.g_z_e = gv.g_rz[H:], gv.g_rz[H:, :n], gv.g_rz[H:, n:]
        gv.g_drz = s0.new_empty(K, 2 * n)
        gv.g_dr, gv.g_dz = gv.g_drz[:, :n], gv.g_drz[:, n:]
    return gv


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
        Zs = [s0.new_empty(T, B, n) for _ in range(L - 1)] if K else []  # E's hidden layers
        Sl = _per_step(S)
        v = _gru_views(buf, S, H, M, K, n) if gru else None
        Fh, Sh = (_per_step(F[:, :H]), _per_step(S[:, :H, :n])) if H else ((), ())
        if K:
            Se, Sds = _per_step(S[:, H:M, :n]), _per_step(S[:, M:, :n])
            Zl = [_per_step(Z) for Z in Zs]
            # E's layers tanh(z M + b) through _tanh_of_doubled_, the factor 2 folded into M and b once
            Eb2, Em2 = [2 * b for b in Eb], [2 * w for w in Em]
        for t in range(T):
            if H:
                Sh[t].copy_(s0 if t == 0 else Fh[t - 1])
            if K:
                a = s0 if t == 0 else A[t - 1]
                z = a
                for layer in range(L):
                    out = Se[t] if layer == L - 1 else Zl[layer][t]
                    torch.addmm(Eb2[layer], z, Em2[layer], out=out)
                    z = _tanh_of_doubled_(out)
                torch.sub(a, z, out=Sds[t])
            if gru:
                _gru_fwd(v, t, Sl[t], Wa, Wb, F, A, K)
            else:
                d = _vanilla_fwd(buf, t, Sl[t], Sl[t][:, :n], Wa, Wb, F, H, M, K, relu)
                if K:
                    torch.add(Se[t], d, out=A[t])
        ctx.spec, ctx.buf, ctx.dims = spec, buf, (B, n, T, H, M, K, m)
        ctx.views = (Sl, v, (Se, Zl) if K else None)  # the per-step views, reused by backward
        ctx.save_for_backward(s0, Wa, Wb, S, F, A, *Zs, *Em)
        ctx.n_hidden = len(Zs)
        empty = s0.new_empty(0)
        Eo = S[:, H:M, :n] if K else empty  # the expansion points are the e rows of the stacked states
        return (F[:, :H] if H else empty), (F[:, H:] if K else empty), A, Eo

    @staticmethod
    @once_differentiable
    def backward(ctx, gFh, gFe, gA, gEo):
        spec, buf = ctx.spec, ctx.buf
        B, n, T, H, M, K, m = ctx.dims
        s0, Wa, Wb, S, F, A, *rest = ctx.saved_tensors
        Zs, Em = rest[: ctx.n_hidden], rest[ctx.n_hidden :]
        L = len(Em)
        gru = spec.cell == "gru"
        relu = spec.cell == "relu"
        R = M + K
        gG = s0.new_empty(T, R, Wa.shape[1])
        gCC = s0.new_empty(T, R, n) if gru else None
        gP = [s0.new_empty(T, B, n) for _ in range(L)] if K else []  # grads of E's pre-activations
        gh = s0.new_zeros(B, n) if H else None
        ga = s0.new_zeros(B, n) if K else None
        WaT = Wa[:n].T.contiguous()
        WbT = Wb[:n].T.contiguous() if gru else None
        EmT = [w.T.contiguous() for w in Em]
        Sl, v, e_views = ctx.views
        if gru:
            gv = _gru_grad_views(s0, gG, gCC, T, R, H, M, K, n)
        if H and K:  # the RNN rows' incoming gradients gain gh at each step: one stacked buffer of our own
            gF_all = torch.cat([gFh, gFe], 1)
            gF_l, gF_h = _per_step(gF_all), _per_step(gF_all[:, :H])
        gFh_l = _per_step(gFh) if H else ()
        gFe_l, gA_l, gEo_l = (_per_step(gFe), _per_step(gA), _per_step(gEo)) if K else ((), (), ())
        if K:
            Se, Zl = e_views
            gPl = [_per_step(g) for g in gP]
        for t in reversed(range(T)):
            if H and K:
                gF_h[t].add_(gh)
                gf = gF_l[t]
            elif H:
                gf = gFh_l[t] + gh
            else:
                gf = gFe_l[t]
            gd = gA_l[t] + ga if K else None
            if gru:
                gS, ge_x, gde_x = _gru_bwd(v, t, gf, gd, WaT, WbT, gv, H, M, K, n)
            else:
                gS, ge_x, gde_x = _vanilla_bwd(buf, t, Sl[t][:, :n], gf, gd, WaT, None, F, gG, None, H, M, K, relu, n)
            gS_h, gS_e, gS_t = (gv.gS_h, gv.gS_e, gv.gS_t) if gru else (gS[:H], gS[H:M], gS[M:])
            if H:
                gh = gS_h
            if K:
                ge = torch.add(gd, gS_e)  # a = e + d, and e's rows of the stacked products
                ge.add_(gEo_l[t])
                if ge_x is not None:
                    ge.add_(ge_x)
                gde = gS_t if gde_x is None else gde_x.add_(gS_t)
                ge.sub_(gde)  # ds = a_{t-1} - e
                g = ge
                for layer in reversed(range(L)):
                    out = Se[t] if layer == L - 1 else Zl[layer][t]
                    gp = gPl[layer][t]
                    torch.addcmul(g, g * out, out, value=-1.0, out=gp)  # tanh' = 1 - out^2
                    g = gp @ EmT[layer]
                ga = g.add_(gde)
        g_s0 = None
        if ctx.needs_input_grad[1]:
            g_s0 = gh if not K else (ga if not H else gh + ga)
            g_s0 = g_s0.clone() if gru and g_s0 is gh else g_s0
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
