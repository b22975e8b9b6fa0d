"""P-JEPA's losses and the gradient routing of each training mode.

Yu et al. 2025, §1:

- ``L_dyn = E ||T_ψ(E_φ(o_t), a_t) − E_φ(o_{t+1})||²`` (no stop-gradient, no EMA target);
- ``L_p = E d(P_θ(E_φ(o)), p(o))`` with d = squared error (the theory) or the
  two-hot cross-entropy of the reference code;
- ``L = L_dyn + c_p · L_p``.

Both squared errors are means over latent (or aux) dimensions and over the batch.
Which parameters each term reaches depends on ``mode``:

========== ======================= ======================= ========================
mode       E gets L_dyn            E gets L_p              dynamics target
========== ======================= ======================= ========================
joint      yes (both branches)     yes                     E(o') with gradient
random_aux like joint; p is a frozen random projection of the pixels (set by training)
aux_only   no (T fit on sg(z))     yes                     sg(E(o'))
dyn_only   yes                     no (P fit on sg(z))     E(o') with gradient
stopgrad   yes (source branch)     no (P fit on sg(z))     sg(E(o'))
ema        yes (source branch)     no (P fit on sg(z))     E_ema(o')
vicreg     yes + VICReg on z       no (P fit on sg(z))     E(o') with gradient
frozen     no                      no                      sg(E(o')) (stage 2 of two_stage)
========== ======================= ======================= ========================

The heads that do not shape the encoder are still trained (on detached latents), as
the reference code does with TD-MPC2's other heads, so every mode reports both losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from auxfn.jepa.models import JEPAModel

__all__ = ["LOSS_MODES", "MODES", "jepa_losses", "per_sample_losses", "symexp", "symlog", "two_hot", "two_hot_ce", "two_hot_decode", "vicreg_terms"]

MODES = ("joint", "aux_only", "dyn_only", "random_aux", "two_stage", "stopgrad", "ema", "vicreg")
LOSS_MODES = ("joint", "aux_only", "dyn_only", "random_aux", "stopgrad", "ema", "vicreg", "frozen")

_ENC_DYN = {"joint": True, "random_aux": True, "aux_only": False, "dyn_only": True, "stopgrad": True, "ema": True, "vicreg": True, "frozen": False}
_ENC_AUX = {"joint": True, "random_aux": True, "aux_only": True, "dyn_only": False, "stopgrad": False, "ema": False, "vicreg": False, "frozen": False}
_TARGET_GRAD = {"joint": True, "random_aux": True, "dyn_only": True, "vicreg": True}


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: torch.Tensor, vmin: float = -10.0, vmax: float = 10.0, num_bins: int = 101) -> torch.Tensor:
    """Two-hot encoding of ``symlog(x)`` on ``num_bins`` evenly spaced bins in [vmin, vmax].

    x: (...,) -> (..., num_bins). The two neighbouring bins share the mass so that the
    expectation over bins equals ``symlog(x)`` exactly (clipped to the range).
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    y = symlog(x).clamp(vmin, vmax)
    width = (vmax - vmin) / (num_bins - 1)
    pos = (y - vmin) / width
    lo = pos.floor().clamp(0, num_bins - 2)
    frac = (pos - lo).unsqueeze(-1)
    lo = lo.long().unsqueeze(-1)
    out = torch.zeros(*y.shape, num_bins, dtype=x.dtype, device=x.device)
    out.scatter_(-1, lo, 1 - frac)
    out.scatter_add_(-1, lo + 1, frac)
    return out


def two_hot_decode(logits: torch.Tensor, vmin: float = -10.0, vmax: float = 10.0) -> torch.Tensor:
    """``symexp(E_softmax[bin])``: (..., num_bins) -> (...)."""
    bins = torch.linspace(vmin, vmax, logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return symexp((logits.softmax(-1) * bins).sum(-1))


def two_hot_ce(logits: torch.Tensor, target: torch.Tensor, vmin: float = -10.0, vmax: float = 10.0) -> torch.Tensor:
    """Cross-entropy of ``logits (..., num_bins)`` against ``two_hot(target (...))``, shape (...)."""
    return -(two_hot(target, vmin, vmax, logits.shape[-1]) * logits.log_softmax(-1)).sum(-1)


def vicreg_terms(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms of a batch z (B, d) (Bardes et al. 2022).

    variance: ``mean_j relu(1 − sqrt(Var z_j + eps))``; covariance: ``Σ_{i≠j} C_ij² / d``.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"z must have shape (B >= 2, d), got {tuple(z.shape)}")
    zc = z - z.mean(0)
    var = F.relu(1 - torch.sqrt(zc.var(0) + eps)).mean()
    cov = zc.T @ zc / (z.shape[0] - 1)
    off = cov - torch.diag(torch.diag(cov))
    return var, (off**2).sum() / z.shape[1]


def _check_batch(model: JEPAModel, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, aux_target: torch.Tensor) -> None:
    b = obs.shape[0]
    if next_obs.shape != obs.shape:
        raise ValueError(f"next_obs must have the shape of obs {tuple(obs.shape)}, got {tuple(next_obs.shape)}")
    if actions.shape != (b,):
        raise ValueError(f"actions must have shape ({b},), got {tuple(actions.shape)}")
    if aux_target.shape != (b, model.aux_dim):
        raise ValueError(f"aux_target must have shape (B={b}, k={model.aux_dim}), got {tuple(aux_target.shape)}")


def per_sample_losses(model: JEPAModel, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, aux_target: torch.Tensor, *, mode: str = "joint", z_all: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample ``dyn`` (B,) and ``aux`` (B,) losses with the gradient routing of ``mode``,
    plus the online latents ``z`` (B, d) (for regularisers). See the module table."""
    if mode not in LOSS_MODES:
        raise ValueError(f"mode {mode!r} is not a loss mode; choose one of {', '.join(LOSS_MODES)}")
    _check_batch(model, obs, actions, next_obs, aux_target)
    b = obs.shape[0]
    if z_all is None:
        z_all = model.encoder(torch.cat([obs, next_obs]))  # one pass for both branches
    z, z_next = z_all[:b], z_all[b:]
    if mode == "ema":
        if model.target_encoder is None:
            raise ValueError("mode 'ema' needs a model built with ema=True")
        with torch.no_grad():
            z_next = model.target_encoder(next_obs)
    elif not _TARGET_GRAD.get(mode, False):
        z_next = z_next.detach()
    z_dyn = z if _ENC_DYN[mode] else z.detach()
    dyn = ((model.transition(z_dyn, actions) - z_next) ** 2).mean(1)
    z_aux = z if _ENC_AUX[mode] else z.detach()
    out = model.aux_head(z_aux)
    if model.aux_loss == "mse":
        aux = ((out - aux_target) ** 2).mean(1)
    else:
        logits = out.view(b, model.aux_dim, model.num_bins)
        aux = two_hot_ce(logits, aux_target, model.vmin, model.vmax).mean(1)
    return {"dyn": dyn, "aux": aux, "z": z}


def jepa_losses(model: JEPAModel, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, aux_target: torch.Tensor, *, mode: str = "joint", c_p: float = 5.0, vicreg_var: float = 1.0, vicreg_cov: float = 0.04) -> dict[str, torch.Tensor]:
    """``{"total", "dyn", "aux"}`` (+ ``"vicreg_var"``, ``"vicreg_cov"`` in vicreg mode).

    obs, next_obs: (B, C, H, W); actions: (B,) int64; aux_target: (B, k) = p(o).
    ``total = dyn + c_p · aux`` (+ ``vicreg_var · var + vicreg_cov · cov``). The weight
    ``c_p`` multiplies the aux term in every mode; in modes where the encoder does not
    see L_p it only scales the probe head's learning signal.
    """
    terms = per_sample_losses(model, obs, actions, next_obs, aux_target, mode=mode)
    dyn, aux = terms["dyn"].mean(), terms["aux"].mean()
    out = {"dyn": dyn, "aux": aux, "total": dyn + c_p * aux}
    if mode == "vicreg":
        var, cov = vicreg_terms(terms["z"])
        out["vicreg_var"], out["vicreg_cov"] = var, cov
        out["total"] = out["total"] + vicreg_var * var + vicreg_cov * cov
    return out
