"""The inference baselines pass the right texts to each agent and score them with the joint reward."""

import pytest

pytest.importorskip("transformers")

from auxfn.magrpo import trainer as trainer_mod
from auxfn.magrpo.baselines import run_baseline
from auxfn.magrpo.config import MAGRPOConfig
from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
from auxfn.magrpo.trainer import MAGRPOTrainer


@pytest.fixture
def setup(monkeypatch):
    tok = char_tokenizer()
    agents = [tiny_causal_lm(tok, hidden_size=16, seed=i) for i in range(2)]
    seen = []

    def fake_generate(model, tokenizer, prompt, n, cfg, greedy=False):
        who = agents.index(model)
        seen.append((who, prompt))
        return [f"m{who}[{prompt}]"], None, None

    monkeypatch.setattr(trainer_mod, "generate_group", fake_generate)
    scored = []

    def reward(c1, c2):
        scored.append((c1[0], c2[0]))
        return [float(len(c2[0]) - len(c1[0]))]

    tr = MAGRPOTrainer(agents, MAGRPOConfig(num_generations=2, max_completion_length=4), [{"x": 1}], reward,
                       [lambda it: "A", lambda it: "B"], processing_class=tok)
    return tr, seen, scored


def test_naive_and_single(setup):
    tr, seen, scored = setup
    assert run_baseline(tr, "naive", [{"x": 1}], samples=1) == len("m1[B]") - len("m0[A]")
    assert scored[-1] == ("m0[A]", "m1[B]")
    run_baseline(tr, "single", [{"x": 1}], samples=1)
    assert scored[-1] == ("m0[A]", "m0[B]")  # agent 1's model plays both roles


def test_sequential_and_discussion(setup):
    tr, seen, scored = setup
    run_baseline(tr, "sequential", [{"x": 1}], samples=1)
    assert scored[-1] == ("m0[A]", "m1[B m0[A] ]")
    run_baseline(tr, "discussion", [{"x": 1}], samples=2)
    assert scored[-1] == ("m0[A m1[B] ]", "m1[B m0[A] ]") and len(scored) == 3
    with pytest.raises(ValueError, match="baseline must be one of"):
        run_baseline(tr, "vote", [{"x": 1}])
