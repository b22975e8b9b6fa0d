"""Gymnasium ids of the environments, registered without importing the environments.

gymnasium 1.x has no plugin entry points, so ids exist only after some module registers
them. ``import auxfn.jepa`` (and ``import auxfn.jepa.envs``) call :func:`register_envs`,
which needs only gymnasium: the entry points are strings, resolved by ``gymnasium.make``.
From a fresh interpreter, ``gymnasium.make("auxfn.jepa.envs:auxfn/Counting-v0")`` imports
the module named before the colon and so registers the ids itself.
"""

from __future__ import annotations

ENV_IDS = {
    "auxfn/Counting-v0": ("auxfn.jepa.envs:CountingEnv", 4),  # episode length 4, as the reference code
    "auxfn/GridWorld-v0": ("auxfn.jepa.envs:GridWorld", 50),
    "auxfn/Ring-v0": ("auxfn.jepa.envs:RingEnv", 50),
}


def register_envs() -> None:
    """Register the ids in gymnasium's registry (idempotent)."""
    import gymnasium as gym

    for env_id, (entry, steps) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=steps)
