"""Toy cooperative tasks at CPU scale (notes §6.3): data, formatters and joint rewards.

- ``length_ratio``: the TL;DR reward's coordination level as a toy. Agent 1 writes a short
  text, agent 2 a longer one; the joint reward is 1 - min(1, |len(c2)/len(c1) - k| / k)
  when both are non-empty, else 0 (the bounded, correctly signed form; max 1).
- ``coop_sum``: cooperative arithmetic with partial observations. Agent 1 sees the target
  T, agent 2 only that its number must be a single digit; reward 0.25 per agent whose
  answer is a plain integer, plus 1 - min(1, |a + b - T| / T) once both are (max 1.5).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TASKS", "Task", "coop_sum_reward", "get_task", "length_ratio_reward"]


@dataclass(frozen=True)
class Task:
    name: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    formatters: list[Callable[[dict[str, Any]], str]]
    reward: Callable[..., list[float]]
    max_reward: float


def length_ratio_reward(completions1: Sequence[str], completions2: Sequence[str], batch_items=None, **_: Any) -> list[float]:
    out = []
    for a, b, item in zip(completions1, completions2, batch_items or [{}] * len(completions1)):
        k = float((item or {}).get("ratio", 2.0))
        a, b = a.strip(), b.strip()
        out.append(0.0 if not a or not b else 1.0 - min(1.0, abs(len(b) / len(a) - k) / k))
    return out


_INT = re.compile(r"^\s*(-?\d+)\s*$")


def coop_sum_reward(completions1: Sequence[str], completions2: Sequence[str], batch_items=None, **_: Any) -> list[float]:
    out = []
    for a, b, item in zip(completions1, completions2, batch_items):
        ma, mb = _INT.match(a), _INT.match(b)
        r = 0.25 * (ma is not None) + 0.25 * (mb is not None and len(mb.group(1).lstrip("-")) == 1)
        if ma and mb:
            T = int(item["target"])
            r += 1.0 - min(1.0, abs(int(ma.group(1)) + int(mb.group(1)) - T) / max(T, 1))
        out.append(r)
    return out


def _length_ratio(ratio: float, seed: int) -> Task:
    rng = random.Random(seed)
    topics = ["cats", "rain", "code", "tea", "maps", "bees", "snow", "jazz"]
    items = [{"topic": rng.choice(topics), "ratio": ratio} for _ in range(64)]
    return Task(
        "length-ratio",
        items[:48],
        items[48:],
        [lambda it: f"short note on {it['topic']}:", lambda it: f"long note on {it['topic']}:"],
        length_ratio_reward,
        1.0,
    )


def _coop_sum(seed: int) -> Task:
    rng = random.Random(seed)
    items = [{"target": rng.randint(2, 18)} for _ in range(64)]
    return Task(
        "coop-sum",
        items[:48],
        items[48:],
        [lambda it: f"t={it['target']} a=", lambda it: "one digit b="],
        coop_sum_reward,
        1.5,
    )


TASKS = ("length-ratio", "coop-sum")


def get_task(name: str, *, seed: int = 0, ratio: float = 2.0) -> Task:
    if name == "length-ratio":
        return _length_ratio(ratio, seed)
    if name == "coop-sum":
        return _coop_sum(seed)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
