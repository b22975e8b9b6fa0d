"""Masks, the loss, and MAGRPOTrainer on tiny randomly initialised models (CPU, no network)."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from auxfn.core.errors import ConfigError
from auxfn.magrpo.config import MAGRPOConfig
from auxfn.magrpo.losses import completion_mask, policy_loss, token_logprobs
from auxfn.magrpo.tasks import get_task
from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
from auxfn.magrpo.trainer import MAGRPOTrainer


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _trainer(tok, n=2, task="length-ratio", **kw):
    t = get_task(task)
    cfg = MAGRPOConfig(**{"num_agents": n, "num_generations": 4, "max_completion_length": 8, "learning_rate": 1e-3, "max_steps": 2, **kw})
    agents = [tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(n)]
    return MAGRPOTrainer(agents, cfg, t.train, t.reward, t.formatters[:n] if n <= 2 else t.formatters[0], processing_class=tok)


def test_completion_mask_cuts_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_policy_loss_gradient_closed_form_float64():
    torch.manual_seed(0)
    logps = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    out = policy_loss(logps, mask, adv)
    (g,) = torch.autograd.grad(out["total"], logps)
    expected = -(adv[:, None] * mask) / 3  # d/dlogp of -(1/G) sum_k A_k sum_t m logp
    torch.testing.assert_close(g, expected)
    assert out["total"].item() == pytest.approx(-(adv[:, None] * mask * logps).sum().item() / 3)
    # token_mean divides by the number of real tokens
    (g2,) = torch.autograd.grad(policy_loss(logps, mask, adv, aggregation="token_mean")["total"], logps)
    torch.testing.assert_close(g2, -(adv[:, None] * mask) / mask.sum())


def test_clipped_ratio_has_zero_gradient_outside_the_trust_region():
    logps = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    old = torch.log(torch.tensor([[1 / 1.5, 1 / 1.1]], dtype=torch.float64))  # ratios 1.5 and 1.1
    out = policy_loss(logps, torch.ones(1, 2), torch.tensor([1.0], dtype=torch.float64), old_logps=old, epsilon=0.2)
    assert out["total"].item() == pytest.approx(-(1.2 + 1.1))  # first token clipped at 1 + eps
    (g,) = torch.autograd.grad(out["total"], logps)
    torch.testing.assert_close(g, torch.tensor([[0.0, -1.1]], dtype=torch.float64))
    assert out["clip_frac"].item() == pytest.approx(0.5)


def test_tokens_after_eos_get_no_gradient(tok):
    model = tiny_causal_lm(tok, hidden_size=32, seed=3)
    p = torch.tensor([[0, 5, 6, 7]])
    pm = torch.tensor([[0, 1, 1, 1]])
    grads, losses = [], []
    for tail in ([9, 9, 9], [30, 31, 32]):
        c = torch.tensor([[10, 11, tok.eos_token_id, *tail]])
        cm = completion_mask(c, tok.eos_token_id)
        model.zero_grad()
        loss = policy_loss(token_logprobs(model, p, pm, c, cm), cm, torch.tensor([1.0]))["total"]
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([q.grad.flatten() for q in model.parameters()]).clone())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    torch.testing.assert_close(grads[0], grads[1])
    # without the mask the tail would matter
    c = torch.tensor([[10, 11, tok.eos_token_id, 30, 31, 32]])
    full = policy_loss(token_logprobs(model, p, pm, c, torch.ones_like(c)), torch.ones_like(c), torch.tensor([1.0]))["total"]
    assert abs(full.item() - losses[0]) > 1e-3


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_sign_moves_the_completion_log_prob(tok, sign):
    tr = _trainer(tok, n=1)
    p = [torch.tensor([5, 6, 7])]
    c = [torch.tensor([10, 11, 12, tok.eos_token_id])]
    pad = lambda: [t.unsqueeze(0) for t in (p[0], torch.ones(3, dtype=torch.long), c[0], torch.ones(4, dtype=torch.long))]  # noqa: E731
    before = token_logprobs(tr.agents[0], *pad()).sum().item()
    tr._update_agent(0, {"p": p, "c": c, "a": [sign]})
    after = token_logprobs(tr.agents[0], *pad()).sum().item()
    assert np.sign(after - before) == sign


def test_agents_are_independent(tok):
    tr = _trainer(tok)
    ptrs = [{q.data_ptr() for q in a.parameters()} for a in tr.agents]
    assert not ptrs[0] & ptrs[1]
    opt_params = [{id(q) for g in o.param_groups for q in g["params"]} for o in tr.optimizers]
    assert opt_params[0] == {id(q) for q in tr.agents[0].parameters()} and not opt_params[0] & opt_params[1]
    snap = [q.detach().clone() for q in tr.agents[1].parameters()]
    tr._update_agent(0, {"p": [torch.tensor([5, 6])], "c": [torch.tensor([7, 2])], "a": [1.0]})
    assert all(torch.equal(a, b) for a, b in zip(snap, tr.agents[1].parameters()))
    m = tiny_causal_lm(tok, hidden_size=32)
    t = get_task("length-ratio")
    with pytest.raises(ValueError, match="distinct"):
        MAGRPOTrainer([m, m], MAGRPOConfig(), t.train, t.reward, t.formatters, processing_class=tok)


def test_step_metrics_and_cross_mode(tok):
    tr = _trainer(tok, joint_mode="cross", cross_credit="sum")
    m = tr.step()
    for key in ("reward", "reward_std", "rewards/length_ratio_reward/mean", "completions/mean_length", "kl", "loss/agent_0", "loss/agent_1"):
        assert key in m and np.isfinite(m[key])
    assert 0.0 <= m["reward"] <= 1.0 and 1 <= m["completions/mean_length"] <= 8


def test_beta_and_iterations(tok):
    tr = _trainer(tok, beta=0.1, num_iterations=2)
    m = tr.step()
    assert m["kl"] > 0 and np.isfinite(m["loss/agent_0"])  # second iteration has moved away from the reference


def test_multi_turn_tree_and_transition_errors(tok):
    t = get_task("length-ratio")
    agents = [tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(2)]
    cfg = MAGRPOConfig(num_generations=2, max_completion_length=6, num_turns=2, learning_rate=1e-3, max_steps=1)
    seen = []

    def transition(prompt, agent_completions, num_agents, prompt_history_per_agent, response_history_per_agent):
        seen.append(len(prompt_history_per_agent[0]))
        return [f"again {i}:" for i in range(num_agents)]

    tr = MAGRPOTrainer(agents, cfg, t.train, t.reward, t.formatters, processing_class=tok, external_transition=transition)
    m = tr.step()
    assert "reward/turn_2" in m and seen == [1, 1]  # one transition per turn-1 joint action
    assert set(tr.evaluate(t.eval[:2])) >= {"eval/reward", "eval/reward/turn_1", "eval/reward/turn_2"}
    bad = MAGRPOTrainer([tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(2)], cfg, t.train, t.reward,
                        t.formatters, processing_class=tok, external_transition=lambda **kw: ["only one"])
    with pytest.raises(ValueError, match="must return 2 prompts"):
        bad.step()
    with pytest.raises(ValueError, match="needs an external_transition"):
        MAGRPOTrainer(agents, cfg, t.train, t.reward, t.formatters, processing_class=tok)


def test_bad_inputs_are_named(tok):
    t = get_task("length-ratio")
    agents = [tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(2)]
    cfg = MAGRPOConfig(num_generations=2, max_completion_length=4, max_steps=1)
    with pytest.raises(ValueError, match="formatters must be one callable per agent: expected 2, got 3"):
        MAGRPOTrainer(agents, cfg, t.train, t.reward, [t.formatters[0]] * 3, processing_class=tok)
    with pytest.raises(ValueError, match="got 1 agents for num_agents=2"):
        MAGRPOTrainer(agents[:1], cfg, t.train, t.reward, t.formatters, processing_class=tok)
    tr = MAGRPOTrainer(agents, cfg, t.train, lambda a, b: [0.0], t.formatters, processing_class=tok)
    with pytest.raises(ValueError, match="returned 1 values; expected 2"):
        tr.step()
    tr = MAGRPOTrainer(agents, cfg, t.train, lambda a, b: [float("nan")] * len(a), t.formatters, processing_class=tok)
    with pytest.raises(ValueError, match="non-finite"):
        tr.step()
    with pytest.raises(ConfigError, match="'num_generations' = 0"):
        MAGRPOConfig(num_generations=0)
    with pytest.raises(ConfigError, match="'joint_mode'"):
        MAGRPOConfig(joint_mode="diagonal")


def test_save_model_round_trip(tok, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tr = _trainer(tok)
    tr.step()
    paths = tr.save_model(tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    for agent, path in zip(tr.agents, paths):
        again = AutoModelForCausalLM.from_pretrained(path)
        torch.testing.assert_close(again(ids).logits, agent.eval()(ids).logits)
        assert AutoTokenizer.from_pretrained(path)("ab c").input_ids == tok("ab c").input_ids


def test_learning_on_length_ratio(tok):
    """Mean reward of the last 20 of 50 steps beats the first 20 by more than 0.15 (seed 0).

    Measured margins with this setting: 0.24 (seed 0; seeds 1-3: 0.20, 0.11, 0.24).
    """
    from auxfn.core.seeding import seed_everything

    seed_everything(0)
    t = get_task("length-ratio")
    agents = [tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(2)]
    cfg = MAGRPOConfig(num_generations=8, max_completion_length=10, learning_rate=1e-2, temperature=1.0, top_p=1.0, max_steps=50)
    tr = MAGRPOTrainer(agents, cfg, t.train, t.reward, t.formatters, processing_class=tok)
    r = [h["reward"] for h in tr.train()]
    assert np.mean(r[-20:]) - np.mean(r[:20]) > 0.15, (np.mean(r[:20]), np.mean(r[-20:]))


@pytest.mark.parametrize("shared", [False, True])
def test_lora_agents_and_shared_base(tok, tmp_path, shared):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    t = get_task("length-ratio")
    n_models = 1 if shared else 2
    agents = [tiny_causal_lm(tok, hidden_size=32, seed=i) for i in range(n_models)]
    base_sum = sum(q.detach().double().sum().item() for q in agents[0].parameters())
    cfg = MAGRPOConfig(num_generations=4, max_completion_length=6, learning_rate=1e-2, max_steps=1, share_base_model=shared, beta=0.05)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tr = MAGRPOTrainer(agents * (2 if shared else 1), cfg, t.train, t.reward, t.formatters, processing_class=tok, peft_config=lora)
    snap = [[q.detach().clone() for q in tr._trainable(i)] for i in range(2)]
    assert all(len(s) == 8 for s in snap)  # 2 layers x (q, v) x (A, B)
    tr._update_agent(0, {"p": [torch.tensor([5, 6])], "c": [torch.tensor([7, 2])], "a": [1.0]})
    assert any(not torch.equal(a, b) for a, b in zip(snap[0], tr._trainable(0)))  # agent 0's adapter moved
    assert all(torch.equal(a, b) for a, b in zip(snap[1], tr._trainable(1)))  # agent 1's did not
    m = tr.step()
    base = [q for n, q in tr.agents[0].named_parameters() if "lora_" not in n]
    assert sum(q.detach().double().sum().item() for q in base) == pytest.approx(base_sum, abs=1e-9)  # base frozen
    assert np.isfinite(m["kl"]) and m["kl"] >= 0
    paths = tr.save_model(tmp_path)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        outs = [AutoModelForCausalLM.from_pretrained(p)(ids).logits for p in paths]
        live = [tr.agent(i).eval()(ids).logits for i in range(2)]
    for saved, current in zip(outs, live):
        torch.testing.assert_close(saved, current, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(outs[0], outs[1])  # two different agents
