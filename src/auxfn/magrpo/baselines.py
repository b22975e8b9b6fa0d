"""Inference-time baselines of the paper (notes §4.3), on the same models as the trained pair.

Each returns the mean joint reward over ``items`` x ``samples`` sampled joint actions:

- ``naive``: the agents answer their own prompts independently; the outputs are combined
  by the joint reward as they are (the paper's "naive concatenation");
- ``sequential``: agent 1 answers first; agent 2's prompt is followed by agent 1's answer;
- ``discussion``: one round each, then every agent sees the other's first answer appended
  to its prompt and answers again; the second round is scored;
- ``single``: one model (agent 1's) plays every role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BASELINES", "run_baseline"]

BASELINES = ("naive", "sequential", "discussion", "single")


def run_baseline(trainer: Any, name: str, items: Sequence[Mapping[str, Any]], samples: int = 4) -> float:
    """Mean joint reward of baseline ``name`` using ``trainer``'s agents, formatters and rewards."""
    import torch

    from auxfn.magrpo.rewards import combine_rewards
    from auxfn.magrpo.trainer import generate_group

    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {name!r}")
    cfg, N = trainer.args, trainer.args.num_agents
    toks = trainer.tokenizers

    def gen(i: int, prompt: str, model_of: int | None = None) -> str:
        m = trainer.agent(i if model_of is None else model_of)
        return generate_group(m, toks[i], prompt, 1, cfg)[0][0]

    out = []
    with torch.no_grad():
        for item in items:
            prompts = [f(item) for f in trainer.formatters]
            for _ in range(samples):
                if name == "naive":
                    comps = [gen(i, prompts[i]) for i in range(N)]
                elif name == "single":
                    comps = [gen(i, prompts[i], model_of=0) for i in range(N)]
                elif name == "sequential":
                    comps = []
                    for i in range(N):
                        seen = " ".join(comps)
                        comps.append(gen(i, prompts[i] + (f" {seen} " if seen else "")))
                else:
                    first = [gen(i, prompts[i]) for i in range(N)]
                    comps = [gen(i, prompts[i] + " " + " ".join(first[k] for k in range(N) if k != i) + " ") for i in range(N)]
                total, _ = combine_rewards(trainer.reward_specs, [[p] for p in prompts], [[c] for c in comps], item)
                out.append(float(total[0]))
    return float(np.mean(out))
