"""The largest p-bisimulation of a finite deterministic MDP, and distinguishing depths.

Definition (Yu et al. 2025, Definition 1): with
``F(R) = {(o, o') : p(o) != p(o')} ∪ {(o, o') : ∃a, (f(o, a), f(o', a)) ∈ R}``
the pairs that can be told apart are ``R* = ∪_n F^n(∅)`` and the largest bisimulation
is ``B* = O×O \\ R*``. The *distinguishing depth* of a pair is the smallest n with the
pair in ``F^{n+1}(∅)``: the number of actions to take (the same for both) before the
auxiliary values differ. Depth 0 means ``p`` already differs.

:func:`largest_bisimulation` computes B* by partition refinement (Moore's algorithm:
split blocks by the blocks of their successors until nothing changes); round ``n`` of
the refinement separates exactly the pairs of depth ``n``.
:func:`empirical_bisimulation` is the finite-data version: only observed transitions
count, and the result is a relation on states that need not be an equivalence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from auxfn.jepa.envs import TabularMDP, transition_table

__all__ = ["Bisimulation", "EmpiricalBisimulation", "aux_classes", "empirical_bisimulation", "largest_bisimulation"]

NOT_DISTINGUISHED = -1


@dataclass(frozen=True)
class Bisimulation:
    """``classes[s]``: class id of state s (0..n_classes-1, in order of first appearance);
    ``depth[s, t]``: distinguishing depth of (s, t), ``-1`` for bisimilar pairs."""

    classes: np.ndarray
    depth: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.classes.max()) + 1 if self.classes.size else 0

    def class_depth(self) -> np.ndarray:
        """Depth between classes, (n_classes, n_classes); -1 on the diagonal."""
        k = self.n_classes
        rep = np.array([np.flatnonzero(self.classes == c)[0] for c in range(k)])
        return self.depth[np.ix_(rep, rep)]


def _canonical_labels(keys: np.ndarray) -> np.ndarray:
    """Relabel rows of ``keys`` 0, 1, ... in order of first appearance."""
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse.reshape(-1)]


def aux_classes(p: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """Group states by equal auxiliary value (rows equal up to rounding to a grid of ``atol``)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"aux must have shape (n_states, k), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("aux holds non-finite values")
    return _canonical_labels(np.round(p / atol).astype(np.int64) if atol > 0 else p)


def _check_aux(p: Any, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"aux must have shape (n_states={n}, k), got {p.shape}")
    return p


def largest_bisimulation(mdp: TabularMDP | np.ndarray, aux: Any = "reward", atol: float = 1e-9) -> Bisimulation:
    """The largest bisimulation of a deterministic MDP for the auxiliary function ``aux``.

    ``mdp``: a :class:`TabularMDP` or a transition table ``f`` of shape (n_states, n_actions).
    ``aux``: an aux kind known to the MDP (e.g. ``"reward"``) or values of shape
    (n_states,) or (n_states, k). Values equal up to ``atol`` count as equal.
    """
    if isinstance(mdp, np.ndarray):
        table = np.asarray(mdp, dtype=np.int64)
        if table.ndim != 2 or table.size == 0 or table.min() < 0 or table.max() >= table.shape[0]:
            raise ValueError(f"a transition table must have shape (n_states, n_actions) with entries in 0..n_states-1, got shape {table.shape}")
    else:
        table = transition_table(mdp)
    n = table.shape[0]
    if isinstance(aux, str):
        if isinstance(mdp, np.ndarray):
            raise ValueError("aux must be an array when mdp is a transition table")
        aux = mdp.aux(np.arange(n), aux)
    labels = aux_classes(_check_aux(aux, n), atol)
    depth = np.full((n, n), NOT_DISTINGUISHED, dtype=np.int64)
    depth[labels[:, None] != labels[None, :]] = 0
    rnd = 0
    while True:
        rnd += 1
        # A block splits when its states' successors lie in different blocks (Moore refinement).
        signature = np.concatenate([labels[:, None], labels[table]], axis=1)
        new = _canonical_labels(signature)
        if new.max() == labels.max():
            break
        split = (new[:, None] != new[None, :]) & (depth == NOT_DISTINGUISHED)
        depth[split] = rnd
        labels = new
    return Bisimulation(classes=labels, depth=depth)


@dataclass(frozen=True)
class EmpiricalBisimulation:
    """``depth[s, t]``: smallest depth at which observed transitions tell s and t apart (-1: never).

    ``equivalent = depth < 0``. With partial data this relation need not be transitive;
    ``is_equivalence`` says whether it is, and then ``classes`` holds its classes.
    """

    depth: np.ndarray
    is_equivalence: bool
    classes: np.ndarray | None

    @property
    def equivalent(self) -> np.ndarray:
        return self.depth < 0


def empirical_bisimulation(transitions: Any, aux: Any, n_states: int | None = None, atol: float = 1e-9) -> EmpiricalBisimulation:
    """The bisimulation restricted to observed transitions (the finite-data version).

    ``transitions``: an int array (M, 3) of rows ``(s, a, s_next)`` (or a tuple of three
    (M,) arrays). ``aux``: (n_states,) or (n_states, k) values of p. A pair is told apart
    at depth 0 when p differs, and at depth n+1 when some action observed from *both*
    states leads to a pair told apart at depth n. Contradictory transitions (the same
    (s, a) to two states) raise ``ValueError``: the MDP must be deterministic.
    """
    if isinstance(transitions, tuple):
        transitions = np.stack([np.asarray(t) for t in transitions], axis=1)
    tr = np.asarray(transitions)
    if tr.ndim != 2 or tr.shape[1] != 3 or not np.issubdtype(tr.dtype, np.integer):
        raise ValueError(f"transitions must be an integer array of shape (M, 3) of (s, a, s_next), got {tr.dtype} {tr.shape}")
    p = np.asarray(aux, dtype=np.float64)
    n = int(n_states if n_states is not None else p.shape[0])
    p = _check_aux(p, n)
    if tr.size and (tr[:, [0, 2]].min() < 0 or tr[:, [0, 2]].max() >= n or tr[:, 1].min() < 0):
        raise ValueError(f"transitions hold state ids outside 0..{n - 1} or negative actions")
    m = int(tr[:, 1].max()) + 1 if tr.size else 1
    table = np.full((n, m), -1, dtype=np.int64)
    for s, a, s2 in np.unique(tr, axis=0):
        if table[s, a] >= 0 and table[s, a] != s2:
            raise ValueError(f"the transitions are not deterministic: ({s}, {a}) leads to {table[s, a]} and to {s2}")
        table[s, a] = s2
    labels = aux_classes(p, atol)
    depth = np.full((n, n), NOT_DISTINGUISHED, dtype=np.int64)
    depth[labels[:, None] != labels[None, :]] = 0
    known = table >= 0
    rnd = 0
    while True:  # pairwise fixed point: O(n^2 * m) per round, at most n^2 rounds
        rnd += 1
        told = depth >= 0
        new = np.zeros((n, n), dtype=bool)
        for a in range(m):
            both = known[:, a][:, None] & known[:, a][None, :]
            succ = np.where(known[:, a], table[:, a], 0)
            new |= both & told[np.ix_(succ, succ)]
        new &= ~told
        if not new.any():
            break
        depth[new] = rnd
    eq = depth < 0
    # an equivalence iff "equivalent" is transitive: eq @ eq implies eq
    closure = (eq.astype(np.int64) @ eq.astype(np.int64)) > 0
    is_eq = bool(np.all(eq[closure]))
    classes = _canonical_labels(eq.astype(np.int8)) if is_eq else None
    return EmpiricalBisimulation(depth=depth, is_equivalence=is_eq, classes=classes)
