"""Tabular statements of Theorem 1 (No Unhealthy Representation Collapse).

On a finite deterministic MDP with transition table ``f (n, m)`` and aux values
``p (n, k)``, take an encoder that is a *coarsening*: ``E(s) = onehot(g(s))`` for a
grouping ``g: states -> 0..G-1``. With free tables T and P and squared errors averaged
uniformly over states and actions, the best T and P are group means, so the optimal
losses have closed forms (the within-group variances of the targets):

- ``L_p* = (1/n) Σ_s ||p(s) − mean_{s'∈g(s)} p(s')||² / k``
- ``L_dyn* = (1/(n m)) Σ_{s,a} ||e(s,a) − mean_{s'∈g(s)} e(s',a)||² / G`` with
  ``e(s,a) = onehot(g(f(s,a)))``.

Both vanish iff the kernel of g is a p-bisimulation (equal p inside groups and groups
mapped into groups by every action); so by Theorem 1 any g that merges two
non-bisimilar states has ``L_dyn* + c_p L_p* > 0``, while the quotient map onto the
classes of the largest bisimulation reaches 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["optimal_coarsening_losses", "quotient_model"]


def _groups(g: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    g = np.asarray(g)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer) or g.min() < 0:
        raise ValueError(f"groups must be non-negative integers of shape ({n},), got {g.dtype} {g.shape}")
    _, g = np.unique(g, return_inverse=True)
    return g.reshape(-1), int(g.max()) + 1


def _within_group_mse(values: np.ndarray, g: np.ndarray, n_groups: int) -> float:
    """Mean over rows and columns of (value − its group mean)²; values (n, d)."""
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, g, values)
    counts = np.bincount(g, minlength=n_groups)[:, None]
    return float(np.mean((values - (sums / counts)[g]) ** 2))


def optimal_coarsening_losses(table: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Closed-form minimum of L_dyn and L_p over free T and P for the coarsening ``groups``.

    table: (n, m) int next states; p: (n,) or (n, k) aux values; groups: (n,) int.
    Returns ``{"dyn", "aux"}``.
    """
    table = np.asarray(table)
    n, m = table.shape
    p = np.asarray(p, dtype=np.float64).reshape(n, -1)
    g, n_groups = _groups(groups, n)
    aux = _within_group_mse(p, g, n_groups)
    eye = np.eye(n_groups)
    dyn = np.mean([_within_group_mse(eye[g[table[:, a]]], g, n_groups) for a in range(m)])
    return {"dyn": float(dyn), "aux": aux}


def quotient_model(table: np.ndarray, p: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quotient P-JEPA: ``E (n, C)`` one-hot codes of ``classes``, ``T (C, m, C)`` with
    ``T[c, a] = E(f(s, a))`` for any s in class c, and ``P (C, k)`` with ``P[c] = p(s)``.

    Raises ``ValueError`` if ``classes`` is not a p-bisimulation (then no exact T, P exist).
    """
    table = np.asarray(table)
    n, m = table.shape
    p = np.asarray(p, dtype=np.float64).reshape(n, -1)
    g, n_cls = _groups(classes, n)
    enc = np.eye(n_cls)[g]
    trans = np.zeros((n_cls, m, n_cls))
    aux = np.zeros((n_cls, p.shape[1]))
    for c in range(n_cls):
        members = np.flatnonzero(g == c)
        nxt = g[table[members]]  # (|c|, m)
        if np.any(nxt != nxt[0]) or np.any(p[members] != p[members[0]]):
            raise ValueError(f"classes is not a p-bisimulation: class {c} has members with different p or successors")
        trans[c] = np.eye(n_cls)[nxt[0]]
        aux[c] = p[members[0]]
    return enc, trans, aux
