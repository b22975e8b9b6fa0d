"""JEPA with an auxiliary head in deterministic MDPs (Yu et al. 2025, "Why and How Auxiliary
Tasks Improve JEPA Representations", arXiv 2509.12249).

The public names below are imported lazily (PEP 562) so that ``auxfn --help``, which
imports ``auxfn.jepa.cli``, does not pay for torch. ``import auxfn.jepa`` registers the
gymnasium ids ``auxfn/Counting-v0``, ``auxfn/GridWorld-v0`` and ``auxfn/Ring-v0`` (string
entry points: only gymnasium is imported); from a fresh interpreter,
``gymnasium.make("auxfn.jepa.envs:auxfn/Counting-v0")`` does it in one call.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "envs": (
        "CountingEnv", "CountingMDP", "GridWorld", "GridWorldMDP", "NuisanceProduct", "RingEnv",
        "RingMDP", "TabularEnv", "TabularMDP", "pixel_projection", "transition_table",
    ),
    "bisim": ("Bisimulation", "EmpiricalBisimulation", "empirical_bisimulation", "largest_bisimulation"),
    "models": ("AuxHead", "Encoder", "JEPAModel", "Transition"),
    "losses": ("jepa_losses", "two_hot", "two_hot_ce", "vicreg_terms", "MODES"),
    "training": ("JEPAConfig", "JEPAResult", "PRESETS", "load_run", "train"),
    "auditing": ("AuditReport", "audit"),
}
_EXPORTS["user_mdp"] = ("as_tabular_mdp", "validate_mdp")
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


try:  # gymnasium is a base dependency; a broken install must not break importing the package
    from auxfn.jepa.registration import register_envs as _register_envs

    _register_envs()
except ImportError:  # pragma: no cover
    pass


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"auxfn.jepa.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'auxfn.jepa' has no attribute {name!r}")
