"""Reward adapters (both call forms, bad returns) and the paper rewards on hand-written fixtures."""

import numpy as np
import pytest

from auxfn.magrpo.rewards import (
    arxiv_score,
    aux_main_code_reward,
    aux_main_code_score,
    call_reward,
    combine_rewards,
    make_reward_specs,
    tldr_reward,
    tldr_score,
)

PROMPTS = [["p1", "p1"], ["p2", "p2"]]
COMPS = [["ab", "abcd"], ["abcdef", "a"]]


def test_keyword_and_positional_forms():
    def kw(prompts, completions, target, **kwargs):
        return [len(completions[1][j]) - len(completions[0][j]) + target[j] for j in range(len(completions[0]))]

    def pos(c1, c2, batch_items=None):
        return [len(b) / len(a) + batch_items[0]["target"] for a, b in zip(c1, c2)]

    item = {"target": 10}
    specs = make_reward_specs([kw, pos], [1.0, 0.5])
    assert [s.form for s in specs] == ["keyword", "positional"]
    total, parts = combine_rewards(specs, PROMPTS, COMPS, item)
    np.testing.assert_allclose(parts["kw"], [14, 7])
    np.testing.assert_allclose(parts["pos"], [13, 10.25])
    np.testing.assert_allclose(total, [14 + 6.5, 7 + 5.125])
    lam = make_reward_specs(lambda a, b: [1.0] * len(a))[0]
    np.testing.assert_allclose(call_reward(lam, PROMPTS, COMPS, item), [1.0, 1.0])


def test_bad_reward_returns_are_named():
    wrong = make_reward_specs(lambda a, b: [1.0])[0]
    with pytest.raises(ValueError, match="returned 1 values; expected 2"):
        call_reward(wrong, PROMPTS, COMPS, {})
    nan = make_reward_specs(lambda a, b: [0.0, float("nan")])[0]
    with pytest.raises(ValueError, match="non-finite value \\(nan\\) for joint action 1"):
        call_reward(nan, PROMPTS, COMPS, {})
    with pytest.raises(ValueError, match="reward_weights has 2 entries for 1"):
        make_reward_specs([lambda a, b: a], [1.0, 2.0])


SUMMARY = "The author adopted a cat and learned patience from the shy animal."
ELAB = (
    "The author adopted a shy cat from a crowded shelter. At first the animal hid under the bed for "
    "weeks; however, gentle routines slowly built trust. For example, quiet feeding times helped. "
    "Eventually the cat sat on his lap, and he learned patience."
)


def test_tldr_levels_by_hand():
    s = tldr_score(SUMMARY, ELAB)
    rho = len(ELAB) / len(SUMMARY)
    assert 3.2 < rho <= 5.0
    assert s["structure"] == 0.5
    assert s["coordination"] == pytest.approx(1 - (rho - 3.2) / 1.8)
    assert s["vocabulary"] == 0.5  # 33 vs 11 unique words: ratio 3 >= 2
    # categories in ELAB: contrast (however), examples (for example), sequence (first, then), time (eventually)
    assert s["style"] == pytest.approx(0.4 * (0.4 + 0.05 * 3) + 0.6 * 1.0)
    assert s["total"] == pytest.approx(sum(s[k] for k in ("structure", "coordination", "vocabulary", "style")))
    assert s["total"] <= 3.0
    # structure gate: too short stops everything
    assert tldr_score("too short", ELAB)["total"] == 0.0
    # coordination gate: equal lengths (ratio 1) stops after structure
    assert tldr_score(SUMMARY, SUMMARY)["total"] == 0.5
    assert tldr_reward([SUMMARY, "x"], [ELAB, ELAB]) == [pytest.approx(s["total"]), 0.0]


def test_arxiv_levels_by_hand():
    a = " ".join(f"alpha{i} method" for i in range(70))  # 140 words, 71 unique
    b = " ".join(f"alpha{i} approach therefore" for i in range(50))  # 150 words
    s = arxiv_score(a, b)
    rho = len(b) / len(a)
    assert s["structure"] == 0.5
    assert 1.0 <= rho <= 1.3 and s["coordination"] == 1.0
    u = 52 / 71
    assert 0.7 <= u <= 1.3 and s["vocabulary"] == 0.5
    jac = 50 / 73  # shared alpha0..alpha49 over 70 + method + approach + therefore
    assert s["style"] == pytest.approx(0.4 * 0.4 + 0.6 * 1.0) and jac > 0.23
    assert arxiv_score("short", b)["total"] == 0.0


AUX = "def aux(x):\n    return x * 3\n"
TESTS = ["assert f(1) == 5", "assert f(2) == 8", "assert f(0) == 2"]


@pytest.mark.parametrize(
    "aux, main, expected",
    [
        (AUX, "def f(x):\n    y = aux(x)\n    return y + 2\n", 4.0),  # everything
        (AUX, "def f(x):\n    return aux(x)\n", 0.4 + 0.6 + 0.5 + 0.0 + 0.0),  # wrapper fails all tests
        (AUX, "def f(x):\n    return 3 * x + 2\n", 0.4 + 0.6 + 0.5 + 1.0),  # ignores aux: no bonus
        ("", "def f(x):\n    return 3 * x + 2\n", 0.6 + 0.5 + 1.0),
        (AUX, "def f(x):\n    aux(x)\n    return 3 * x + 2\n", 0.4 + 0.6 + 0.5 + 1.0 + 1.5 - 0.5),
        (AUX, "def g(x):\n    return 1\n", 0.4),  # entry point missing: stop
        (AUX, "def f(x):\n    return (\n", 0.4),  # main does not parse
        ("def aux(x):\n    return x * 3\n", "def f(x):\n    return aux(x) + 2 if x else 1\n", 0.4 + 0.6 + 0.5 + 2 / 3 + 1.5),
    ],
)
def test_code_reward_levels(aux, main, expected):
    assert aux_main_code_score(aux, main, "f", TESTS)["total"] == pytest.approx(expected)


def test_code_reward_survives_infinite_loop():
    from auxfn.magrpo.sandbox import SandboxLimits

    loop = aux_main_code_score(AUX, "def f(x):\n    while True: pass\n    return 1\n", "f", TESTS,
                               limits=SandboxLimits(per_test_timeout=0.3, wall_time=3))
    assert loop["verdict"] == "timeout" and loop["total"] == pytest.approx(0.4 + 0.6 + 0.5)


def test_code_reward_wrapper_bonus_and_batch_form():
    tests = ["assert f(1) == 3", "assert f(2) == 6"]
    wrap = aux_main_code_score(AUX, "def f(x):\n    return aux(x)\n", "f", tests)
    assert wrap["cooperation"] == 0.5 and wrap["tests"] == 1.0 and wrap["total"] == pytest.approx(3.0)
    items = [{"entry_point": "f", "tests": TESTS}] * 2
    out = aux_main_code_reward([AUX, AUX], ["def f(x):\n    return 0\n", "def f(x):\n    return aux(x) + 2 - 0\n"], batch_items=items)
    assert out[0] == pytest.approx(0.4 + 0.6 + 0.5)  # no test passes
    assert out[1] == pytest.approx(4.0)  # `return aux(x) + 2 - 0` is more than a bare wrapper
