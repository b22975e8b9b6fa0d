"""The hand-written decoding forward computes what the model computes, or refuses.

Logits of the prefill and of every decoding step equal the transformers forward on the
whole sequence (attention mask and position ids as ``generate`` builds them for left
padding): float64 to 1e-10, float32 to 1e-5; sampled tokens with a seeded generator equal
those of the model-forward sampler; every case it cannot compute exactly is refused and the
sampler falls back to the model's forward.
"""

import pytest
import torch

pytest.importorskip("transformers")

from auxfn.magrpo import sampling
from auxfn.magrpo.config import MAGRPOConfig
from auxfn.magrpo.fastdecode import FastDecoder, fast_decode_refusal
from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
from auxfn.magrpo.trainer import MAGRPOTrainer


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _special(tok):
    return dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


def _model(tok, kind: str):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    V, sp = len(tok), _special(tok)
    torch.manual_seed(11)
    if kind == "gpt2":
        return tiny_causal_lm(tok, arch="gpt2", hidden_size=32, num_layers=2, num_heads=2, seed=1)
    if kind == "gpt2-layer-scaled":  # 1/sqrt(d) and 1/(layer+1), untied head
        return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=4, scale_attn_by_inverse_layer_idx=True,
                                          activation_function="gelu", tie_word_embeddings=False, **sp))
    if kind == "llama":
        return tiny_causal_lm(tok, arch="llama", hidden_size=32, num_layers=2, num_heads=2, seed=1)
    if kind == "llama-gqa-bias-rope-linear":
        return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                                            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}, **sp))
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, **sp))
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, head_dim=16, **sp))
    raise ValueError(kind)


KINDS = ["gpt2", "gpt2-layer-scaled", "llama", "llama-gqa-bias-rope-linear", "qwen2", "qwen3"]
PROMPTS = {"padded": ["ab:", "f(x)=3*x\n", "q"], "unpadded": ["ab:"] * 3}


def _trace(model, tok, prompts, n_steps: int, seed: int):
    """Fast-path logits (B, 1 + n_steps, V) and the model's on the full sequence."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    B, P = ids.shape
    cont = torch.randint(5, 40, (B, n_steps), generator=torch.Generator().manual_seed(seed))
    full, fm = torch.cat([ids, cont], 1), torch.cat([am, torch.ones_like(cont)], 1)
    pos = fm.long().cumsum(-1) - 1  # as generate builds them for left padding
    pos = pos.masked_fill(fm == 0, 1)
    with torch.no_grad():
        want = model(input_ids=full, attention_mask=fm, position_ids=pos).logits[:, P - 1 : P + n_steps]
    dec = FastDecoder(model, B, P + n_steps)
    padded = bool((am == 0).any())
    got = [dec.prefill(ids, am if padded else None, pos[:, :P])]
    for t in range(n_steps):
        got.append(dec.step(cont[:, t], pos[:, P + t : P + t + 1]))
    return torch.stack(got, 1), want


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_the_transformers_forward(tok, kind):
    model = _model(tok, kind).eval()
    assert fast_decode_refusal(model) is None
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        model = model.to(dtype)
        for name, prompts in PROMPTS.items():
            got, want = _trace(model, tok, prompts, 7, seed=len(name))
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=f"{kind} {dtype} {name}")


def test_eager_attention_and_train_mode_without_dropout(tok):
    """The eager attention implementation, and train mode when no dropout is active, are exact too."""
    model = tiny_causal_lm(tok, arch="gpt2", hidden_size=32, seed=3, dropout=0.0).double()
    assert model.training and fast_decode_refusal(model) is None
    model.config._attn_implementation = "eager"
    assert fast_decode_refusal(model) is None
    got, want = _trace(model, tok, PROMPTS["padded"], 5, seed=0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_weights_are_read_at_every_call(tok):
    """An optimizer step between calls is seen: no stale weight copies."""
    model = _model(tok, "llama").double().eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([tok("abc")["input_ids"]])
    before, _ = _trace(model, tok, ["abc"], 2, seed=1)
    model(input_ids=ids).logits.sum().backward()
    opt.step()
    after, want = _trace(model, tok, ["abc"], 2, seed=1)
    torch.testing.assert_close(after, want, rtol=0, atol=1e-10)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen3"])
@pytest.mark.parametrize("greedy", [False, True])
def test_sampled_tokens_equal_the_model_forward_sampler(tok, kind, greedy):
    model = _model(tok, kind).double().eval()
    for prompts in PROMPTS.values():
        enc = tok(prompts, return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"].repeat(2, 1), enc["attention_mask"].repeat(2, 1)

        def draw(fast, ids=ids, mask=mask):
            return sampling.lean_generate(model, ids, mask, max_new_tokens=20, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                          temperature=1.3, top_p=0.95, top_k=30, greedy=greedy, generator=torch.Generator().manual_seed(5),
                                          suppress_tokens=[tok.bos_token_id], fast=fast)

        fast, slow, auto = draw(True), draw(False), draw(None)
        assert torch.equal(fast, slow) and torch.equal(auto, fast)
        if not greedy:
            assert len({tuple(r.tolist()) for r in fast}) > 1


def _refused(model, tok, match: str):
    reason = fast_decode_refusal(model)
    assert reason is not None and match in reason, reason
    enc = tok(["ab:", "q"], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=6, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=1.0)
    with pytest.raises(ValueError, match="no fast decoding path"):
        sampling.lean_generate(model, enc["input_ids"], enc["attention_mask"], fast=True, **kw)
    # auto falls back to the model's forward: same tokens as asking for it (dropout draws from the global RNG)
    torch.manual_seed(0)
    a = sampling.lean_generate(model, enc["input_ids"], enc["attention_mask"], generator=torch.Generator().manual_seed(0), **kw)
    torch.manual_seed(0)
    b = sampling.lean_generate(model, enc["input_ids"], enc["attention_mask"], generator=torch.Generator().manual_seed(0), fast=False, **kw)
    assert torch.equal(a, b)


def test_refuses_active_dropout_and_falls_back(tok):
    model = tiny_causal_lm(tok, arch="gpt2", hidden_size=32, seed=1)  # GPT-2 config default: dropout 0.1, train mode
    _refused(model, tok, "dropout")
    llama = tiny_causal_lm(tok, arch="llama", hidden_size=32, seed=1, dropout=0.2)  # attention dropout (a float, no module)
    _refused(llama, tok, "attention dropout")
    assert fast_decode_refusal(llama.eval()) is None  # eval mode: dropout is off


def test_refuses_peft_and_injected_adapters(tok):
    peft = pytest.importorskip("peft")
    model = tiny_causal_lm(tok, arch="llama", hidden_size=32, seed=1)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    assert "peft" in fast_decode_refusal(wrapped)
    _refused(wrapped.get_base_model(), tok, "not torch.nn.Linear")


def test_refuses_hooks_attention_kinds_and_configs(tok):
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    model = _model(tok, "llama").eval()
    h = model.model.layers[0].mlp.register_forward_hook(lambda m, i, o: o * 2)
    _refused(model, tok, "hooks")
    h.remove()
    assert fast_decode_refusal(model) is None
    model.config._attn_implementation = "flex_attention"
    assert "attention implementation" in fast_decode_refusal(model)
    model.config._attn_implementation = "sdpa"
    sw = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=0, **_special(tok)))
    _refused(sw.eval(), tok, "sliding")
    mistral = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2, **_special(tok)))
    _refused(mistral.eval(), tok, "MistralForCausalLM")
    from transformers import LlamaConfig, LlamaForCausalLM

    dyn = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                       rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}, **_special(tok)))
    _refused(dyn.eval(), tok, "rope_type")


def test_disable_dropout_config(tok):
    """disable_dropout=True zeroes every dropout of the agents once (so the fast path applies in train mode); False leaves them."""
    data = [{"x": 0}]

    def make(flag):
        agents = [tiny_causal_lm(tok, arch="gpt2", hidden_size=32, seed=i) for i in range(2)]
        cfg = MAGRPOConfig(num_generations=2, max_completion_length=4, disable_dropout=flag, max_steps=1)
        return MAGRPOTrainer(agents, cfg, data, lambda a, b: [1.0] * len(a), [lambda _: "ab"] * 2, processing_class=tok)

    on, off = make(True), make(False)
    for a in on.agents:
        assert all(m.p == 0 for m in a.modules() if isinstance(m, torch.nn.Dropout))
        assert a.training and fast_decode_refusal(a) is None
    for a in off.agents:
        assert {m.p for m in a.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
        assert "dropout" in fast_decode_refusal(a)
    on.step()
    assert on.agents[0].training and fast_decode_refusal(on.agents[0]) is None
    from auxfn.core.errors import ConfigError

    with pytest.raises(ConfigError, match="disable_dropout"):
        MAGRPOConfig(disable_dropout="yes")


# ---------------------------------------------------------------- several agents decoded together
@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa-bias-rope-linear", "qwen3"])
def test_joint_logits_equal_each_models_forward(tok, kind):
    """Stacked decoding of 2 models: agent i's rows equal model i's own forward (float64, 1e-10)."""
    models = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        m = _model(tok, kind).double().eval()
        with torch.no_grad():  # distinct weights for every agent
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        models.append(m)
    prompts = [["ab:", "q"], ["f(x)=3*x\n", "ab"]]  # agent-major rows, different lengths across agents
    enc = tok([p for ps in prompts for p in ps], return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    P, n = ids.shape[1], 5
    cont = torch.randint(5, 40, (4, n), generator=torch.Generator().manual_seed(2))
    full, fm = torch.cat([ids, cont], 1), torch.cat([am, torch.ones_like(cont)], 1)
    pos = (fm.cumsum(1) - 1).clamp(min=0)
    dec = FastDecoder(models, 2, P + n)
    got = [dec.prefill(ids, am, pos[:, :P])]
    for t in range(n):
        got.append(dec.step(cont[:, t], pos[:, P + t : P + t + 1]))
    got = torch.stack(got, 1)
    for i, m in enumerate(models):
        rows = slice(2 * i, 2 * i + 2)
        with torch.no_grad():
            want = m(input_ids=full[rows], attention_mask=fm[rows], position_ids=pos[rows]).logits[:, P - 1 : P + n]
        torch.testing.assert_close(got[rows], want, rtol=0, atol=1e-10)


def test_joint_greedy_equals_one_model_at_a_time_and_refusals(tok):
    models = [tiny_causal_lm(tok, arch="llama", hidden_size=32, seed=s).double().eval() for s in (5, 6)]
    enc = tok(["ab:", "ab:", "f(x)=", "f(x)="], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=12, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, greedy=True)
    joint = sampling.lean_generate(models, enc["input_ids"], enc["attention_mask"], fast=True, **kw)
    apart = torch.cat([sampling.lean_generate(m, enc["input_ids"][2 * i : 2 * i + 2], enc["attention_mask"][2 * i : 2 * i + 2], fast=False, **kw)
                       for i, m in enumerate(models)])
    T = max(joint.shape[1], apart.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, T - x.shape[1]), value=tok.pad_token_id)  # noqa: E731
    assert torch.equal(pad(joint), pad(apart))
    from auxfn.magrpo.fastdecode import joint_refusal

    other = tiny_causal_lm(tok, arch="llama", hidden_size=48, seed=7).double().eval()
    assert "differ" in joint_refusal([models[0], other])
    assert "differ" in joint_refusal([models[0], models[1].float()])
    with pytest.raises(ValueError, match="no fast decoding path"):
        sampling.lean_generate([models[0], other], enc["input_ids"], enc["attention_mask"], fast=True, **kw)
    # auto falls back to one model after the other
    mixed = sampling.lean_generate([models[0], other], enc["input_ids"], enc["attention_mask"], **kw)
    assert torch.equal(pad(mixed)[:2], pad(apart)[:2])


def test_trainer_samples_all_agents_together_when_it_can(tok, monkeypatch):
    from auxfn.magrpo import trainer as trainer_mod

    calls = {"joint": 0, "group": 0}
    real_joint, real_group = trainer_mod.generate_joint, trainer_mod.generate_group

    def joint(*a, **k):
        calls["joint"] += 1
        return real_joint(*a, **k)

    def group(*a, **k):
        calls["group"] += 1
        return real_group(*a, **k)

    monkeypatch.setattr(trainer_mod, "generate_joint", joint)
    monkeypatch.setattr(trainer_mod, "generate_group", group)
    data = [{"x": 0}]
    reward = lambda a, b: [float(len(x) - len(y)) for x, y in zip(a, b)]  # noqa: E731
    agents = [tiny_causal_lm(tok, arch="llama", hidden_size=32, seed=i) for i in range(2)]
    cfg = MAGRPOConfig(num_generations=3, max_completion_length=6, max_steps=1)
    tr = MAGRPOTrainer(agents, cfg, data, reward, [lambda _: "ab:", lambda _: "long prompt:"], processing_class=tok)
    m = tr.step()
    assert calls == {"joint": 1, "group": 0} and m["completions/mean_length"] >= 1
    assert trainer_mod.joint_generation_refusal(tr.agents, tr.tokenizers, cfg) is None
    # different configurations: generate_joint decodes one agent after the other (lean_generate's fallback)
    agents = [tiny_causal_lm(tok, arch="llama", hidden_size=32, seed=0), tiny_causal_lm(tok, arch="llama", hidden_size=48, seed=1)]
    tr = MAGRPOTrainer(agents, cfg, data, reward, [lambda _: "ab:", lambda _: "long prompt:"], processing_class=tok)
    stacked = []
    real_init = FastDecoder.__init__
    monkeypatch.setattr(FastDecoder, "__init__", lambda self, models, *a, **k: stacked.append(isinstance(models, list) and len(models))
                        or real_init(self, models, *a, **k))
    m = tr.step()
    assert calls == {"joint": 2, "group": 0} and m["completions/mean_length"] >= 1
    assert 2 not in stacked  # never both agents in one decoder
    assert "differ" in trainer_mod.joint_generation_refusal(tr.agents, tr.tokenizers, cfg)
    # adapters on one shared base or different tokenizers' specials: per-agent generate_group (checked without the models)
    assert trainer_mod.joint_generation_refusal([agents[0], agents[0]], tr.tokenizers, cfg, check_models=False) is not None
    gen_cfg = MAGRPOConfig(num_generations=3, max_completion_length=6, generation_backend="generate")
    assert "generate" in trainer_mod.joint_generation_refusal(tr.agents, tr.tokenizers, gen_cfg)


# ---------------------------------------------------------------- the update through the stacked forward
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_joint_logprobs_and_gradients_equal_per_agent_float64(tok, arch):
    import copy

    from auxfn.magrpo.losses import token_logprobs, token_logprobs_joint

    models = [tiny_causal_lm(tok, arch=arch, hidden_size=32, seed=s, dropout=0.0).double() for s in (1, 2)]
    refs = [copy.deepcopy(m) for m in models]
    for prompts in (["ab:"] * 4, ["ab:", "f(x)=3*x\n", "q", "ab:"]):
        enc = tok(prompts, return_tensors="pt", padding=True)
        c = torch.randint(5, 40, (4, 6), generator=torch.Generator().manual_seed(1))
        cm = torch.ones_like(c)
        cm[1, 4:] = 0
        got = token_logprobs_joint(models, enc["input_ids"], enc["attention_mask"], c, cm)
        want = torch.cat([token_logprobs(refs[i], enc["input_ids"][2 * i : 2 * i + 2], enc["attention_mask"][2 * i : 2 * i + 2],
                                         c[2 * i : 2 * i + 2], cm[2 * i : 2 * i + 2]) for i in range(2)])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        w = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        (got * w).sum().backward()
        (want * w).sum().backward()
        for m, r in zip(models, refs):
            for p, q in zip(m.parameters(), r.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10)
            m.zero_grad()
            r.zero_grad()


def test_trainer_joint_update_equals_per_agent_update(tok, monkeypatch):
    """One trainer step with the stacked update gives the same weights as the per-agent update (float64)."""
    data = [{"x": 0}]
    reward = lambda a, b: [float(len(x)) - 0.5 * len(y) for x, y in zip(a, b)]  # noqa: E731

    def run(joint: bool):
        agents = [tiny_causal_lm(tok, arch="gpt2", hidden_size=32, seed=i, dropout=0.0).double() for i in range(2)]
        cfg = MAGRPOConfig(num_generations=4, max_completion_length=8, learning_rate=1e-2, max_grad_norm=1.0, max_steps=1)
        tr = MAGRPOTrainer(agents, cfg, data, reward, [lambda _: "ab:", lambda _: "long prompt:"], processing_class=tok)
        calls = []
        real = tr._joint_update_ok
        monkeypatch.setattr(tr, "_joint_update_ok", lambda per_agent: calls.append(1) or (real(per_agent) and joint))
        torch.manual_seed(0)
        m = tr.step()
        return tr, m, real

    a, ma, ok = run(True)
    b, mb, _ = run(False)
    assert ok([{"c": [1]}, {"c": [1]}])  # the stacked update applied in the first run
    assert not ok([{"c": [1]}, {"c": [1, 2]}])  # unequal numbers of completions: one agent at a time
    a.agents[0].gradient_checkpointing_enable()
    assert not ok([{"c": [1]}, {"c": [1]}])  # gradient checkpointing is a memory choice the stacked forward would ignore
    assert ma["reward"] == mb["reward"]  # same samples
    for k in ("loss/agent_0", "loss/agent_1", "grad_norm/agent_0", "grad_norm/agent_1"):
        assert ma[k] == pytest.approx(mb[k], rel=1e-9, abs=1e-12)
    for i in range(2):
        for p, q in zip(a.agents[i].parameters(), b.agents[i].parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert mb["grad_norm/agent_0"] > 0


def test_grad_norm_without_clipping_equals_clip_grad_norm_total():
    from auxfn.magrpo.trainer import _grad_norm

    g = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
    expected = float(torch.sqrt(sum((p.grad**2).sum() for p in params)))
    assert abs(_grad_norm(params) - expected) < 1e-12
    assert abs(float(torch.nn.utils.clip_grad_norm_(params, float("inf"))) - expected) < 1e-12
    assert _grad_norm([]) == 0.0
