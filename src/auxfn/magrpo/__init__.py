"""MAGRPO: multi-agent GRPO for collaborating language models (Liu et al., 2025, arXiv 2508.04652).

N agents, each with its own parameters, sample G completions per prompt; joint actions
(aligned or cross) are scored by one shared joint reward; each agent takes a
REINFORCE step with group-relative advantages. The pure pieces (joint actions, credit,
advantages, the multi-turn tree, rewards, the sandbox) import no torch; the trainer and
the tiny test models import torch and transformers when first used.
"""

from __future__ import annotations

from typing import Any

from auxfn.magrpo.advantages import group_advantages
from auxfn.magrpo.joint import agent_credit, joint_actions
from auxfn.magrpo.rewards import arxiv_reward, aux_main_code_reward, tldr_reward
from auxfn.magrpo.tree import Node, build_tree, compute_returns

__all__ = [
    "MAGRPOConfig",
    "MAGRPOTrainer",
    "Node",
    "agent_credit",
    "arxiv_reward",
    "aux_main_code_reward",
    "build_tree",
    "compute_returns",
    "group_advantages",
    "joint_actions",
    "tldr_reward",
]

_LAZY = {"MAGRPOConfig": "auxfn.magrpo.config", "MAGRPOTrainer": "auxfn.magrpo.trainer"}


def __getattr__(name: str) -> Any:  # the trainer pulls in torch and transformers: load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'auxfn.magrpo' has no attribute {name!r}")
