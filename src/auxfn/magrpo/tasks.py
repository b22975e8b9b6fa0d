"""Toy cooperative tasks at CPU scale (notes §6.3): data, formatters and joint rewards.

- ``length_ratio``: the TL;DR reward's coordination level as a toy. Agent 1 writes a short
  text, agent 2 a longer one; the joint reward is 1 - min(1, |len(c2)/len(c1) - k| / k)
  when both are non-empty, else 0 (the bounded, correctly signed form; max 1).
- ``coop_sum``: cooperative arithmetic with partial observations. Agent 1 sees the target
  T, agent 2 only that its number must be a single digit; reward 0.25 per agent whose
  answer is a plain integer, plus 1 - min(1, |a + b - T| / T) once both are (max 1.5).
- ``aux-code``: agent 1 writes ``aux``, agent 2 writes ``f`` (which may call ``aux``) in a
  tiny function language, graded by unit tests in the sandbox with the paper's code
  reward levels (max 4.0); see :mod:`auxfn.magrpo.codetask`. Needs a supervised warm-up.
- ``aux-code-mt``: the same with two turns; turn-2 prompts carry the sandbox's verdict.
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
    transition: Callable[..., list[str]] | None = None
    """External transition of multi-turn tasks (None: single-turn only)."""
    warmup_data: Callable[..., list[list[tuple[str, str]]]] | None = None
    """``f(n, seed, match) -> per-agent (prompt, completion) pairs`` for the supervised warm-up."""


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
    fmts = [lambda it: f"t={it['target']} a=", lambda it: "one digit b="]

    def warm(n: int, s: int, match: float) -> list[list[tuple[str, str]]]:
        # format templates: a plain integer for agent 1, one digit for agent 2; with
        # probability ``match`` agent 1's number is T - 5 (a convention the pair could use)
        r = random.Random(s)
        data: list[list[tuple[str, str]]] = [[], []]
        for _ in range(n):
            it = r.choice(items[:48])
            a = it["target"] - 5 if r.random() < match else r.randint(0, 18)
            data[0].append((fmts[0](it), str(a)))
            data[1].append((fmts[1](it), str(r.randint(0, 9))))
        return data

    return Task("coop-sum", items[:48], items[48:], fmts, coop_sum_reward, 1.5, warmup_data=warm)


def _aux_code(seed: int, turns: int) -> Task:
    from auxfn.magrpo import codetask

    items = codetask.make_problems(64, seed)
    train = items[:48]
    return Task(
        "aux-code" if turns == 1 else "aux-code-mt",
        train,
        items[48:],
        [codetask.aux_prompt, codetask.main_prompt],
        codetask.code_reward,
        4.0,
        transition=codetask.code_feedback_transition if turns > 1 else None,
        warmup_data=lambda n, s, match: codetask.template_pairs(train, n, s, match=match, turns=turns),
    )


TASKS = ("length-ratio", "coop-sum", "aux-code", "aux-code-mt")


def get_task(name: str, *, seed: int = 0, ratio: float = 2.0) -> Task:
    if name == "length-ratio":
        return _length_ratio(ratio, seed)
    if name == "coop-sum":
        return _coop_sum(seed)
    if name == "aux-code":
        return _aux_code(seed, 1)
    if name == "aux-code-mt":
        return _aux_code(seed, 2)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
