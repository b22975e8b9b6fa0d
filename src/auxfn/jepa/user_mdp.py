"""Bring your own finite deterministic MDP: adapt, validate, and name it so a run can be reloaded.

The theory of the paper (Yu et al. 2025, §2) is about any finite deterministic MDP with
an auxiliary function ``p``. A user MDP is a *tabular core*: an object with

- ``n_states`` and ``n_actions`` (ints >= 1): states are ids ``0..n_states-1``;
- ``step(s, a) -> s'``: vectorised, ``s, a: (N,)`` int -> ``(N,)`` int, deterministic;
- ``aux(s)`` or ``aux(s, kind)``: the auxiliary function, ``(N,)`` or ``(N, k)``;
- ``render(s, nuisance) -> obs``: ``(N, C, H, W)`` float in [0, 1];

and optionally ``sample_nuisance(rng, n)`` (default: no nuisance, ``{}``),
``next_nuisance``, ``nuisance_factors``, ``obs_shape`` (default: read off a render) and
``aux_kinds`` (default ``("reward", "none")``, where ``"reward"`` is the user's ``aux``).
A :class:`~auxfn.jepa.envs.TabularMDP` subclass already has all of these.

``train(cfg, mdp=obj)`` takes the object; ``cfg.env = "package.module:attr"`` names a
factory (a class or function called with no arguments, or a module-level instance).
Either way the run records the factory path and a fingerprint of the transition table,
the auxiliary values and the observation shape, so :func:`auxfn.jepa.training.load_run`
and ``auxfn jepa audit RUN_DIR`` rebuild the same MDP, or say clearly why they cannot.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import numpy as np

from auxfn.core.config import import_object, is_import_path
from auxfn.core.errors import UserError
from auxfn.jepa.envs import TabularMDP, transition_table

__all__ = ["BUILTIN_ENVS", "MDPError", "as_tabular_mdp", "factory_path", "fingerprint", "is_factory_path", "load_factory", "validate_mdp"]

BUILTIN_ENVS = ("counting", "gridworld", "ring")


class MDPError(UserError, ValueError):
    """A user MDP does not satisfy the tabular-core protocol (or cannot be rebuilt)."""


def is_factory_path(env: str) -> bool:
    """True for ``"package.module:attr"`` (a module path, one colon, an attribute path)."""
    return is_import_path(env)


def load_factory(path: str) -> Any:
    """Import ``"module:attr"`` and build the MDP (call it when it is a class or function)."""
    if not is_factory_path(path):
        raise MDPError(f"env {path!r} is neither a built-in env ({', '.join(BUILTIN_ENVS)}) nor a factory path 'package.module:attr'")
    try:
        obj: Any = import_object(path, "the MDP factory", require_callable=False)
    except UserError as err:
        raise MDPError(f"{err}; or pass the MDP object as mdp=") from None
    if inspect.isclass(obj) or (callable(obj) and not _looks_like_mdp(obj)):
        try:
            obj = obj()
        except TypeError as err:
            raise MDPError(f"the MDP factory {path!r} must be callable with no arguments: {err}") from None
    return obj


def _looks_like_mdp(obj: Any) -> bool:
    return all(hasattr(obj, k) for k in ("n_states", "n_actions", "step", "aux", "render"))


def factory_path(obj: Any) -> str | None:
    """``"module:QualName"`` of the object's class when that class can be re-imported, else None."""
    cls = type(obj.mdp if isinstance(obj, _Adapter) else obj)
    mod, qual = cls.__module__, cls.__qualname__
    if mod in ("__main__", "builtins") or "<locals>" in qual:
        return None
    return f"{mod}:{qual}"


class _Adapter(TabularMDP):
    """A :class:`TabularMDP` view of a user object that implements only part of the protocol."""

    def __init__(self, mdp: Any, obs_shape: tuple[int, int, int]):
        self.mdp = mdp
        self.n_states, self.n_actions = int(mdp.n_states), int(mdp.n_actions)
        self.obs_shape = obs_shape
        self.aux_kinds = tuple(getattr(mdp, "aux_kinds", ("reward", "none")))
        if "none" not in self.aux_kinds:
            self.aux_kinds = (*self.aux_kinds, "none")
        try:
            n_params = len([p for p in inspect.signature(mdp.aux).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError):
            n_params = 2
        self._aux_takes_kind = n_params >= 2

    def _step(self, s, a):
        return self.mdp.step(s, a)

    def _aux(self, s, kind):
        return self.mdp.aux(s, kind) if self._aux_takes_kind else self.mdp.aux(s)

    def sample_nuisance(self, rng, n):
        return self.mdp.sample_nuisance(rng, n) if hasattr(self.mdp, "sample_nuisance") else {}

    def next_nuisance(self, nuisance, s, s_next, rng):
        return self.mdp.next_nuisance(nuisance, s, s_next, rng) if hasattr(self.mdp, "next_nuisance") else nuisance

    def render(self, s, nuisance):
        return np.asarray(self.mdp.render(s, nuisance), dtype=np.float32)

    def nuisance_factors(self, nuisance):
        return self.mdp.nuisance_factors(nuisance) if hasattr(self.mdp, "nuisance_factors") else {}

    @property
    def deterministic_pixels(self):
        return bool(getattr(self.mdp, "deterministic_pixels", True))


def _int_attr(mdp: Any, name: str) -> int:
    v = getattr(mdp, name, None)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise MDPError(f"the MDP's {name} must be an integer >= 1, got {v!r}")
    return int(v)


def as_tabular_mdp(mdp: Any) -> TabularMDP:
    """A :class:`TabularMDP` for ``mdp`` (itself when it already is one; else an adapter)."""
    missing = [k for k in ("n_states", "n_actions", "step", "aux", "render") if not hasattr(mdp, k)]
    if missing:
        raise MDPError(f"the MDP ({type(mdp).__name__}) lacks {', '.join(missing)}: a tabular core needs n_states, n_actions, step(s, a), aux(s) and render(s, nuisance)")
    n, m = _int_attr(mdp, "n_states"), _int_attr(mdp, "n_actions")
    if isinstance(mdp, TabularMDP):
        return mdp
    shape = getattr(mdp, "obs_shape", None)
    if shape is None:
        nuis = mdp.sample_nuisance(np.random.default_rng(0), 1) if hasattr(mdp, "sample_nuisance") else {}
        shape = np.asarray(mdp.render(np.zeros(1, dtype=np.int64), nuis)).shape[1:]
    del n, m
    return _Adapter(mdp, tuple(int(x) for x in shape))


def validate_mdp(core: TabularMDP, aux_kinds: tuple[str, ...] = ("reward",), n_render: int = 2) -> np.ndarray:
    """Check the tabular-core protocol on every state and action; return the table f[s, a].

    Raises :class:`MDPError` naming the problem: step not deterministic, step failing for
    an action id below ``n_actions`` (an action-count mismatch), next states out of range,
    an aux value of the wrong shape or not finite, renders of the wrong shape or range.
    """
    n, m = _int_attr(core, "n_states"), _int_attr(core, "n_actions")
    shape = tuple(getattr(core, "obs_shape", ()))
    if len(shape) != 3 or not all(isinstance(x, (int, np.integer)) and x >= 1 for x in shape):
        raise MDPError(f"the MDP's obs_shape must be (C, H, W) of positive ints, got {shape!r}")
    try:
        table = transition_table(core, check=True)
    except (IndexError, KeyError) as err:
        raise MDPError(
            f"step(s, a) failed for some state in 0..{n - 1} and action in 0..{m - 1} ({type(err).__name__}: {err}); "
            f"does n_actions = {m} match the actions step() supports?"
        ) from None
    except ValueError as err:
        raise MDPError(str(err)) from None
    states = np.arange(n)
    for kind in aux_kinds:
        if kind == "random":
            continue
        if kind not in core.aux_kinds:
            raise MDPError(f"aux kind {kind!r} is not known to the MDP; it offers {', '.join(core.aux_kinds)}")
        try:
            full = np.asarray(core.aux(states, kind))
        except ValueError as err:
            raise MDPError(f"aux(s, {kind!r}) for s = 0..{n - 1}: {err}") from None
        if full.ndim != 2 or full.shape[0] != n:
            raise MDPError(f"aux(s, {kind!r}) must return shape (N,) or (N, k) for N = {n} states, got {full.shape}")
        if not np.all(np.isfinite(full)):
            raise MDPError(f"aux(s, {kind!r}) returned non-finite values")
        part = np.asarray(core.aux(states[::-1][: max(1, n // 2)], kind))
        if part.shape != (max(1, n // 2), full.shape[1]) or not np.allclose(part, full[::-1][: max(1, n // 2)]):
            raise MDPError(f"aux(s, {kind!r}) is not a function of the states: a subset of states gave shape {part.shape} or other values than the full set")
    rng = np.random.default_rng(0)
    s = np.repeat(states, n_render)
    nuis = core.sample_nuisance(rng, len(s))
    obs = np.asarray(core.render(s, nuis))
    if obs.shape != (len(s), *shape):
        raise MDPError(f"render(s, nuisance) must return shape (N, {', '.join(map(str, shape))}) with N = {len(s)}, got {obs.shape}")
    if not np.all(np.isfinite(obs)) or obs.min() < 0 or obs.max() > 1:
        raise MDPError(f"render(s, nuisance) must return values in [0, 1], got range [{np.nanmin(obs):.3g}, {np.nanmax(obs):.3g}]")
    return table


def fingerprint(core: TabularMDP, aux: str) -> str:
    """A hash of n_states, n_actions, obs_shape, the transition table and aux values: the MDP's identity."""
    h = hashlib.sha256()
    h.update(repr((int(core.n_states), int(core.n_actions), tuple(int(x) for x in core.obs_shape))).encode())
    h.update(np.ascontiguousarray(transition_table(core, check=False), dtype=np.int64).tobytes())
    if aux != "random":
        h.update(np.round(np.asarray(core.aux(np.arange(core.n_states), aux), dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:16]
