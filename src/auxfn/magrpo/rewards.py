"""Joint rewards: the call adapter for user functions and the paper's three rule rewards.

Reward protocol. A joint reward scores J joint actions of one node and returns J floats.
Two call forms are accepted (detected from the signature):

- keyword (TRL-like): ``f(prompts, completions, **columns)`` with ``prompts[i][j]`` and
  ``completions[i][j]`` agent i's prompt and completion in joint action j, and each dataset
  column passed as a list with one entry per joint action;
- positional (reference library): ``f(c_1, c_2, ..., c_N, batch_items=[item] * J)`` with
  ``c_i`` agent i's J completions.

Several functions combine as r_j = sum_f w_f r_{f,j}; each component is kept for logging.

Paper rewards (notes §4.2), level-gated: a failed level stops scoring.
``tldr_reward`` (max 3.0), ``arxiv_reward`` (max 3.0), ``aux_main_code_reward`` (max 4.0).
The transition-word and stop-word lists are this project's own (the notes give the 12
categories and the list size, not the words).
"""

from __future__ import annotations

import ast
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RewardSpec",
    "aux_main_code_reward",
    "aux_main_code_score",
    "arxiv_reward",
    "arxiv_score",
    "combine_rewards",
    "make_reward_specs",
    "tldr_reward",
    "tldr_score",
]


# --------------------------------------------------------------------------- adapter


@dataclass(frozen=True)
class RewardSpec:
    fn: Callable[..., Any]
    name: str
    weight: float
    form: str  # "keyword" or "positional"


def _form(fn: Callable[..., Any]) -> str:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "positional"
    return "keyword" if "completions" in params else "positional"


def make_reward_specs(reward_funcs: Callable | Sequence[Callable], weights: Sequence[float] | None = None) -> list[RewardSpec]:
    """Normalise one function or a list (with optional weights, default 1 each) into specs."""
    funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
    if not funcs or not all(callable(f) for f in funcs):
        raise ValueError("reward_funcs must be a callable or a non-empty list of callables")
    if weights is None:
        weights = [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(weights)} entries for {len(funcs)} reward functions")
    names: list[str] = []
    for f in funcs:
        base = getattr(f, "__name__", type(f).__name__)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return [RewardSpec(f, n, float(w), _form(f)) for f, n, w in zip(funcs, names, weights)]


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_reward(spec: RewardSpec, prompts: list[list[str]], completions: list[list[str]], item: Mapping[str, Any]) -> np.ndarray:
    """Call one reward function on J joint actions; returns a float64 array (J,), checked."""
    n_agents, J = len(completions), len(completions[0])
    if spec.form == "keyword":
        cols = {k: [v] * J for k, v in item.items() if k not in ("prompts", "completions") and _accepts(spec.fn, k)}
        out = spec.fn(prompts=prompts, completions=completions, **cols)
    else:
        kwargs = {"batch_items": [dict(item)] * J} if _accepts(spec.fn, "batch_items") else {}
        out = spec.fn(*completions, **kwargs)
    if hasattr(out, "detach"):
        out = out.detach().cpu().tolist()
    if isinstance(out, (int, float)):
        out = [out]
    try:
        values = np.asarray(list(out), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"reward function {spec.name!r} must return {J} floats, got {type(out).__name__}") from None
    if values.shape != (J,):
        raise ValueError(
            f"reward function {spec.name!r} returned {values.size} values; expected {J} "
            f"(one per joint action, {n_agents} agents)"
        )
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"reward function {spec.name!r} returned a non-finite value ({values[bad]}) for joint action {bad}")
    return values


def combine_rewards(
    specs: Sequence[RewardSpec], prompts: list[list[str]], completions: list[list[str]], item: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted sum of all reward functions, and each component (unweighted) by name."""
    parts = {s.name: call_reward(s, prompts, completions, item) for s in specs}
    total = sum(s.weight * parts[s.name] for s in specs)
    return np.asarray(total, dtype=np.float64), parts


# --------------------------------------------------------------------------- writing rewards

_WORD = re.compile(r"\b\w+\b")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our out over own same she should so some such than
    that the their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your""".split()
)

# 12 categories of transition expressions, matched as lower-case substrings.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "elaboration": ("furthermore", "moreover", "in addition", "additionally", "besides"),
    "examples": ("for example", "for instance", "such as", "to illustrate", "namely"),
    "explanation": ("in other words", "that is to say", "to clarify", "this means"),
    "cause_effect": ("therefore", "consequently", "as a result", "because of", "thus", "hence"),
    "contrast": ("however", "on the other hand", "in contrast", "nevertheless", "whereas", "yet"),
    "sequence": ("first", "second", "then", "next", "finally", "afterwards", "subsequently"),
    "emphasis": ("indeed", "in fact", "above all", "notably", "especially", "particularly"),
    "summary": ("in summary", "in conclusion", "overall", "to sum up", "in short", "ultimately"),
    "comparison": ("similarly", "likewise", "in the same way", "compared to", "just as"),
    "concession": ("although", "even though", "admittedly", "despite", "granted"),
    "condition": ("if ", "unless", "provided that", "as long as", "in case"),
    "time": ("meanwhile", "eventually", "previously", "currently", "at the same time", "later"),
}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def transition_categories(text: str) -> int:
    """Number of the 12 transition categories with at least one expression in ``text``."""
    low = text.lower()
    return sum(any(w in low for w in words) for words in TRANSITIONS.values())


def _transition_score(k: int) -> float:
    return 0.0 if k == 0 else min(0.4 + min(0.05 * (k - 1), 0.6), 1.0)


def _jaccard(a: str, b: str) -> float:
    sa = {w for w in _words(a) if w not in STOPWORDS}
    sb = {w for w in _words(b) if w not in STOPWORDS}
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def _unique_ratio(c1: str, c2: str) -> float:
    u1 = len(set(_words(c1)))
    return len(set(_words(c2))) / u1 if u1 else math.inf


def tldr_score(c1: str, c2: str) -> dict[str, float]:
    """Levels of the TL;DR reward for summary ``c1`` and elaboration ``c2``; key ``total`` <= 3.0."""
    s = {"structure": 0.0, "coordination": 0.0, "vocabulary": 0.0, "style": 0.0}
    done = lambda: {**s, "total": sum(s.values())}  # noqa: E731
    if not all(8 <= len(c.split()) <= 256 for c in (c1, c2)):
        return done()
    s["structure"] = 0.5
    rho = len(c2) / len(c1)
    if 1.6 <= rho <= 3.2:
        s["coordination"] = 1.0
    elif 1.1 <= rho < 1.6:
        s["coordination"] = (rho - 1.1) / 0.5
    elif 3.2 < rho <= 5.0:
        s["coordination"] = 1.0 - (rho - 3.2) / 1.8
    else:
        return done()
    u = _unique_ratio(c1, c2)
    if u >= 2.0:
        s["vocabulary"] = 0.5
    elif 1.3 <= u < 2.0:
        s["vocabulary"] = 0.5 * (u - 1.3) / 0.7
    else:
        return done()
    trans = _transition_score(transition_categories(c2))
    jacc = min(_jaccard(c1, c2), 0.03) / 0.03
    s["style"] = 0.4 * trans + 0.6 * jacc
    return done()


def arxiv_score(c1: str, c2: str) -> dict[str, float]:
    """Levels of the arXiv-introduction reward (paper-era length bands); ``total`` <= 3.0."""
    s = {"structure": 0.0, "coordination": 0.0, "vocabulary": 0.0, "style": 0.0}
    done = lambda: {**s, "total": sum(s.values())}  # noqa: E731
    if not all(128 <= len(c.split()) <= 256 for c in (c1, c2)):
        return done()
    s["structure"] = 0.5
    rho = len(c2) / len(c1)
    if 1.0 <= rho <= 1.3:
        s["coordination"] = 1.0
    elif 0.8 <= rho < 1.0:
        s["coordination"] = (rho - 0.8) / 0.2
    elif 1.3 < rho <= 1.5:
        s["coordination"] = 1.0 - (rho - 1.3) / 0.2
    else:
        return done()
    u = _unique_ratio(c1, c2)
    if 0.7 <= u <= 1.3:
        s["vocabulary"] = 0.5
    elif 0.5 <= u < 0.7:
        s["vocabulary"] = 0.5 * (u - 0.5) / 0.2
    elif 1.3 < u <= 1.7:
        s["vocabulary"] = 0.5 * (1.0 - (u - 1.3) / 0.4)
    else:
        return done()
    trans = _transition_score(transition_categories(c1 + " " + c2))
    jacc = min(_jaccard(c1, c2), 0.23) / 0.23
    s["style"] = 0.4 * trans + 0.6 * jacc
    return done()


def tldr_reward(completions1: Sequence[str], completions2: Sequence[str], **_: Any) -> list[float]:
    """Positional-form joint reward: TL;DR score of each (summary, elaboration) pair."""
    return [tldr_score(a, b)["total"] for a, b in zip(completions1, completions2, strict=True)]


def arxiv_reward(completions1: Sequence[str], completions2: Sequence[str], **_: Any) -> list[float]:
    """Positional-form joint reward: arXiv score of each (background, method) pair."""
    return [arxiv_score(a, b)["total"] for a, b in zip(completions1, completions2, strict=True)]


# --------------------------------------------------------------------------- code reward


def _function(code: str, name: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _has_return(fn: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn))


def _is_aux_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "aux"


def _body(fn: ast.FunctionDef) -> list[ast.stmt]:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]  # docstring
    return body


def is_wrapper(fn: ast.FunctionDef) -> bool:
    """Empty body, ``return aux(...)``, or ``x = aux(...)`` followed by ``return x``."""
    body = _body(fn)
    if not body or all(isinstance(s, ast.Pass) for s in body):
        return True
    if len(body) == 1 and isinstance(body[0], ast.Return) and _is_aux_call(body[0].value):
        return True
    if (
        len(body) == 2
        and isinstance(body[0], ast.Assign)
        and len(body[0].targets) == 1
        and isinstance(body[0].targets[0], ast.Name)
        and _is_aux_call(body[0].value)
        and isinstance(body[1], ast.Return)
        and isinstance(body[1].value, ast.Name)
        and body[1].value.id == body[0].targets[0].id
    ):
        return True
    return False


def aux_main_code_score(
    aux_code: str,
    main_code: str,
    entry_point: str,
    tests: Sequence[str],
    *,
    imports: str = "",
    limits: Any = None,
) -> dict[str, Any]:
    """Levels of the aux/main coding reward (max 4.0); the tests run in the sandbox.

    structure: +0.4 aux defined with a return (optional), +0.6 entry point defined with a
    return (else stop); syntax: +0.5 if imports + aux + main parses (else stop); tests:
    +passed/total; cooperation (if passed > 0, aux defined and main calls it): +0.5, +1.0
    more unless main is a thin wrapper; -0.5 if main discards an ``aux(...)`` result.
    """
    from auxfn.magrpo.sandbox import run_python

    s: dict[str, Any] = {"aux": 0.0, "main": 0.0, "syntax": 0.0, "tests": 0.0, "cooperation": 0.0, "verdict": None}
    done = lambda: {**s, "total": sum(v for k, v in s.items() if k != "verdict")}  # noqa: E731
    aux_fn = _function(aux_code, "aux")
    if aux_fn is not None and _has_return(aux_fn):
        s["aux"] = 0.4
    main_fn = _function(main_code, entry_point)
    if main_fn is None or not _has_return(main_fn):
        return done()
    s["main"] = 0.6
    program = "\n\n".join(p for p in (imports.strip(), aux_code.strip(), main_code.strip()) if p)
    try:
        ast.parse(program)
    except (SyntaxError, ValueError):
        return done()
    s["syntax"] = 0.5
    tests = list(tests)
    result = run_python(program, tests, limits) if tests else None
    s["verdict"] = result.status if result else None
    passed = result.passed if result else 0
    s["tests"] = passed / len(tests) if tests else 0.0
    calls_aux = any(_is_aux_call(n) for n in ast.walk(main_fn))
    if passed > 0 and s["aux"] > 0 and calls_aux:
        s["cooperation"] = 0.5 + (0.0 if is_wrapper(main_fn) else 1.0)
    if any(isinstance(n, ast.Expr) and _is_aux_call(n.value) for n in ast.walk(main_fn)):
        s["cooperation"] -= 0.5
    return done()


def aux_main_code_reward(
    completions1: Sequence[str], completions2: Sequence[str], *, batch_items: Sequence[Mapping[str, Any]], **_: Any
) -> list[float]:
    """Positional-form joint reward; each item needs ``entry_point`` and ``tests`` (and may hold ``imports``)."""
    out = []
    for a, m, item in zip(completions1, completions2, batch_items, strict=True):
        out.append(aux_main_code_score(a, m, item["entry_point"], item["tests"], imports=item.get("imports", ""))["total"])
    return out
