"""``MAGRPOConfig``: the trainer's hyper-parameters (TRL names where the concept exists).

Defaults reproduce the paper as its authors' library implements it (notes §3): beta = 0
(no KL), one gradient step per batch (no ratio, so no clipping), mean baseline without
std scaling, sequence-sum log-probs, aligned joint actions, G = 4, one prompt per step,
AdamW without gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from auxfn.core.config import check_choice, check_positive, check_range
from auxfn.core.errors import ConfigError

__all__ = ["LOSS_AGGREGATIONS", "MAGRPOConfig"]

LOSS_AGGREGATIONS = ("sequence_sum", "sequence_mean", "token_mean")


@dataclass(frozen=True)
class MAGRPOConfig:
    """Multi-agent GRPO settings."""

    num_agents: int = 2
    """N, the number of agents (each with its own parameters and optimizer)."""
    num_generations: int = 4
    """G, completions sampled per agent per node."""
    max_completion_length: int = 256
    """Most new tokens per completion."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    learning_rate: float = 5e-6
    """AdamW learning rate of every agent."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    beta: float = 0.0
    """KL coefficient to a frozen reference (paper: 0, no reference is kept)."""
    num_iterations: int = 1
    """Gradient steps per batch; > 1 uses the PPO-style clipped ratio."""
    epsilon: float = 0.2
    """Ratio clipping range (only used when num_iterations > 1)."""
    max_grad_norm: float = 0.0
    """Gradient clipping per agent (0 = off, as in the paper)."""
    num_turns: int = 1
    """T, turns per episode (> 1 needs an external transition)."""
    discount: float = 0.9
    """gamma in R = r + gamma * mean(child returns)."""
    joint_mode: str = "aligned"
    """aligned (G joint actions) or cross (G^N)."""
    cross_credit: str = "mean"
    """Per-completion credit in cross mode: mean or sum (sum = reference library)."""
    advantage_mode: str = "mean"
    """mean (MAGRPO), rloo, max or raw."""
    scale_rewards: str = "none"
    """none (paper) or group (divide by the group's std, TRL's GRPO)."""
    loss_aggregation: str = "sequence_sum"
    """sequence_sum (paper), sequence_mean (GRPO) or token_mean."""
    termination_threshold: float | None = None
    """Stop expanding a node whose mean reward exceeds this (None = never)."""
    share_base_model: bool = False
    """With a peft_config: one base model, one LoRA adapter per agent (else one model each)."""
    prompts_per_step: int = 1
    """Dataset items per optimizer step (paper: 1)."""
    disable_dropout: bool = False
    """Set every dropout probability of the agents to 0 once at the start (TRL's option of the same name).

    The trainer samples and updates in train mode; with dropout off, the completions come
    from the same function that the update differentiates, and the fast decoding path
    (:mod:`auxfn.magrpo.fastdecode`, which refuses active dropout) applies."""
    generation_backend: str = "auto"
    """lean (cached sampling loop), generate (Hugging Face generate) or auto (lean where supported)."""
    max_steps: int = 100
    """Optimizer steps of train()."""
    logging_steps: int = 10
    """Steps between progress lines of train()."""
    seed: int = 0
    """Seed of sampling and data order."""

    def __post_init__(self) -> None:
        check_range("num_agents", self.num_agents, 1)
        check_range("num_generations", self.num_generations, 1)
        check_range("max_completion_length", self.max_completion_length, 1)
        check_positive("temperature", self.temperature)
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("top_k", self.top_k, 0)
        check_positive("learning_rate", self.learning_rate)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("beta", self.beta, 0)
        check_range("num_iterations", self.num_iterations, 1)
        check_range("epsilon", self.epsilon, 0, 1, low_open=True, high_open=True)
        check_range("max_grad_norm", self.max_grad_norm, 0)
        check_range("num_turns", self.num_turns, 1)
        check_range("discount", self.discount, 0, 1)
        check_choice("joint_mode", self.joint_mode, ("aligned", "cross"))
        check_choice("cross_credit", self.cross_credit, ("mean", "sum"))
        check_choice("advantage_mode", self.advantage_mode, ("mean", "rloo", "max", "raw"))
        check_choice("scale_rewards", self.scale_rewards, ("none", "group"))
        check_choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        if self.termination_threshold is not None:
            check_range("termination_threshold", self.termination_threshold)
        if not isinstance(self.disable_dropout, bool):
            raise ConfigError(f"config field 'disable_dropout' must be a bool, got {self.disable_dropout!r}")
        check_choice("generation_backend", self.generation_backend, ("auto", "lean", "generate"))
        check_range("prompts_per_step", self.prompts_per_step, 1)
        check_range("max_steps", self.max_steps, 1)
        check_range("logging_steps", self.logging_steps, 1)
        check_range("seed", self.seed, 0)
        if self.advantage_mode == "rloo" and self.num_generations < 2:
            raise ConfigError("config field 'advantage_mode' = 'rloo' needs num_generations >= 2")
