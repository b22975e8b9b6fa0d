"""A user's own finite deterministic MDPs for the tests: plain classes, not TabularMDP subclasses.

Imported by tests/jepa/test_jepa_user_mdp.py as the module ``jepa_user_mdp_helpers``
(its folder is put on sys.path), so runs can record "jepa_user_mdp_helpers:LineMDP".
"""

from __future__ import annotations

import numpy as np


class LineMDP:
    """States 0..n-1 on a line; action 0 steps left, 1 steps right (clipped); reward at n-1.

    Rendered as a 1 x 4 x n image with the agent's column lit at a per-episode brightness.
    Every pair of states is told apart by the reward after some steps right, so the
    largest bisimulation has n classes.
    """

    def __init__(self, n: int = 6):
        self.n_states, self.n_actions = n, 2

    def step(self, s, a):
        return np.clip(np.asarray(s) + np.where(np.asarray(a) == 1, 1, -1), 0, self.n_states - 1)

    def aux(self, s):
        return (np.asarray(s) == self.n_states - 1).astype(float)

    def sample_nuisance(self, rng, n):
        return {"brightness": rng.choice([0.5, 1.0], size=n)}

    def render(self, s, nuisance):
        s = np.asarray(s)
        obs = np.zeros((len(s), 1, 4, self.n_states), dtype=np.float32)
        obs[np.arange(len(s)), 0, :, s] = nuisance["brightness"][:, None]
        return obs

    def nuisance_factors(self, nuisance):
        return {"brightness": (nuisance["brightness"] > 0.75).astype(np.int64)}


def make_line():
    """A factory function: ``cfg.env = "jepa_user_mdp_helpers:make_line"``."""
    return LineMDP(5)


class WrongAuxShape(LineMDP):
    def aux(self, s):
        return np.zeros(len(np.asarray(s)) + 1)


class Flaky(LineMDP):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def step(self, s, a):
        self.calls += 1
        return (np.asarray(s) + self.calls) % self.n_states


class TooManyActions(LineMDP):
    """Declares 3 actions but its table has 2 columns."""

    def __init__(self):
        super().__init__()
        self.n_actions = 3
        self.table = np.stack([np.maximum(np.arange(6) - 1, 0), np.minimum(np.arange(6) + 1, 5)], axis=1)

    def step(self, s, a):
        return self.table[np.asarray(s), np.asarray(a)]


class BadRender(LineMDP):
    def render(self, s, nuisance):
        return 255 * super().render(s, nuisance)
