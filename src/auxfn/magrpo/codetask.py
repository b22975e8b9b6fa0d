"""Task (3) and (4): aux/main coding in a tiny function language, graded through the sandbox.

The language is a small subset of Python that the sandbox runs as it is::

    program  := "def" NAME "(x):" NEWLINE " return" expr
    expr     := term (("+" | "-") term)*
    term     := factor ("*" factor)*
    factor   := INT | "x" | "aux(" expr ")" | "(" expr ")"

A problem is a function ``f`` of one integer given by its formula (the spec, e.g.
``f(x)=3*x+2``) and five unit tests ``assert f(k) == v, f(k)`` for k = 0..4 (the message
carries the value ``f`` returned, which the multi-turn feedback reports). Agent 1 sees
the spec and writes ``aux``; agent 2 sees the spec and writes ``f``, which may call
``aux``. The pair is graded by :func:`auxfn.magrpo.rewards.aux_main_code_score` (the
paper's levels, max 4.0) with the tests run in the subprocess sandbox; a correct pair
that splits the work (``aux`` computes the product, ``f`` adds the rest) earns 4.0, a
correct ``f`` that ignores ``aux`` 2.5.

A randomly initialised character model writes no valid code, so training starts with a
short supervised warm-up on template programs (:func:`warmup`): the template forms are
the language's typical programs; a fraction ``match`` of them use the spec's own
constants and form, the rest random ones, so the warm-up teaches syntax and a prior, and
MAGRPO has to learn which constants and which division of labour the reward pays for.

Multi-turn (task 4): :func:`code_feedback_transition` runs the turn-1 pair in the
sandbox and appends the verdict (``tests 2/5 f(1)=5 want 6`` or ``syntax error``) and
the agent's own previous answer to its next prompt.
"""

from __future__ import annotations

import ast
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "FAMILIES",
    "code_feedback_transition",
    "code_reward",
    "eval_program",
    "feedback_text",
    "is_valid_program",
    "make_problems",
    "template_pairs",
    "valid_code_rate",
    "warmup",
]

TEST_XS = (0, 1, 2, 3, 4)

# family: (spec with A, B; aux body; main body using aux) -- the intended division of labour
FAMILIES: dict[str, tuple[str, str, str]] = {
    "lin": ("{A}*x+{B}", "x*{A}", "aux(x)+{B}"),
    "lin-": ("{A}*x-{B}", "x*{A}", "aux(x)-{B}"),
    "shift": ("(x+{A})*{B}", "x+{A}", "aux(x)*{B}"),
    "sq": ("x*x+{A}", "x*x", "aux(x)+{A}"),
}


def _prompt(item: Mapping[str, Any], role: str) -> str:
    return f"f(x)={item['spec']}\n{role}:\n"


def aux_prompt(item: Mapping[str, Any]) -> str:
    return _prompt(item, "aux")


def main_prompt(item: Mapping[str, Any]) -> str:
    return _prompt(item, "main")


def make_problems(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` problems with constants A in 2..5, B in 1..5; each has spec, entry_point, tests, solution."""
    rng = random.Random(seed)
    out = []
    fams = sorted(FAMILIES)
    for _ in range(n):
        fam = rng.choice(fams)
        A, B = rng.randint(2, 5), rng.randint(1, 5)
        spec, aux, main = (s.format(A=A, B=B) for s in FAMILIES[fam])
        values = [eval_program(f"def f(x):\n return {spec}", "f", k) for k in TEST_XS]
        out.append({
            "family": fam, "spec": spec, "entry_point": "f",
            "tests": [f"assert f({k}) == {v}, f({k})" for k, v in zip(TEST_XS, values)],
            "values": values, "aux_solution": f"def aux(x):\n return {aux}", "main_solution": f"def f(x):\n return {main}",
        })
    return out


# --------------------------------------------------------------------------- the language


def _check_expr(node: ast.AST, allow_aux: bool) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.Name):
        return node.id == "x"
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)) and _check_expr(node.left, allow_aux) and _check_expr(node.right, allow_aux)
    if isinstance(node, ast.Call):
        return (
            allow_aux and isinstance(node.func, ast.Name) and node.func.id == "aux" and len(node.args) == 1
            and not node.keywords and _check_expr(node.args[0], allow_aux)
        )
    return False


def is_valid_program(code: str, name: str) -> bool:
    """True when ``code`` is one function ``name(x)`` of the tiny language (``aux`` may be called unless name is aux)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    if len(tree.body) != 1:
        return False
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef) or fn.name != name or fn.decorator_list:
        return False
    a = fn.args
    if [p.arg for p in a.args] != ["x"] or a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
        return False
    return len(fn.body) == 1 and isinstance(fn.body[0], ast.Return) and fn.body[0].value is not None and _check_expr(fn.body[0].value, name != "aux")


def _eval_expr(node: ast.AST, x: int, aux: Callable[[int], int] | None) -> int:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return x
    if isinstance(node, ast.BinOp):
        a, b = _eval_expr(node.left, x, aux), _eval_expr(node.right, x, aux)
        return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
    if aux is None:
        raise NameError("name 'aux' is not defined")
    return aux(_eval_expr(node.args[0], x, aux))


def eval_program(code: str, name: str, x: int, aux_code: str | None = None) -> int:
    """Evaluate a program of the tiny language without running Python code (the reference interpreter).

    Used to build problems and warm-up feedback from our own templates; model outputs are
    always graded by running them in the sandbox.
    """
    if not is_valid_program(code, name):
        raise ValueError(f"not a program of the tiny language defining {name}(x): {code!r}")
    body = ast.parse(code).body[0].body[0].value
    aux = None
    if aux_code is not None:
        aux_body = ast.parse(aux_code).body[0].body[0].value if is_valid_program(aux_code, "aux") else None
        if aux_body is None:
            raise ValueError(f"aux is not a program of the tiny language: {aux_code!r}")
        aux = lambda v: _eval_expr(aux_body, v, None)  # noqa: E731
    return _eval_expr(body, x, aux)


# --------------------------------------------------------------------------- grading


class _VerdictCache:
    """Sandbox verdicts by (aux, main, tests): programs of this language are deterministic.

    Bounded LRU; thread-safe. After the warm-up most sampled pairs repeat, so this removes
    most process starts.
    """

    def __init__(self, size: int = 20000):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)


_CACHE = _VerdictCache()


def _limits():
    from auxfn.magrpo.sandbox import SandboxLimits

    return SandboxLimits(wall_time=5.0, cpu_time=3, per_test_timeout=1.0, memory_mb=256, max_processes=4, max_file_mb=0.25)


def score_pairs(aux_codes: Sequence[str], main_codes: Sequence[str], items: Sequence[Mapping[str, Any]], workers: int = 4) -> list[dict[str, Any]]:
    """``aux_main_code_score`` of every pair (cached; distinct uncached pairs run in parallel sandboxes)."""
    from auxfn.magrpo.rewards import aux_main_code_score

    keys = [(a.strip(), m.strip(), it["entry_point"], tuple(it["tests"])) for a, m, it in zip(aux_codes, main_codes, items, strict=True)]
    todo = list(dict.fromkeys(k for k in keys if _CACHE.get(k) is None))

    def one(k):
        _CACHE.put(k, aux_main_code_score(k[0], k[1], k[2], list(k[3]), limits=_limits()))

    if len(todo) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            list(pool.map(one, todo))
    else:
        for k in todo:
            one(k)
    return [_CACHE.get(k) for k in keys]


def code_reward(completions1: Sequence[str], completions2: Sequence[str], *, batch_items: Sequence[Mapping[str, Any]], **_: Any) -> list[float]:
    """Positional-form joint reward: the paper's aux/main levels (max 4.0), tests run in the sandbox."""
    return [s["total"] for s in score_pairs(completions1, completions2, batch_items)]


# --------------------------------------------------------------------------- multi-turn feedback

_ASSERT_GOT = re.compile(r"^AssertionError: (-?\d+)$")


def feedback_text(item: Mapping[str, Any], aux_code: str, main_code: str) -> str:
    """The sandbox's verdict on a pair as one short line (what the turn-2 prompts carry).

    ``no f``: agent 2 wrote no ``f`` with a return; ``syntax error``: the program does not
    parse; ``error``: it raised before the tests (or a test raised, e.g. a missing aux);
    otherwise ``tests k/5`` plus the first failing test as ``f(x)=got want v``.
    """
    from auxfn.magrpo.rewards import _function, _has_return

    main_fn = _function(main_code, item["entry_point"])
    if main_fn is None or not _has_return(main_fn):
        return "no f"
    program = "\n\n".join(p for p in (aux_code.strip(), main_code.strip()) if p)
    try:
        ast.parse(program)
    except (SyntaxError, ValueError):
        return "syntax error"
    s = score_pairs([aux_code], [main_code], [item])[0]
    if s["verdict"] not in ("pass", "fail"):
        return "error"
    passed = round(s["tests"] * len(item["tests"]))
    if passed == len(item["tests"]):
        return "tests 5/5 ok"
    # rerun is cached: the first failing test's message is the value f returned
    from auxfn.magrpo.sandbox import run_python

    res = _VERDICT_DETAIL.get((program, tuple(item["tests"])))
    if res is None:
        res = run_python(program, item["tests"], _limits())
        _VERDICT_DETAIL.put((program, tuple(item["tests"])), res)
    k = next((i for i, ok in enumerate(res.tests) if not ok), None)
    m = _ASSERT_GOT.match(res.error or "")
    if k is None or m is None:
        return f"tests {passed}/5 error"
    return f"tests {passed}/5 f({TEST_XS[k]})={m.group(1)} want {item['values'][k]}"


_VERDICT_DETAIL = _VerdictCache()


def turn2_prompt(item: Mapping[str, Any], role: str, previous: str, feedback: str) -> str:
    return f"f(x)={item['spec']}\n{previous.strip()}\n# {feedback}\n{role}:\n"


def code_feedback_transition(*, item: Mapping[str, Any], agent_completions: Sequence[str], **_: Any) -> list[str]:
    """External transition of task (4): each agent's next prompt = spec + its own answer + the sandbox verdict."""
    aux_code, main_code = agent_completions[0], agent_completions[1]
    fb = feedback_text(item, aux_code, main_code)
    return [turn2_prompt(item, "aux", aux_code, fb), turn2_prompt(item, "main", main_code, fb)]


# --------------------------------------------------------------------------- supervised warm-up


def _random_aux(rng: random.Random) -> str:
    c = rng.randint(1, 5)
    return f"def aux(x):\n return {rng.choice(['x*{c}', 'x+{c}', 'x*x', 'x-{c}']).format(c=c)}"


def _random_main(rng: random.Random) -> str:
    c, d = rng.randint(1, 5), rng.randint(1, 5)
    body = rng.choice(["aux(x)+{c}", "aux(x)*{c}", "aux(x)-{c}", "x*{c}+{d}", "aux(x)", "(x+{c})*{d}", "x*x+{c}"])
    return f"def f(x):\n return {body.format(c=c, d=d)}"


def _local_feedback(item: Mapping[str, Any], aux_code: str, main_code: str) -> str:
    """``feedback_text`` computed with the reference interpreter (templates only; same format)."""
    got = [eval_program(main_code, "f", k, aux_code) for k in TEST_XS]
    fails = [i for i, (g, v) in enumerate(zip(got, item["values"])) if g != v]
    passed = len(TEST_XS) - len(fails)
    if not fails:
        return "tests 5/5 ok"
    k = fails[0]
    return f"tests {passed}/5 f({TEST_XS[k]})={got[k]} want {item['values'][k]}"


def template_pairs(items: Sequence[Mapping[str, Any]], n: int, seed: int, *, match: float = 0.5, turns: int = 1) -> list[list[tuple[str, str]]]:
    """Warm-up data: per agent, ``n`` (prompt, completion) pairs of template programs.

    With probability ``match`` a pair is the item's intended solution, else a random
    template program of the same role (random form and constants). With ``turns=2`` half
    of the pairs use a turn-2 prompt whose feedback is that of a random previous pair.
    """
    rng = random.Random(seed)
    data: list[list[tuple[str, str]]] = [[], []]
    for _ in range(n):
        it = rng.choice(items)
        good = rng.random() < match
        aux = it["aux_solution"] if good else _random_aux(rng)
        main = it["main_solution"] if good else _random_main(rng)
        if turns > 1 and rng.random() < 0.5:
            pa, pm = _random_aux(rng), _random_main(rng)
            fb = _local_feedback(it, pa, pm)
            data[0].append((turn2_prompt(it, "aux", pa, fb), aux))
            data[1].append((turn2_prompt(it, "main", pm, fb), main))
        else:
            data[0].append((aux_prompt(it), aux))
            data[1].append((main_prompt(it), main))
    return data


def warmup(models: Sequence[Any], tokenizer: Any, pairs: list[list[tuple[str, str]]], *, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Supervised warm-up: ``steps`` AdamW steps of next-token cross-entropy on the completions (+EOS).

    Prompt tokens are context only (no loss). Returns each agent's mean loss over the last
    10 steps.
    """
    import torch

    if steps < 0:
        raise ValueError(f"warmup steps must be >= 0, got {steps}")
    final = []
    g = torch.Generator().manual_seed(seed)
    for model, data in zip(models, pairs, strict=True):
        if steps == 0:
            final.append(float("nan"))
            continue
        device = next(model.parameters()).device
        cache: dict[int, tuple[list[int], list[int]]] = {}

        def encoded(i: int, cache=cache, data=data) -> tuple[list[int], list[int]]:  # only the pairs drawn are tokenized
            if i not in cache:
                p, c = data[i]
                cache[i] = (tokenizer(p, add_special_tokens=False)["input_ids"], tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
            return cache[i]

        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        losses = []
        for _ in range(steps):
            idx = torch.randint(len(data), (batch_size,), generator=g).tolist()
            enc = {i: encoded(i) for i in idx}
            L = max(len(enc[i][0]) + len(enc[i][1]) for i in idx)
            ids = torch.full((batch_size, L), tokenizer.pad_token_id, dtype=torch.long)
            att = torch.zeros((batch_size, L), dtype=torch.long)
            labels = torch.full((batch_size, L), -100, dtype=torch.long)
            for b, i in enumerate(idx):  # left padding, as at generation time
                p, c = enc[i]
                seq = p + c
                ids[b, L - len(seq):] = torch.tensor(seq)
                att[b, L - len(seq):] = 1
                labels[b, L - len(c):] = torch.tensor(c)
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device))
            logits = out.logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).to(device), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        final.append(sum(losses[-10:]) / len(losses[-10:]))
    return final


def valid_code_rate(model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], role: str, cfg: Any, samples: int = 4) -> float:
    """Fraction of sampled completions that are programs of the tiny language (``aux`` or ``f``)."""
    from auxfn.magrpo.trainer import generate_group

    fmt, name = (aux_prompt, "aux") if role == "aux" else (main_prompt, "f")
    ok = n = 0
    for it in items:
        texts = generate_group(model, tokenizer, fmt(it), samples, cfg)[0]
        ok += sum(is_valid_program(t.strip(), name) for t in texts)
        n += len(texts)
    return ok / n
