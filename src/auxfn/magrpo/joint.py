"""Joint actions and per-agent credit (notes §3.2).

At one node every agent i draws G completions a_i^(1..G). A *joint action* picks one
completion per agent:

- ``aligned``: joint action g is (a_1^(g), ..., a_N^(g)), so there are G of them;
- ``cross``: every tuple of the Cartesian product, G^N of them.

Each agent then needs one credit per *own* completion k. Aligned: c_k = R_k. Cross:
c_k = reduce_{j : j_i = k} R_j over the G^(N-1) joint actions holding completion k,
with ``reduce="mean"`` (default; keeps the advantage scale independent of N) or
``reduce="sum"`` (what the reference library does; it scales advantages by G^(N-1)).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["JOINT_MODES", "agent_credit", "joint_actions"]

JOINT_MODES = ("aligned", "cross")


def joint_actions(G: int, n_agents: int, mode: str = "aligned") -> list[tuple[int, ...]]:
    """Index tuples (k_1, ..., k_N) of the joint actions formed from G samples per agent.

    ``aligned`` -> [(0,...,0), (1,...,1), ...] (G tuples); ``cross`` -> itertools.product
    order (G^N tuples, the last agent's index varying fastest).
    """
    if not isinstance(G, int) or G < 1:
        raise ValueError(f"G must be a positive integer, got {G!r}")
    if not isinstance(n_agents, int) or n_agents < 1:
        raise ValueError(f"n_agents must be a positive integer, got {n_agents!r}")
    if mode == "aligned":
        return [(g,) * n_agents for g in range(G)]
    if mode == "cross":
        return list(itertools.product(range(G), repeat=n_agents))
    raise ValueError(f"mode must be one of {JOINT_MODES}, got {mode!r}")


def agent_credit(
    returns: Sequence[float] | np.ndarray,
    combos: Sequence[tuple[int, ...]],
    G: int,
    reduce: str = "mean",
) -> np.ndarray:
    """Per-agent credit of each own completion: array (n_agents, G).

    ``returns``: (J,) one return per joint action; ``combos``: the J index tuples from
    :func:`joint_actions`. credit[i, k] = reduce of returns[j] over j with combos[j][i] == k.
    A completion that appears in no joint action is an error (it would get no signal).
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(r) != len(combos):
        raise ValueError(f"returns must have shape ({len(combos)},) (one per joint action), got {r.shape}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if not combos:
        raise ValueError("combos is empty")
    n_agents = len(combos[0])
    idx = np.asarray(combos, dtype=np.int64)  # (J, N)
    if idx.shape != (len(combos), n_agents) or idx.min() < 0 or idx.max() >= G:
        raise ValueError(f"combos must be tuples of {n_agents} indices in [0, {G})")
    total = np.zeros((n_agents, G))
    count = np.zeros((n_agents, G))
    for i in range(n_agents):
        np.add.at(total[i], idx[:, i], r)
        np.add.at(count[i], idx[:, i], 1.0)
    if (count == 0).any():
        i, k = map(int, np.argwhere(count == 0)[0])
        raise ValueError(f"completion {k} of agent {i} is in no joint action")
    return total if reduce == "sum" else total / count
