"""Neural Stochastic Control (Zhang, Zhu & Lin, NeurIPS 2022): AS and ES learners for controlled SDEs.

    dx = F(x) dt + G(x) dB,  F = f0 (+ u),  G = g0 + u(x),  u(0) = 0

- :mod:`~auxfn.sde_control.systems`: :class:`ControlledSDE` (a user's own system) and the paper's systems;
- :mod:`~auxfn.sde_control.controllers`, :mod:`~auxfn.sde_control.lyapunov`: u and V;
- :func:`generator` (Itô generator LV, in :mod:`~auxfn.sde_control.ito_generator`), :func:`as_loss`,
  :func:`es_loss`;
- :func:`train` -> :class:`ControlResult` with :class:`ControlConfig` and presets
  (:mod:`~auxfn.sde_control.training`);
- :func:`simulate` (batched Euler–Maruyama / Milstein, paired noise; :mod:`~auxfn.sde_control.simulation`)
  and :mod:`~auxfn.sde_control.metrics`.

The public names are imported lazily (PEP 562): ``import auxfn.sde_control`` does not import
torch until one of them is used. (No module shares its name with a public function, so the
lazy lookup always returns the function.) See docs/sde_control.md.
"""

from __future__ import annotations

from auxfn.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "config": ("PRESETS", "ControlConfig", "preset"),
    "controllers": ("DifferenceMLP", "LinearGain", "PinnedMLP", "ZeroPreservingMLP"),
    "ito_generator": ("GeneratorTerms", "generator"),
    "losses": ("as_loss", "as_residual", "es_loss", "es_residual"),
    "lyapunov": ("DiagQuadLyapunov", "ICNNLyapunov", "QuadraticLyapunov", "smooth_relu"),
    "simulation": ("BrownianIncrements", "Trajectories", "simulate"),
    "systems": ("SYSTEMS", "Box", "ControlledSDE", "make_system"),
    "training": ("ControlResult", "train"),
})
