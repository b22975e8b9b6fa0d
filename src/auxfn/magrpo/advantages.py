"""Group-relative advantages (notes §3.1, §3.3).

For one group (the G credits of one agent at one node) with values R_1..R_G:

- ``mean`` (paper, MAGRPO):   A_g = R_g - (1/G) sum_k R_k
- ``rloo`` (MARLOO):          A_g = R_g - (1/(G-1)) sum_{k != g} R_k = G/(G-1) (R_g - mean R)
- ``max``  (MAReMax):         A_g = R_g - max_k R_k
- ``raw``  (MAREINFORCE):     A_g = R_g

``scale="group"`` then divides by the group's standard deviation plus ``eps``
(A_g / (std(R) + eps), sample std with Bessel's correction and eps = 1e-4, which is
TRL's GRPO formula ``scale_rewards="group"``); ``scale="none"`` is the paper's choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ADVANTAGE_MODES", "SCALE_MODES", "group_advantages"]

ADVANTAGE_MODES = ("mean", "rloo", "max", "raw")
SCALE_MODES = ("none", "group")


def group_advantages(
    returns: Sequence[float] | np.ndarray,
    mode: str = "mean",
    scale: str = "none",
    eps: float = 1e-4,
) -> np.ndarray:
    """Advantages of one group; ``returns`` has shape (G,) or (n_groups, G) (one row per group)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim not in (1, 2) or r.shape[-1] < 1:
        raise ValueError(f"returns must have shape (G,) or (n_groups, G), got {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or inf")
    G = r.shape[-1]
    mean = r.mean(axis=-1, keepdims=True)
    if mode == "mean":
        adv = r - mean
    elif mode == "rloo":
        if G < 2:
            raise ValueError("advantage mode 'rloo' needs a group of at least 2")
        adv = (G * r - r.sum(axis=-1, keepdims=True)) / (G - 1)
    elif mode == "max":
        adv = r - r.max(axis=-1, keepdims=True)
    elif mode == "raw":
        adv = r.copy()
    else:
        raise ValueError(f"mode must be one of {ADVANTAGE_MODES}, got {mode!r}")
    if scale == "group":
        std = r.std(axis=-1, ddof=1, keepdims=True) if G > 1 else np.zeros_like(mean)
        adv = adv / (std + eps)
    elif scale != "none":
        raise ValueError(f"scale must be one of {SCALE_MODES}, got {scale!r}")
    return adv
