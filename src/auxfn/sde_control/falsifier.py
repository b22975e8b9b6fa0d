"""A falsifier: search the training box for states that violate the learned condition.

Beyond the paper (which trains on a fixed sample only), in the spirit of the learner–falsifier
loop of Neural Lyapunov Control (Chang, Roohi & Gao 2019), with gradient ascent instead of an
SMT solver: from many random starts, projected signed-gradient ascent on the residual r(x)
(> 0 = violation), then keep the states with r > 0, worst first. Counterexamples found this way
are added to the training states (``ControlConfig.falsifier_every``). Finding none is evidence,
not a proof.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from auxfn.sde_control.systems import Box, ControlledSDE

__all__ = ["falsify", "find_counterexamples"]


def find_counterexamples(
    residual: Callable[[Tensor], Tensor], domain: Box, *, n_starts: int = 1000, steps: int = 20,
    step_size: float = 0.02, max_out: int = 100, seed: int = 0, dtype=torch.float32,
) -> Tensor:
    """States (k, d), k <= ``max_out``, in ``domain`` with ``residual(x) > 0``, worst first.

    ``residual``: (B, d) -> (B,), differentiable in x. ``step_size`` is a fraction of the
    box's width per coordinate (signed-gradient steps, so the residual's scale does not matter).
    """
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor(domain.low, dtype=dtype)
    hi = torch.tensor(domain.high, dtype=dtype)
    x = domain.sample(n_starts, generator=gen, dtype=dtype)
    h = step_size * (hi - lo)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            r = residual(x)
            (g,) = torch.autograd.grad(r.sum(), x)
        x = torch.minimum(torch.maximum(x.detach() + h * torch.sign(g), lo), hi)
    with torch.enable_grad():
        r = residual(x.detach().requires_grad_(True)).detach()
    bad = r > 0
    order = torch.argsort(r[bad], descending=True)
    return x.detach()[bad][order][:max_out]


def falsify(cfg, sde: ControlledSDE, V: nn.Module | None, *, seed: int) -> Tensor:
    """Counterexamples to the condition trained by ``cfg`` (AS or ES) for the current controller."""
    from auxfn.sde_control.ito_generator import generator
    from auxfn.sde_control.losses import as_residual, es_residual

    def residual(x: Tensor) -> Tensor:
        F, G, _ = sde.drift_and_diffusion(x)
        Gd = sde.dense(G)
        if V is None:
            # normalised: the ascent then is not pulled only towards the box's corners
            r = as_residual(x, F, Gd, cfg.alpha, cfg.as_form, normalize=True)
            return r if r.ndim == 1 else r.max(-1).values
        t = generator(V, x, F, Gd)
        return es_residual(t.V, t.LV, t.VG, cfg.b)

    dtype = next(iter(sde.controller.parameters())).dtype if sde.controller is not None else torch.float32
    return find_counterexamples(residual, sde.domain, n_starts=cfg.falsifier_starts, steps=cfg.falsifier_steps,
                                max_out=cfg.falsifier_add, seed=seed, dtype=dtype)
