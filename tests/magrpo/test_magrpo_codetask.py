"""Task (3)/(4): the tiny function language, the sandbox grader, the warm-up, the feedback transition, the CLI."""

import pytest

from auxfn.magrpo import codetask
from auxfn.magrpo.codetask import eval_program, is_valid_program, make_problems, score_pairs

ITEM = next(p for p in make_problems(64, 0) if p["family"] == "lin")  # f(x)=A*x+B


def _AB(item):
    A, B = item["spec"].replace("*x", "").split("+")
    return int(A), int(B)


def test_language_validity():
    assert is_valid_program("def aux(x):\n return x*3", "aux")
    assert is_valid_program("def f(x):\n return aux(x+1)*2-(x+4)", "f")
    assert not is_valid_program("def aux(x):\n return aux(x)", "aux")  # aux may not call itself
    assert not is_valid_program("def f(x):\n return x/2", "f")  # no division
    assert not is_valid_program("def f(x):\n return x*3", "aux")  # wrong name
    assert not is_valid_program("def f(x):\n return __import__('os')", "f")
    assert not is_valid_program("def f(x):\n  return x\nprint(1)", "f")  # one definition only
    assert not is_valid_program("def f(x)\n return x", "f")  # syntax error
    with pytest.raises(ValueError, match="tiny language"):
        eval_program("def f(x):\n return x/2", "f", 1)


def test_problems_are_consistent_with_their_solutions_in_the_sandbox():
    probs = make_problems(8, 1)
    assert {p["family"] for p in make_problems(64, 0)} == set(codetask.FAMILIES)
    for p in probs:
        assert p["values"] == [eval_program(p["main_solution"], "f", k, p["aux_solution"]) for k in codetask.TEST_XS]
    scores = score_pairs([p["aux_solution"] for p in probs], [p["main_solution"] for p in probs], probs)
    assert all(s["total"] == pytest.approx(4.0) and s["verdict"] == "pass" for s in scores), scores


def test_grader_levels_on_hand_written_pairs():
    A, B = _AB(ITEM)
    aux = f"def aux(x):\n return x*{A}"
    cases = {
        "split": (aux, f"def f(x):\n return aux(x)+{B}", 4.0),  # 0.4+0.6+0.5+1+0.5+1
        "ignores aux": (aux, f"def f(x):\n return x*{A}+{B}", 2.5),  # no cooperation bonus
        "wrapper": (f"def aux(x):\n return x*{A}+{B}", "def f(x):\n return aux(x)", 3.0),  # +0.5 only
        "no aux": ("", f"def f(x):\n return x*{A}+{B}", 2.1),
        "main syntax error": (aux, "def f(x)\n return aux(x)", 0.4),
        "no main": (aux, "", 0.4),
        # wrong constant: f(0)=B passes, the other four fail -> tests 1/5, cooperation 1.5
        "wrong A": (f"def aux(x):\n return x*{A + 1}", f"def f(x):\n return aux(x)+{B}", 0.4 + 0.6 + 0.5 + 0.2 + 1.5),
        "discarded aux": (aux, f"def f(x):\n aux(x)\n return x*{A}+{B}", 2.5 + 1.5 - 0.5),
    }
    got = score_pairs([c[0] for c in cases.values()], [c[1] for c in cases.values()], [ITEM] * len(cases))
    for (name, (_, _, want)), s in zip(cases.items(), got):
        assert s["total"] == pytest.approx(want), (name, s)


def test_grader_contains_hostile_programs(tmp_path):
    marker = tmp_path / "written_by_program"
    hostile = {
        "infinite loop": ("def aux(x):\n while True:\n  pass\n return x", "def f(x):\n return aux(x)+1", "timeout"),
        "fork bomb": ("import os\ndef aux(x):\n while True:\n  os.fork()\n return x", "def f(x):\n return aux(x)", None),
        "memory bomb": ("def aux(x):\n y = bytearray(2 ** 34)\n return x", "def f(x):\n return aux(x)", "limit"),
        "write outside": (f"def aux(x):\n open({str(marker)!r}, 'w').write('x')\n return x", "def f(x):\n return aux(x)", None),
    }
    scores = score_pairs([h[0] for h in hostile.values()], [h[1] for h in hostile.values()], [ITEM] * len(hostile))
    for (name, (_, _, status)), s in zip(hostile.items(), scores):
        assert s["tests"] == 0.0, name  # nothing passes; the grader returns a score, never raises
        assert s["total"] <= 1.5 + 1e-9, (name, s)
        if status is not None:
            assert s["verdict"] == status, (name, s)
    assert not marker.exists()


def test_feedback_matches_the_reference_interpreter_and_transition_shape():
    A, B = _AB(ITEM)
    pairs = [(f"def aux(x):\n return x*{A}", f"def f(x):\n return aux(x)+{B + 1}"),
             ("def aux(x):\n return x+1", "def f(x):\n return aux(x)*2"),
             (f"def aux(x):\n return x*{A}", f"def f(x):\n return aux(x)+{B}")]
    for aux, main in pairs:
        assert codetask.feedback_text(ITEM, aux, main) == codetask._local_feedback(ITEM, aux, main)
    assert codetask.feedback_text(ITEM, pairs[0][0], pairs[0][1]) == f"tests 0/5 f(0)={B + 1} want {B}"
    assert codetask.feedback_text(ITEM, "def aux(x):\n return x", "def f(x)\n return 1") == "no f"
    assert codetask.feedback_text(ITEM, "def aux(x) return", "def f(x):\n return aux(x)") == "syntax error"
    nxt = codetask.code_feedback_transition(item=ITEM, agent_completions=list(pairs[0]))
    assert len(nxt) == 2 and all(isinstance(p, str) for p in nxt)
    fb = f"# tests 0/5 f(0)={B + 1} want {B}"
    assert nxt[0] == f"f(x)={ITEM['spec']}\n{pairs[0][0]}\n{fb}\naux:\n"
    assert nxt[1] == f"f(x)={ITEM['spec']}\n{pairs[0][1]}\n{fb}\nmain:\n"


def test_multi_turn_tree_carries_feedback_to_turn_two():
    pytest.importorskip("transformers")
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.tasks import get_task
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
    from auxfn.magrpo.trainer import MAGRPOTrainer

    tok = char_tokenizer()
    task = get_task("aux-code-mt")
    cfg = MAGRPOConfig(num_generations=2, max_completion_length=12, num_turns=2, discount=0.5, temperature=1.0, top_p=1.0, learning_rate=1e-3)
    tr = MAGRPOTrainer([tiny_causal_lm(tok, hidden_size=16, seed=i) for i in range(2)], cfg, task.train, task.reward,
                       task.formatters, processing_class=tok, external_transition=task.transition)
    item = task.train[0]
    root = tr.rollout(item)
    assert len(root.children) == 2 and all(len(c.children) == 0 for c in root.children)
    for j, child in enumerate(root.children):
        assert child.prompts == codetask.code_feedback_transition(item=item, agent_completions=root.joint(j))
        assert root.returns[j] == pytest.approx(root.rewards[j] + 0.5 * child.rewards.mean())


def test_warmup_raises_the_valid_code_rate():
    pytest.importorskip("transformers")
    import torch

    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.tasks import get_task
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    task = get_task("aux-code")
    model = tiny_causal_lm(tok, hidden_size=32, seed=0)
    cfg = MAGRPOConfig(max_completion_length=32, temperature=1.0, top_p=1.0)
    items = task.eval[:6]
    before = codetask.valid_code_rate(model, tok, items, "main", cfg, samples=4)
    pairs = task.warmup_data(2048, 0, 0.5)
    codetask.warmup([model], tok, pairs[1:], steps=80, batch_size=16, lr=1e-2, seed=0)
    after = codetask.valid_code_rate(model, tok, items, "main", cfg, samples=4)
    assert before <= 0.05 and after >= 0.6, (before, after)  # measured 0.96 at this seed (0.83 at seed 1)


def test_cli_aux_code_end_to_end(tmp_path, capsys):
    pytest.importorskip("transformers")
    import json

    from auxfn import cli

    out = tmp_path / "run"
    argv = ["magrpo", "train", "--task", "aux-code", "--preset", "quick", "--warmup-steps", "4", "--trainer.max-steps", "2",
            "--trainer.num-generations", "2", "--trainer.max-completion-length", "8", "--eval-items", "2", "--eval-samples", "1",
            "--model.hidden-size", "16", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    summary = summary.get("summary", summary)
    assert summary["task"] == "aux-code" and summary["steps"] == 2 and summary["max_reward"] == 4.0
    assert {"valid_code_rate/agent_0/init", "valid_code_rate/agent_1/warmup", "warmup_loss/agent_0", "eval_reward_init"} <= set(summary)
    config = json.loads((out / "config.json").read_text())
    assert json.dumps(config).count('"warmup_steps": 4') == 1  # the aux-code-quick preset, with the override
    assert cli.main(["magrpo", "eval", str(out)]) == 0
    assert "eval_reward" in capsys.readouterr().out


def test_lean_sampler_greedy_equals_generate_and_is_reproducible():
    pytest.importorskip("transformers")
    import torch

    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.sampling import lean_generate, lean_supported
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
    from auxfn.magrpo.trainer import generate_group

    tok = char_tokenizer()
    for arch in ("llama", "gpt2"):
        model = tiny_causal_lm(tok, arch=arch, hidden_size=32, seed=5).eval()
        assert lean_supported(model)
        for prompt in ("f(x)=3*x+2\nmain:\n", "ab"):
            lean = generate_group(model, tok, prompt, 1, MAGRPOConfig(max_completion_length=20, generation_backend="lean"), greedy=True)
            ref = generate_group(model, tok, prompt, 1, MAGRPOConfig(max_completion_length=20, generation_backend="generate"), greedy=True)
            assert torch.equal(lean[2][0], ref[2][0]) and lean[0] == ref[0], (arch, prompt)
        # left-padded batch of different prompts: every row equals its own unpadded greedy run
        enc = tok(["f(x)=3*x+2\nmain:\n", "ab"], return_tensors="pt", padding=True)
        rows = lean_generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=20, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, greedy=True)
        for r, prompt in enumerate(("f(x)=3*x+2\nmain:\n", "ab")):
            single = tok([prompt], return_tensors="pt")
            one = model.generate(**single, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            want = one[0, single["input_ids"].shape[1]:]
            assert torch.equal(rows[r, : len(want)], want), (arch, r)
        cfg = MAGRPOConfig(max_completion_length=16, temperature=1.3, top_p=0.9, top_k=20, generation_backend="lean")
        a = generate_group(model, tok, "ab", 4, cfg, generator=torch.Generator().manual_seed(7))
        b = generate_group(model, tok, "ab", 4, cfg, generator=torch.Generator().manual_seed(7))
        c = generate_group(model, tok, "ab", 4, cfg, generator=torch.Generator().manual_seed(8))
        assert a[0] == b[0] and a[0] != c[0]


def test_top_p_top_k_filter_keeps_the_nucleus():
    import torch

    from auxfn.magrpo.sampling import _filter

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_filter(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    assert torch.isfinite(_filter(logits, 0, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(_filter(logits, 3, 1.0)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(_filter(logits, 0, 1e-6)).sum() == 1  # the top token always survives
