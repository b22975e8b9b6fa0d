"""Neural Stochastic Control (Zhang, Zhu & Lin, NeurIPS 2022): AS and ES learners for controlled SDEs.

    dx = F(x) dt + G(x) dB,  F = f0 (+ u),  G = g0 + u(x),  u(0) = 0

- :mod:`~auxfn.sde_control.systems`: :class:`ControlledSDE` (a user's own system) and the paper's systems;
- :mod:`~auxfn.sde_control.controllers`, :mod:`~auxfn.sde_control.lyapunov`: u and V;
- :func:`generator` (Itô generator LV), :func:`as_loss`, :func:`es_loss`;
- :func:`train` -> :class:`ControlResult` with :class:`ControlConfig` and presets;
- :func:`simulate` (batched Euler–Maruyama / Milstein, paired noise) and :mod:`~auxfn.sde_control.metrics`.

See docs/sde_control.md.
"""

# Eager imports (torch included): three public functions share their names with their
# modules (simulate, train, generator), so a PEP 562 lazy __getattr__ would hand out the
# module instead of the function whenever the module had been imported first.
from auxfn.sde_control.config import PRESETS, ControlConfig, preset
from auxfn.sde_control.controllers import DifferenceMLP, LinearGain, PinnedMLP, ZeroPreservingMLP
from auxfn.sde_control.generator import GeneratorTerms, generator
from auxfn.sde_control.losses import as_loss, as_residual, es_loss, es_residual
from auxfn.sde_control.lyapunov import (
    DiagQuadLyapunov,
    ICNNLyapunov,
    QuadraticLyapunov,
    smooth_relu,
)
from auxfn.sde_control.simulate import BrownianIncrements, Trajectories, simulate
from auxfn.sde_control.systems import SYSTEMS, Box, ControlledSDE, make_system
from auxfn.sde_control.train import ControlResult, train

__all__ = [
    "PRESETS",
    "SYSTEMS",
    "Box",
    "BrownianIncrements",
    "ControlConfig",
    "ControlResult",
    "ControlledSDE",
    "DiagQuadLyapunov",
    "DifferenceMLP",
    "GeneratorTerms",
    "ICNNLyapunov",
    "LinearGain",
    "PinnedMLP",
    "QuadraticLyapunov",
    "Trajectories",
    "ZeroPreservingMLP",
    "as_loss",
    "as_residual",
    "es_loss",
    "es_residual",
    "generator",
    "make_system",
    "preset",
    "simulate",
    "smooth_relu",
    "train",
]
