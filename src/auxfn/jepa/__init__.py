"""JEPA with an auxiliary head in deterministic MDPs (Yu et al. 2025, "Why and How Auxiliary
Tasks Improve JEPA Representations", arXiv 2509.12249).

Importing this package registers the gymnasium environments ``auxfn/Counting-v0``,
``auxfn/GridWorld-v0`` and ``auxfn/Ring-v0``.
"""

from auxfn.jepa.bisim import Bisimulation, EmpiricalBisimulation, empirical_bisimulation, largest_bisimulation
from auxfn.jepa.envs import (
    CountingEnv,
    CountingMDP,
    GridWorld,
    GridWorldMDP,
    NuisanceProduct,
    RingEnv,
    RingMDP,
    TabularEnv,
    TabularMDP,
    transition_table,
)

__all__ = [
    "Bisimulation",
    "CountingEnv",
    "CountingMDP",
    "EmpiricalBisimulation",
    "GridWorld",
    "GridWorldMDP",
    "NuisanceProduct",
    "RingEnv",
    "RingMDP",
    "TabularEnv",
    "TabularMDP",
    "empirical_bisimulation",
    "largest_bisimulation",
    "transition_table",
]
