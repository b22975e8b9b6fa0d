"""JEPA with an auxiliary head in deterministic MDPs (Yu et al. 2025, "Why and How Auxiliary
Tasks Improve JEPA Representations", arXiv 2509.12249).

The public names below are imported lazily (PEP 562) so that ``auxfn --help``, which
imports ``auxfn.jepa.cli``, does not pay for torch. ``import auxfn.jepa`` registers the
gymnasium ids ``auxfn/Counting-v0``, ``auxfn/GridWorld-v0`` and ``auxfn/Ring-v0`` (string
entry points: only gymnasium is imported); from a fresh interpreter,
``gymnasium.make("auxfn.jepa.envs:auxfn/Counting-v0")`` does it in one call.
"""

from __future__ import annotations

from auxfn.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "envs": (
        "CountingEnv", "CountingMDP", "GridWorld", "GridWorldMDP", "NuisanceProduct", "RingEnv",
        "RingMDP", "TabularEnv", "TabularMDP", "pixel_projection", "transition_table",
    ),
    "bisim": ("Bisimulation", "EmpiricalBisimulation", "empirical_bisimulation", "largest_bisimulation"),
    "models": ("AuxHead", "Encoder", "JEPAModel", "Transition"),
    "losses": ("jepa_losses", "two_hot", "two_hot_ce", "vicreg_terms", "MODES"),
    "training": ("JEPAConfig", "JEPAResult", "PRESETS", "load_run", "train"),
    "auditing": ("AuditReport", "audit"),
    "user_mdp": ("as_tabular_mdp", "validate_mdp"),
})

try:  # gymnasium is a base dependency; a broken install must not break importing the package
    from auxfn.jepa.registration import register_envs as _register_envs

    _register_envs()
except ImportError:  # pragma: no cover
    pass
