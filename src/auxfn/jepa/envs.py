"""Finite deterministic MDPs with pixel renderings, and their gymnasium environments.

Every environment is a *tabular core* (a :class:`TabularMDP`) plus a thin
:class:`gymnasium.Env` around it. The core is what the theory of the paper is about
(Yu et al. 2025, §2): a deterministic transition ``f(s, a)`` on state ids, an
auxiliary function ``p(s)`` and a renderer that turns a state and a per-episode
nuisance (shape, colour, positions, background) into pixels. Because the state space
is finite, the largest bisimulation, distinguishing depths and probes can be computed
exactly (``auxfn.jepa.bisim``, ``auxfn.jepa.auditing``).

A user MDP plugs in by subclassing :class:`TabularMDP` (or providing the same
methods): ``n_states``, ``n_actions``, ``step``, ``aux``, ``sample_nuisance``,
``render`` and, where the nuisance changes along a transition, ``next_nuisance``.

Shapes: states ``s: (N,)`` int64; actions ``a: (N,)`` int64; aux ``(N, k)`` float64;
observations ``(N, C, H, W)`` float32 in [0, 1]; a nuisance is a dict of arrays with
leading dimension ``N``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "AUX_KINDS",
    "CountingEnv",
    "CountingMDP",
    "GridWorld",
    "GridWorldMDP",
    "NuisanceProduct",
    "RingEnv",
    "RingMDP",
    "TabularEnv",
    "TabularMDP",
    "make_aux_fn",
    "pixel_projection",
    "transition_table",
]

Nuisance = dict[str, np.ndarray]
AUX_KINDS = ("reward", "dense", "count", "random", "none")
SHAPES = ("circle", "square", "triangle", "line")


def _as_states(s: Any, n_states: int, name: str = "s") -> np.ndarray:
    s = np.asarray(s)
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array of state ids of shape (N,), got dtype {s.dtype} shape {s.shape}")
    if s.size and (s.min() < 0 or s.max() >= n_states):
        raise ValueError(f"{name} holds state ids outside 0..{n_states - 1}")
    return s.astype(np.int64)


def _as_actions(a: Any, n_actions: int, n: int) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"a must be an integer array of shape ({n},), got dtype {a.dtype} shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n_actions):
        raise ValueError(f"a holds actions outside 0..{n_actions - 1}")
    return a.astype(np.int64)


class TabularMDP:
    """A finite deterministic MDP whose states are rendered as images.

    Subclasses set ``n_states``, ``n_actions``, ``obs_shape`` and implement ``_step``,
    ``_aux``, ``sample_nuisance`` and ``render``. ``aux_kinds`` lists the auxiliary
    functions the core knows; ``"none"`` (a constant, which makes every pair bisimilar)
    is always available.
    """

    n_states: int
    n_actions: int
    obs_shape: tuple[int, int, int]
    aux_kinds: tuple[str, ...] = ("reward", "none")

    # ------------------------------------------------------------------ dynamics
    def step(self, s: Any, a: Any) -> np.ndarray:
        """``f(s, a)``: the next state ids, shape (N,)."""
        s = _as_states(s, self.n_states)
        a = _as_actions(a, self.n_actions, len(s))
        return np.asarray(self._step(s, a), dtype=np.int64)

    def _step(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def aux(self, s: Any, kind: str = "reward") -> np.ndarray:
        """``p(s)``: the auxiliary function of the states, shape (N, k) float64."""
        s = _as_states(s, self.n_states)
        if kind not in self.aux_kinds:
            raise ValueError(f"aux kind {kind!r} is not known to {type(self).__name__}; choose one of {', '.join(self.aux_kinds)}")
        if kind == "none":
            return np.zeros((len(s), 1))
        out = np.asarray(self._aux(s, kind), dtype=np.float64)
        if out.ndim == 1 and out.shape[0] == len(s):
            return out[:, None]
        if out.ndim != 2 or out.shape[0] != len(s):
            raise ValueError(f"{type(self).__name__}.aux(s, {kind!r}) must return shape ({len(s)},) or ({len(s)}, k) for {len(s)} states, got {out.shape}")
        return out

    def _aux(self, s: np.ndarray, kind: str) -> np.ndarray:
        raise NotImplementedError

    def reward(self, s: Any) -> np.ndarray:
        """The environment reward of arriving in ``s`` (used by the gymnasium wrapper)."""
        return self.aux(s, "reward")[:, 0]

    def is_terminal(self, s: np.ndarray) -> np.ndarray:
        return np.zeros(len(s), dtype=bool)

    # ------------------------------------------------------------------ rendering
    def sample_nuisance(self, rng: np.random.Generator, n: int) -> Nuisance:
        """``n`` independent per-episode nuisances (dict of arrays with leading dim n)."""
        return {}

    def next_nuisance(self, nuisance: Nuisance, s: np.ndarray, s_next: np.ndarray, rng: np.random.Generator) -> Nuisance:
        """The nuisance of the frame after a transition ``s -> s_next`` (default: unchanged)."""
        return nuisance

    def render(self, s: Any, nuisance: Nuisance) -> np.ndarray:
        """Observations of states ``s`` under ``nuisance``: (N, C, H, W) float32 in [0, 1]."""
        raise NotImplementedError

    def nuisance_factors(self, nuisance: Nuisance) -> dict[str, np.ndarray]:
        """Discrete labels of each nuisance factor, for linear probes: name -> (N,) int."""
        return {}

    @property
    def deterministic_pixels(self) -> bool:
        """True when the observation MDP (state + fixed nuisance) is exactly deterministic."""
        return True


def pixel_projection(obs: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """A frozen random linear function of the pixels: ``obs (N, C, H, W) -> (N, dim)``.

    ``W`` has i.i.d. N(0, 1/D) entries (D = C*H*W) drawn from ``seed``, so the same seed
    gives the same function everywhere (the paper's random-function auxiliary).
    """
    obs = np.asarray(obs)
    if obs.ndim != 4:
        raise ValueError(f"obs must have shape (N, C, H, W), got {obs.shape}")
    flat = obs.reshape(len(obs), -1).astype(np.float64)
    w = np.random.default_rng(seed).standard_normal((flat.shape[1], dim)) / np.sqrt(flat.shape[1])
    return flat @ w


def transition_table(mdp: TabularMDP, *, check: bool = True) -> np.ndarray:
    """The table ``f[s, a]`` of shape (n_states, n_actions), int64.

    With ``check`` the step function is called twice and must return the same states
    (the audit and the bisimulation assume a deterministic MDP).
    """
    n, m = int(mdp.n_states), int(mdp.n_actions)
    if n < 1 or m < 1:
        raise ValueError(f"an MDP needs n_states >= 1 and n_actions >= 1, got {n} and {m}")
    s = np.repeat(np.arange(n), m)
    a = np.tile(np.arange(m), n)
    nxt = np.asarray(mdp.step(s, a), dtype=np.int64)
    if nxt.shape != (n * m,):
        raise ValueError(f"step(s, a) must return shape ({n * m},), got {nxt.shape}")
    if nxt.min() < 0 or nxt.max() >= n:
        raise ValueError(f"step(s, a) returned state ids outside 0..{n - 1}")
    if check:
        again = np.asarray(mdp.step(s, a), dtype=np.int64)
        bad = np.flatnonzero(again != nxt)
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"the MDP's step is not deterministic: step({s[i]}, {a[i]}) returned {nxt[i]} and then {again[i]}"
            )
    return nxt.reshape(n, m)


# =========================================================================== counting


def _shape_masks(yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: float, shape: np.ndarray) -> np.ndarray:
    """Boolean masks (N, K, H, W) of shape ``shape[N]`` centred at (cy, cx)[N, K] with radius r."""
    dy = yy[None, None] - cy[..., None, None]
    dx = xx[None, None] - cx[..., None, None]
    sh = shape[:, None, None, None]
    circle = dy**2 + dx**2 <= r * r + 0.25
    square = (np.abs(dy) <= r) & (np.abs(dx) <= r)
    triangle = (np.abs(dy) <= r) & (2 * np.abs(dx) <= dy + r)
    line = (np.abs(dy) <= 0.5) & (np.abs(dx) <= r)
    return np.where(sh == 0, circle, np.where(sh == 1, square, np.where(sh == 2, triangle, line)))


class CountingMDP(TabularMDP):
    """The counting environment of the paper (§3.1): ``count`` objects on a black image.

    States are counts ``0..max_count``; action 0 removes one object and action 1 adds
    one (clipped). Shape and colour are drawn per episode. ``nuisance``:

    - ``"slots"``: each episode fixes ``max_count`` non-overlapping positions and count k
      shows the first k, so the pixels are a deterministic function of (state, episode);
    - ``"resample"``: the paper's behaviour, positions are redrawn whenever the count
      changes (so o_{t+1} is not a function of o_t);
    - ``"none"``: one canonical picture per count (fixed shape, colour and slots).

    Positions are drawn as distinct cells of a grid with a little jitter, which
    guarantees no overlap (the reference code uses 50 rejection tries instead).
    """

    aux_kinds = AUX_KINDS

    def __init__(self, max_count: int = 8, target: int = 4, img: int = 32, nuisance: str = "slots", random_dim: int = 16, random_seed: int = 0):
        if not isinstance(max_count, int) or max_count < 1:
            raise ValueError(f"max_count must be an integer >= 1, got {max_count!r}")
        if not (0 <= target <= max_count):
            raise ValueError(f"target must be in 0..max_count={max_count}, got {target!r}")
        if img not in (16, 32, 64):
            raise ValueError(f"img must be 16, 32 or 64, got {img!r}")
        if nuisance not in ("slots", "resample", "none"):
            raise ValueError(f"nuisance must be 'slots', 'resample' or 'none', got {nuisance!r}")
        self.max_count, self.target, self.img, self.nuisance = max_count, target, img, nuisance
        self.n_states, self.n_actions = max_count + 1, 2
        self.obs_shape = (3, img, img)
        self.radius = max(1, img // 16)
        self.cell = 2 * self.radius + 2
        self.n_cells_side = img // self.cell
        if self.n_cells_side**2 < max_count:
            raise ValueError(f"img={img} has room for only {self.n_cells_side**2} objects, fewer than max_count={max_count}")
        self.random_dim, self.random_seed = random_dim, random_seed
        r = self.radius
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
        stamps = _shape_masks(yy, xx, np.zeros((len(SHAPES), 1)), np.zeros((len(SHAPES), 1)), float(r), np.arange(len(SHAPES)))[:, 0]
        self._stamps = [(yy[m].astype(np.int64), xx[m].astype(np.int64)) for m in stamps]  # pixel offsets per shape
        self._canonical = self.sample_nuisance(np.random.default_rng(12345), 1, _force=True)

    def _step(self, s, a):
        return np.clip(s + np.where(a == 1, 1, -1), 0, self.max_count)

    def _aux(self, s, kind):
        if kind == "reward":
            return (s == self.target).astype(float)
        if kind == "dense":  # the reference code's dense reward: 1 - |k - target|/max + 1[k = target], in [0, 2]
            return np.clip(1 - np.abs(s - self.target) / self.max_count + (s == self.target), 0, 2)
        if kind == "count":
            return s.astype(float)
        if kind == "random":  # the frozen pixel projection of the canonical (nuisance-free) picture
            canon = {k: np.repeat(v, len(s), axis=0) for k, v in self._canonical.items()}
            return pixel_projection(self.render(s, canon), self.random_dim, self.random_seed)
        raise AssertionError(kind)

    def is_terminal(self, s):
        return s == self.target

    def sample_nuisance(self, rng, n, _force: bool = False):
        if self.nuisance == "none" and not _force:
            return {k: np.repeat(v, n, axis=0) for k, v in self._canonical.items()}
        shape = rng.integers(0, len(SHAPES), size=n)
        colour = rng.integers(30, 226, size=(n, 3)) / 255.0
        return {"shape": shape, "colour": colour, "pos": self._positions(rng, n)}

    def _positions(self, rng, n):
        cells = np.argsort(rng.random((n, self.n_cells_side**2)), axis=1)[:, : self.max_count]
        cy, cx = np.divmod(cells, self.n_cells_side)
        slack = self.cell - (2 * self.radius + 1)
        jitter = rng.integers(0, slack + 1, size=(n, self.max_count, 2))
        off = (self.img - self.n_cells_side * self.cell) // 2
        y = off + cy * self.cell + self.radius + jitter[..., 0]
        x = off + cx * self.cell + self.radius + jitter[..., 1]
        return np.stack([y, x], axis=-1).astype(np.float64)

    def next_nuisance(self, nuisance, s, s_next, rng):
        if self.nuisance != "resample":
            return nuisance
        # the reference code redraws positions after every +-1 action, also at the clipped bounds
        return {**nuisance, "pos": self._positions(rng, len(s))}

    def render(self, s, nuisance):
        s = _as_states(s, self.n_states)
        n = len(s)
        pos = nuisance["pos"]
        if pos.shape != (n, self.max_count, 2):
            raise ValueError(f"nuisance['pos'] must have shape ({n}, {self.max_count}, 2), got {pos.shape}")
        # Paste one stamp per visible object (fancy indexing) instead of testing every pixel
        # against every slot: about 20x faster at batch 128, which matters on CPU.
        visible = np.arange(self.max_count)[None, :] < s[:, None]
        n_idx, k_idx = np.nonzero(visible)
        mask = np.zeros((n, self.img, self.img), dtype=bool)
        shapes = np.asarray(nuisance["shape"])[n_idx]
        for sh, (dy, dx) in enumerate(self._stamps):
            sel = shapes == sh
            if not sel.any():
                continue
            ys = pos[n_idx[sel], k_idx[sel], 0].astype(np.int64)[:, None] + dy[None]
            xs = pos[n_idx[sel], k_idx[sel], 1].astype(np.int64)[:, None] + dx[None]
            ok = (ys >= 0) & (ys < self.img) & (xs >= 0) & (xs < self.img)
            rows = np.broadcast_to(n_idx[sel][:, None], ys.shape)
            mask[rows[ok], ys[ok], xs[ok]] = True
        obs = mask[:, None] * nuisance["colour"][:, :, None, None]
        return obs.astype(np.float32)

    def nuisance_factors(self, nuisance):
        return {
            "shape": np.asarray(nuisance["shape"], dtype=np.int64),
            "colour": np.argmax(nuisance["colour"], axis=1).astype(np.int64),
            "slot0_quadrant": (
                2 * (nuisance["pos"][:, 0, 0] >= self.img / 2) + (nuisance["pos"][:, 0, 1] >= self.img / 2)
            ).astype(np.int64),
        }

    @property
    def deterministic_pixels(self):
        return self.nuisance != "resample"


# =========================================================================== grid world

_MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right
_BG_PALETTE = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.3], [0.0, 0.25, 0.3], [0.3, 0.25, 0.0]])


class GridWorldMDP(TabularMDP):
    """A ``size x size`` grid with walls and a goal; 4 actions (up, down, left, right).

    States are the free cells (row-major order). A move into a wall or off the grid
    leaves the agent in place. ``distractor="bg_colour"`` draws a per-episode background
    colour from a palette of ``n_colours``: it changes pixels but never dynamics or
    reward, so it creates bisimilar observations with different pixels.
    Aux kinds: ``reward`` (1 at the goal), ``goal_dist`` (BFS distance), ``xy``, ``none``.
    """

    aux_kinds = ("reward", "goal_dist", "xy", "none")

    def __init__(self, size: int = 5, walls: tuple[tuple[int, int], ...] | None = None, goal: tuple[int, int] | None = None, cell_px: int = 4, distractor: str = "bg_colour", n_colours: int = 4):
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size!r}")
        if walls is None:
            walls = tuple((r, size // 2) for r in range(1, size - 1))  # a vertical wall with gaps at both ends
        goal = (size - 1, size - 1) if goal is None else tuple(goal)
        wall_set = {tuple(w) for w in walls}
        if goal in wall_set or not (0 <= goal[0] < size and 0 <= goal[1] < size):
            raise ValueError(f"goal {goal} must be a free cell of the {size}x{size} grid")
        if distractor not in ("none", "bg_colour"):
            raise ValueError(f"distractor must be 'none' or 'bg_colour', got {distractor!r}")
        if not (1 <= n_colours <= len(_BG_PALETTE)):
            raise ValueError(f"n_colours must be in 1..{len(_BG_PALETTE)}, got {n_colours!r}")
        self.size, self.walls, self.goal, self.cell_px = size, tuple(sorted(wall_set)), goal, cell_px
        self.distractor, self.n_colours = distractor, n_colours
        self.cells = np.array([(r, c) for r in range(size) for c in range(size) if (r, c) not in wall_set])
        self.index = {tuple(rc): i for i, rc in enumerate(self.cells)}
        self.n_states, self.n_actions = len(self.cells), 4
        self.obs_shape = (3, size * cell_px, size * cell_px)
        table = np.zeros((self.n_states, 4), dtype=np.int64)
        for i, (r, c) in enumerate(self.cells):
            for a, (dr, dc) in enumerate(_MOVES):
                table[i, a] = self.index.get((r + dr, c + dc), i)
        self._table = table
        self._dist = self._bfs()

    def _bfs(self):
        dist = np.full(self.n_states, -1)
        frontier = [self.index[self.goal]]
        dist[frontier[0]] = 0
        while frontier:
            nxt = []
            for i in frontier:
                for j in self._table[i]:
                    if dist[j] < 0:
                        dist[j] = dist[i] + 1
                        nxt.append(j)
            frontier = nxt
        return dist.astype(float)

    def _step(self, s, a):
        return self._table[s, a]

    def _aux(self, s, kind):
        if kind == "reward":
            return (s == self.index[self.goal]).astype(float)
        if kind == "goal_dist":
            return self._dist[s]
        if kind == "xy":
            return self.cells[s].astype(float)
        raise AssertionError(kind)

    def is_terminal(self, s):
        return s == self.index[self.goal]

    def sample_nuisance(self, rng, n):
        k = self.n_colours if self.distractor == "bg_colour" else 1
        return {"bg": rng.integers(0, k, size=n)}

    def render(self, s, nuisance):
        s = _as_states(s, self.n_states)
        n, p, g = len(s), self.cell_px, self.size
        bg = np.asarray(nuisance["bg"])
        if bg.shape != (n,):
            raise ValueError(f"nuisance['bg'] must have shape ({n},), got {bg.shape}")
        obs = np.broadcast_to(_BG_PALETTE[bg][:, :, None, None], (n, 3, g, g)).copy()
        for r, c in self.walls:
            obs[:, :, r, c] = 0.5
        gr, gc = self.goal
        obs[:, 1, gr, gc] = 0.8
        rows, cols = self.cells[s, 0], self.cells[s, 1]
        obs[np.arange(n), 0, rows, cols] = 1.0
        obs[np.arange(n), 2, rows, cols] = 1.0
        return np.repeat(np.repeat(obs, p, axis=2), p, axis=3).astype(np.float32)

    def nuisance_factors(self, nuisance):
        return {"bg_colour": np.asarray(nuisance["bg"], dtype=np.int64)} if self.distractor == "bg_colour" else {}


# =========================================================================== ring


class RingMDP(TabularMDP):
    """Z_n with actions -1 / +1 (mod n) and reward at state 0.

    The pair (i, n - i) is told apart only after about min(i, n - i) steps, so the
    largest distinguishing depth grows with n: a stress test for the depth bound of
    the notes' §2.4. Rendered as a strip of n cells with a per-episode lamp colour.
    """

    aux_kinds = ("reward", "none")

    def __init__(self, n: int = 8, cell_px: int = 2, rows: int = 4):
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        self.n, self.cell_px, self.rows = n, cell_px, rows
        self.n_states, self.n_actions = n, 2
        self.obs_shape = (3, rows, n * cell_px)

    def _step(self, s, a):
        return (s + np.where(a == 1, 1, -1)) % self.n

    def _aux(self, s, kind):
        return (s == 0).astype(float)

    def sample_nuisance(self, rng, n):
        return {"colour": rng.integers(80, 256, size=(n, 3)) / 255.0}

    def render(self, s, nuisance):
        s = _as_states(s, self.n_states)
        n = len(s)
        obs = np.zeros((n, 3, self.rows, self.n), dtype=np.float64)
        obs[np.arange(n), :, :, s] = nuisance["colour"][:, :, None]
        return np.repeat(obs, self.cell_px, axis=3).astype(np.float32)

    def nuisance_factors(self, nuisance):
        return {"colour": np.argmax(nuisance["colour"], axis=1).astype(np.int64)}


class NuisanceProduct(TabularMDP):
    """The MDP on pairs (state, nuisance value) where the nuisance never changes.

    State id ``s * n_values + c``. Its largest bisimulation is the one of ``base``
    lifted to pairs: the nuisance ``c`` is exactly what healthy collapse may discard.
    """

    def __init__(self, base: TabularMDP, n_values: int):
        if n_values < 1:
            raise ValueError(f"n_values must be >= 1, got {n_values!r}")
        self.base, self.k = base, n_values
        self.n_states, self.n_actions = base.n_states * n_values, base.n_actions
        self.obs_shape = base.obs_shape
        self.aux_kinds = base.aux_kinds

    def _step(self, s, a):
        return self.base.step(s // self.k, a) * self.k + s % self.k

    def _aux(self, s, kind):
        return self.base.aux(s // self.k, kind)


# =========================================================================== gymnasium


class TabularEnv(gym.Env):
    """A gymnasium environment around a :class:`TabularMDP`.

    ``reset`` draws a uniform state and a fresh per-episode nuisance; ``step`` applies
    the deterministic transition, renders the next frame as uint8 (C, H, W) and gives
    the reward of the arrived-at state. ``info`` carries the state id and the
    pre-action auxiliary value (``aux_pre``), as the reference code does.
    The tabular core is ``env.unwrapped.core``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, core: TabularMDP, aux: str = "reward", render_mode: str | None = None):
        if aux not in core.aux_kinds:
            raise ValueError(f"aux {aux!r} is not known to {type(core).__name__}; choose one of {', '.join(core.aux_kinds)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.core, self.aux_kind, self.render_mode = core, aux, render_mode
        self.observation_space = gym.spaces.Box(0, 255, shape=core.obs_shape, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(core.n_actions)
        self._s: np.ndarray | None = None
        self._nuis: Nuisance | None = None

    def _obs(self) -> np.ndarray:
        frame = self.core.render(self._s, self._nuis)[0]
        return np.round(frame * 255).astype(np.uint8)

    def _info(self) -> dict[str, Any]:
        return {"state": int(self._s[0]), "aux_pre": self.core.aux(self._s, self.aux_kind)[0].copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        state = None if options is None else options.get("state")
        if state is None:
            state = int(self.np_random.integers(0, self.core.n_states))
        self._s = np.array([int(state)], dtype=np.int64)
        self._nuis = self.core.sample_nuisance(self.np_random, 1)
        return self._obs(), self._info()

    def step(self, action):
        if self._s is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self.core.n_actions - 1}, got {action!r}")
        info_pre = self._info()["aux_pre"]
        s_next = self.core.step(self._s, np.array([int(action)]))
        self._nuis = self.core.next_nuisance(self._nuis, self._s, s_next, self.np_random)
        self._s = s_next
        reward = float(self.core.reward(self._s)[0])
        terminated = bool(self.core.is_terminal(self._s)[0])
        info = self._info()
        info["aux_pre"] = info_pre
        return self._obs(), reward, terminated, False, info

    def render(self):
        if self.render_mode == "rgb_array" and self._s is not None:
            return np.transpose(self._obs(), (1, 2, 0))
        return None


class CountingEnv(TabularEnv):
    """``gymnasium.make("auxfn/Counting-v0", img=32, nuisance="slots", aux="reward")``; see :class:`CountingMDP`."""

    def __init__(self, max_count: int = 8, target: int = 4, img: int = 32, nuisance: str = "slots", aux: str = "reward", render_mode: str | None = None, random_dim: int = 16):
        super().__init__(CountingMDP(max_count, target, img, nuisance, random_dim=random_dim), aux, render_mode)


class GridWorld(TabularEnv):
    """``gymnasium.make("auxfn/GridWorld-v0", size=5, distractor="bg_colour")``; see :class:`GridWorldMDP`."""

    def __init__(self, size: int = 5, walls=None, goal=None, cell_px: int = 4, distractor: str = "bg_colour", n_colours: int = 4, aux: str = "reward", render_mode: str | None = None):
        super().__init__(GridWorldMDP(size, walls, goal, cell_px, distractor, n_colours), aux, render_mode)


class RingEnv(TabularEnv):
    """``gymnasium.make("auxfn/Ring-v0", n=8)``; see :class:`RingMDP`."""

    def __init__(self, n: int = 8, cell_px: int = 2, aux: str = "reward", render_mode: str | None = None):
        super().__init__(RingMDP(n, cell_px), aux, render_mode)


from auxfn.jepa.registration import register_envs  # noqa: E402

register_envs()


def make_aux_fn(core: TabularMDP, kind: str, random_dim: int = 16, seed: int = 0):
    """The auxiliary target ``p`` as a function ``(states (N,), obs (N, C, H, W)) -> (N, k)``.

    ``kind="random"`` is the paper's random-function auxiliary: a frozen random linear
    map of the pixels (so it sees the nuisance); any other kind is a function of the
    state through ``core.aux``.
    """
    if kind == "random":
        return lambda s, obs: pixel_projection(obs, random_dim, seed)
    if kind not in core.aux_kinds:
        raise ValueError(f"aux kind {kind!r} is not known to {type(core).__name__}; choose one of random, {', '.join(core.aux_kinds)}")
    return lambda s, obs: core.aux(s, kind)
