"""The JSLDS co-training loss (official code's ``loss``; notebook Sec. "Training")::

    total = w.rnn * L_RNN + w.jslds * L_JSLDS + w.fixed_point * R_e + w.approx * R_a + w.l2 * ||params||^2
    L_RNN   = mean_{(b,t) in mask, o} (W h_t + b - y_t)^2
    L_JSLDS = mean_{(b,t) in mask, o} (W a_t + b - y_t)^2
    R_e     = mean_{b,t,n} (F(e_t, x*) - e_t)^2        expansion points should be fixed points
    R_a     = mean_{b,t,n} (h_t - a_t)^2               the JSLDS should track the RNN

``reduction="sum"`` sums over time and dimensions and averages over the batch (the
LFADS variant's convention). The plain RNN is the special case
``fixed_point = approx = jslds = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from auxfn.core.config import check_range
from auxfn.jslds.model import Trajectories

__all__ = ["LossWeights", "jslds_losses"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the notebooks' 3-bit values are rnn=3, jslds=1, fixed_point=100, approx=10)."""

    rnn: float = 1.0
    """lambda_RNN: task loss of the RNN readout."""
    jslds: float = 1.0
    """lambda_JSLDS: task loss of the JSLDS readout."""
    fixed_point: float = 100.0
    """lambda_e: (F(e, x*) - e)^2, pulls expansion points onto fixed points."""
    approx: float = 10.0
    """lambda_a: (h - a)^2, keeps the JSLDS on the RNN."""
    l2: float = 0.0
    """L2 penalty on all parameters."""

    def __post_init__(self) -> None:
        for name in ("rnn", "jslds", "fixed_point", "approx", "l2"):
            check_range(name, getattr(self, name), 0)

    @property
    def needs_jslds(self) -> bool:
        return self.jslds > 0 or self.fixed_point > 0 or self.approx > 0


def _masked(diff2: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    m = mask.to(diff2.dtype).unsqueeze(-1)
    total = (diff2 * m).sum()
    if reduction == "sum":
        return total / diff2.shape[0]
    return total / (m.sum() * diff2.shape[-1]).clamp_min(1)


class _SquaredDistance(torch.autograd.Function):
    """``scale * sum (a - b)^2``, with a backward that writes each input's gradient once.

    ``mse_loss``'s backward runs ``mse_loss_backward`` once per input, and each run fills a zero
    tensor of the trajectories' size before writing it: four full-size passes per term. Here ``a``'s
    gradient is one pass and ``b``'s its negation (an A/B on the native path: 1.01-1.05x per JSLDS
    step, benchmarks/jslds/RESULTS.md). The backward is written in differentiable ops, so double
    backward still works."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return torch.nn.functional.mse_loss(a, b, reduction="sum") * scale

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        # a - b keeps the inputs' memory layout: the (T, B, n) order the sequence kernels read
        ga = torch.sub(a, b).mul_(g * (2.0 * ctx.scale))
        gb = torch.neg(ga) if ctx.needs_input_grad[1] else None
        return (ga if ctx.needs_input_grad[0] else None), gb, None


def _unmasked(a: torch.Tensor, b: torch.Tensor, reduction: str, total: torch.Tensor | None = None) -> torch.Tensor:
    """``mean (a - b)^2`` over every entry, or the sum divided by the batch size (no mask of ones to
    multiply: these terms count every step). ``total``: ``sum (a - b)^2`` already computed (by the
    native kernel, which also carries its gradient)."""
    scale = 1.0 / a.shape[0] if reduction == "sum" else 1.0 / max(a.numel(), 1)
    if total is not None:
        return total * scale
    if torch.compiler.is_compiling() or not (a.requires_grad or b.requires_grad) or a.shape != b.shape:
        # inductor fuses mse_loss's forward and backward itself; without autograd there is no backward
        return torch.nn.functional.mse_loss(a, b, reduction="sum") * scale
    return _SquaredDistance.apply(a, b, scale)


def jslds_losses(
    traj: Trajectories,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: LossWeights | None = None,
    *,
    params=None,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch: ``{total, rnn, jslds, fixed_point, approx, l2}``.

    The named terms are unweighted (so ``rnn`` and ``jslds`` are task MSEs);
    ``total`` is their weighted sum. Terms of a recurrence that was not run are 0 and
    must have weight 0.

    Args:
        traj: from ``JSLDS.forward``; ``y_*`` are ``(B, T, o)``.
        y: targets ``(B, T, o)``.
        mask: boolean ``(B, T)``; task terms only count steps where it is true. Default all.
        params: parameters for the L2 term (e.g. ``model.parameters()``); needed if ``weights.l2 > 0``.
        reduction: ``"mean"`` (official) or ``"sum"`` (sum over time and dims, mean over batch).
    """
    w = weights or LossWeights()
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    ref = traj.y_rnn if traj.y_rnn is not None else traj.y_jslds
    if ref is None:
        raise ValueError("traj holds neither an RNN nor a JSLDS trajectory")
    if y.shape != ref.shape:
        raise ValueError(f"y must have the readout's shape (batch, time, n_out) = {tuple(ref.shape)}, got {tuple(y.shape)}")
    if mask is None:
        mask = torch.ones(y.shape[:2], dtype=torch.bool, device=y.device)
    if mask.shape != y.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor of shape {tuple(y.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    zero = y.new_zeros(())
    terms: dict[str, torch.Tensor] = {}
    terms["rnn"] = _masked((traj.y_rnn - y) ** 2, mask, reduction) if traj.y_rnn is not None else zero
    terms["jslds"] = _masked((traj.y_jslds - y) ** 2, mask, reduction) if traj.y_jslds is not None else zero
    terms["fixed_point"] = _unmasked(traj.F_e, traj.e, reduction, traj.squared_distance("F_e", "e")) if traj.e is not None else zero
    has_both = traj.h is not None and traj.a is not None
    terms["approx"] = _unmasked(traj.h, traj.a, reduction, traj.squared_distance("h", "a")) if has_both else zero
    for name, present in (("rnn", traj.y_rnn is not None), ("jslds", traj.y_jslds is not None),
                          ("fixed_point", traj.e is not None), ("approx", has_both)):
        if not present and getattr(w, name) > 0:
            raise ValueError(f"loss weight '{name}' = {getattr(w, name)} > 0 but its trajectory was not run")
    if w.l2 > 0:
        if params is None:
            raise ValueError("weights.l2 > 0 needs params=model.parameters()")
        terms["l2"] = sum((p**2).sum() for p in params)
    else:
        terms["l2"] = zero
    total = sum(getattr(w, k) * terms[k] for k in ("rnn", "jslds", "fixed_point", "approx", "l2"))
    return {"total": total, **terms}
