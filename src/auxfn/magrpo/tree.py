"""The multi-turn tree (notes §3.5).

A node is one turn of one episode: the agents' prompts, G completions per agent, the
joint actions formed from them and one joint reward r_j per joint action. Unless the
node is at the last turn or terminated, every joint action j spawns a child node whose
prompts come from the external transition applied to joint action j.

Returns are computed bottom-up:

    R_j = r_j                                   (leaf, or terminated node)
    R_j = r_j + gamma * mean_k R_k(child_j)     (internal node)

Termination (off by default, ``threshold=None``): a node whose mean reward exceeds the
threshold gets no children. The reference library's default threshold (-0.2) assumes
rewards shifted to <= 0 and silently turns multi-turn into single-turn for ordinary
non-negative rewards, which is why it is off here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from auxfn.magrpo.joint import joint_actions

__all__ = ["Node", "build_tree", "compute_returns", "iter_postorder", "should_terminate"]


@dataclass
class Node:
    """One turn at one point of the tree; ``completions[i][k]`` is agent i's k-th sample."""

    turn: int
    prompts: list[str]  # one per agent
    completions: list[list[str]]  # [agent][G]
    combos: list[tuple[int, ...]]  # J joint actions (index of each agent's completion)
    rewards: np.ndarray  # (J,)
    children: list[Node] = field(default_factory=list)  # J children, or none
    returns: np.ndarray | None = None  # (J,), set by compute_returns
    terminated: bool = False  # expansion stopped by the termination threshold
    extra: dict = field(default_factory=dict)  # per-node data the trainer keeps (token ids, components)

    @property
    def num_agents(self) -> int:
        return len(self.prompts)

    def joint(self, j: int) -> list[str]:
        """The completions of joint action j, one per agent."""
        return [self.completions[i][k] for i, k in enumerate(self.combos[j])]


def should_terminate(rewards: np.ndarray, threshold: float | None) -> bool:
    """True when a threshold is set and the node's mean reward exceeds it."""
    return threshold is not None and float(np.mean(rewards)) > threshold


def compute_returns(node: Node, gamma: float) -> np.ndarray:
    """Fill ``returns`` of ``node`` and all its descendants; returns the root's (J,) returns."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    for n in iter_postorder(node):
        r = np.asarray(n.rewards, dtype=np.float64)
        if n.children:
            if len(n.children) != len(r):
                raise ValueError(f"node at turn {n.turn} has {len(n.children)} children for {len(r)} joint actions")
            r = r + gamma * np.array([float(np.mean(c.returns)) for c in n.children])
        n.returns = r
    return node.returns


def iter_postorder(node: Node) -> Iterator[Node]:
    """Children before parents (the order in which the reference library updates)."""
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        n, seen = stack.pop()
        if seen:
            yield n
        else:
            stack.append((n, True))
            stack.extend((c, False) for c in reversed(n.children))


Sampler = Callable[[list[str], int], list[list[str]]]
RewardFn = Callable[[list[str], list[list[str]], int], np.ndarray]
Transition = Callable[[list[str], list[list[str]], list[list[str]]], list[str]]


def build_tree(
    prompts: list[str],
    sample: Sampler,
    reward: RewardFn,
    *,
    num_turns: int,
    G: int,
    joint_mode: str = "aligned",
    transition: Transition | None = None,
    termination_threshold: float | None = None,
) -> Node:
    """Expand the tree of one episode.

    - ``sample(prompts, turn) -> [agent][G]`` completions (one batched call per agent inside);
    - ``reward(prompts, joint_completions, turn) -> (J,)`` with ``joint_completions[i][j]``
      agent i's completion in joint action j;
    - ``transition(joint, prompt_history, response_history) -> next prompts`` (one per
      agent); the histories are per agent and hold only that agent's own past prompts and
      responses, ending with the current turn's.
    """
    n_agents = len(prompts)
    if num_turns > 1 and transition is None:
        raise ValueError("num_turns > 1 needs an external transition")

    def node_at(turn: int, cur: list[str], p_hist: list[list[str]], r_hist: list[list[str]]) -> Node:
        comps = sample(cur, turn)
        extra = {}
        if isinstance(comps, tuple):  # (completions, per-node data the caller wants kept)
            comps, extra = comps
        if len(comps) != n_agents or any(len(c) != G for c in comps):
            raise ValueError(f"sampler must return {n_agents} lists of {G} completions")
        combos = joint_actions(G, n_agents, joint_mode)
        joint = [[comps[i][c[i]] for c in combos] for i in range(n_agents)]
        r = np.asarray(reward(cur, joint, turn), dtype=np.float64)
        if r.shape != (len(combos),):
            raise ValueError(f"reward must return {len(combos)} values (one per joint action), got shape {r.shape}")
        node = Node(turn=turn, prompts=list(cur), completions=comps, combos=combos, rewards=r, extra=dict(extra))
        if turn + 1 >= num_turns:
            return node
        if should_terminate(r, termination_threshold):
            node.terminated = True
            return node
        for j in range(len(combos)):
            acts = node.joint(j)
            ph = [p_hist[i] + [cur[i]] for i in range(n_agents)]
            rh = [r_hist[i] + [acts[i]] for i in range(n_agents)]
            nxt = transition(acts, ph, rh)
            if not isinstance(nxt, (list, tuple)) or len(nxt) != n_agents or not all(isinstance(p, str) for p in nxt):
                got = len(nxt) if isinstance(nxt, (list, tuple)) else type(nxt).__name__
                raise ValueError(f"external transition must return {n_agents} prompts (one str per agent), got {got}")
            node.children.append(node_at(turn + 1, list(nxt), ph, rh))
        return node

    return node_at(0, list(prompts), [[] for _ in range(n_agents)], [[] for _ in range(n_agents)])
