"""Bisimulation: known partitions and a property test against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auxfn.jepa.bisim import empirical_bisimulation, largest_bisimulation
from auxfn.jepa.envs import CountingMDP, GridWorldMDP, NuisanceProduct, RingMDP, TabularMDP


def _set_partitions(n):
    """All set partitions of range(n) as label arrays (restricted growth strings)."""
    def rec(i, labels, k):
        if i == n:
            yield np.array(labels)
            return
        for c in range(k + 1):
            yield from rec(i + 1, labels + [c], max(k, c + 1))
    yield from rec(0, [], 0)


def _brute_force_classes(table, p):
    """The coarsest partition that is a p-bisimulation, by enumerating every partition."""
    best = None
    for lab in _set_partitions(table.shape[0]):
        same = lab[:, None] == lab[None, :]
        if not np.all((p[:, None] == p[None, :]) | ~same):
            continue
        if not all(np.all(same[np.ix_(table[:, a], table[:, a])] | ~same) for a in range(table.shape[1])):
            continue
        if best is None or lab.max() < best.max():
            best = lab
    return best


def _brute_force_depth(table, p):
    """Shortest common action word that separates p, by breadth-first search on pairs."""
    n, m = table.shape
    depth = np.full((n, n), -1)
    for i, j in itertools.product(range(n), range(n)):
        frontier, seen, d = {(i, j)}, {(i, j)}, 0
        while frontier:
            if any(p[x] != p[y] for x, y in frontier):
                depth[i, j] = d
                break
            nxt = {(table[x, a], table[y, a]) for x, y in frontier for a in range(m)} - seen
            seen |= nxt
            frontier, d = nxt, d + 1
    return depth


@st.composite
def small_mdps(draw):
    n = draw(st.integers(1, 7))
    m = draw(st.integers(1, 3))
    table = np.array(draw(st.lists(st.integers(0, n - 1), min_size=n * m, max_size=n * m))).reshape(n, m)
    p = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=float)
    return table, p


@settings(max_examples=60, deadline=None)
@given(small_mdps())
def test_partition_and_depth_match_brute_force(mdp):
    table, p = mdp
    bis = largest_bisimulation(table, p)
    brute = _brute_force_classes(table, p)
    same_fast = bis.classes[:, None] == bis.classes[None, :]
    same_brute = brute[:, None] == brute[None, :]
    assert np.array_equal(same_fast, same_brute)
    assert np.array_equal(bis.depth, _brute_force_depth(table, p))
    # with every transition observed, the empirical version is the same relation
    n, m = table.shape
    tr = np.array([(s, a, table[s, a]) for s in range(n) for a in range(m)])
    emp = empirical_bisimulation(tr, p)
    assert emp.is_equivalence and np.array_equal(emp.depth, bis.depth)


def test_counting_reward_has_nine_classes_and_known_depths():
    bis = largest_bisimulation(CountingMDP(img=16), "reward")
    assert bis.n_classes == 9
    d = bis.depth
    assert d[4, 0] == 0 and d[3, 5] == 1 and d[2, 6] == 2 and d[1, 7] == 3 and d[0, 1] == 3 and d[0, 8] == 4
    assert np.all(np.diag(d) == -1)


def test_aux_none_gives_one_class():
    assert largest_bisimulation(CountingMDP(img=16), "none").n_classes == 1
    assert largest_bisimulation(GridWorldMDP(), "none").n_classes == 1


def test_gridworld_colour_pairs_merge_exactly():
    grid = GridWorldMDP(size=5)
    base = largest_bisimulation(grid, "reward")
    prod = NuisanceProduct(grid, 4)
    bis = largest_bisimulation(prod, "reward")
    assert bis.n_classes == base.n_classes == grid.n_states  # every cell is its own class
    s = np.arange(prod.n_states)
    same = bis.classes[:, None] == bis.classes[None, :]
    assert np.array_equal(same, (s[:, None] // 4) == (s[None, :] // 4))


def test_ring_depth_grows_with_n():
    depths = [largest_bisimulation(RingMDP(n), "reward").depth.max() for n in (4, 8, 12)]
    assert depths[0] < depths[1] < depths[2]


def test_empirical_bisimulation_with_missing_transitions_is_coarser_and_may_be_intransitive():
    # chain 0 -> 1 -> 2 (goal at 2); without the transition from 0, state 0 and 1 look alike
    p = np.array([0.0, 0.0, 1.0])
    full = empirical_bisimulation(np.array([[0, 0, 1], [1, 0, 2], [2, 0, 2]]), p)
    part = empirical_bisimulation(np.array([[1, 0, 2], [2, 0, 2]]), p)
    assert full.depth[0, 1] == 1 and part.depth[0, 1] == -1
    # 0 has no data, 1 and 3 differ after one step: 0~1, 0~3 but not 1~3
    p4 = np.array([0.0, 0.0, 1.0, 0.0])
    tr = np.array([[1, 0, 2], [3, 0, 3], [2, 0, 2]])
    emp = empirical_bisimulation(tr, p4)
    assert emp.equivalent[0, 1] and emp.equivalent[0, 3] and not emp.equivalent[1, 3]
    assert not emp.is_equivalence and emp.classes is None


class _Coin(TabularMDP):
    n_states, n_actions, obs_shape = 3, 1, (1, 1, 1)

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def _step(self, s, a):
        return self.rng.integers(0, 3, size=len(s))

    def _aux(self, s, kind):
        return s.astype(float)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="not deterministic"):
        largest_bisimulation(_Coin(), "reward")
    with pytest.raises(ValueError, match=r"aux must have shape \(n_states=9"):
        largest_bisimulation(CountingMDP(img=16), np.zeros(5))
    with pytest.raises(ValueError, match="not deterministic"):
        empirical_bisimulation(np.array([[0, 0, 1], [0, 0, 2]]), np.zeros(3))
    with pytest.raises(ValueError, match="aux kind 'xy'"):
        largest_bisimulation(CountingMDP(img=16), "xy")
