"""The speed paths change no number: batched log-probs equal one forward per completion, and
the preallocated key/value cache samples the same tokens as transformers' growing cache."""

import pytest
import torch

pytest.importorskip("transformers")

from auxfn.magrpo import sampling
from auxfn.magrpo.losses import completion_mask, token_logprobs
from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _per_sequence(model, prompt: torch.Tensor, comp: torch.Tensor, eos: int) -> torch.Tensor:
    """Sum of log pi over the completion up to its first EOS, from one unpadded forward."""
    n = int(completion_mask(comp[None], eos)[0].sum())
    seq = torch.cat([prompt, comp[:n]])[None]
    logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, comp[:n, None]).sum()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_logprobs_equal_one_forward_per_completion_float64(tok, arch):
    model = tiny_causal_lm(tok, arch=arch, hidden_size=32, seed=1).double().eval()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    g = torch.Generator().manual_seed(0)
    comps = [torch.randint(5, 40, (n,), generator=g) for n in (6, 3, 5, 6)]
    comps[1][2] = eos  # ends at its EOS
    comps[2][1] = eos  # EOS then tokens that must not count
    T = max(len(c) for c in comps)
    c_ids = torch.stack([torch.cat([c, torch.full((T - len(c),), pad)]) for c in comps])
    c_mask = torch.stack([torch.cat([completion_mask(c[None], eos)[0], torch.zeros(T - len(c), dtype=torch.long)]) for c in comps])
    for prompts in (["ab:"] * 4, ["ab:", "f(x)=3*x\n", "q", "ab:"]):  # one shared prompt (no mask) and left-padded prompts
        enc = tok(prompts, return_tensors="pt", padding=True)
        got = token_logprobs(model, enc["input_ids"], enc["attention_mask"], c_ids, c_mask)
        assert got.dtype == torch.float64 and torch.all(got[c_mask == 0] == 0)
        for b, p in enumerate(prompts):
            want = _per_sequence(model, torch.tensor(tok(p)["input_ids"]), comps[b], eos)
            torch.testing.assert_close(got[b].sum(), want, rtol=0, atol=1e-10)


def test_preallocated_cache_grows_and_matches_concatenation():
    cls = sampling._preallocated_layer_class()
    g = torch.Generator().manual_seed(1)
    k0, v0 = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 7, generator=g)
    layer = cls(k0, v0, capacity=5)
    keys, values = k0, v0
    for n in (1, 1, 3, 1):  # passes the capacity (5) and grows
        k, v = torch.randn(2, 3, n, 5, generator=g), torch.randn(2, 3, n, 7, generator=g)
        out_k, out_v = layer.update(k, v)
        keys, values = torch.cat([keys, k], 2), torch.cat([values, v], 2)
        assert torch.equal(out_k, keys) and torch.equal(out_v, values)
    assert layer.get_seq_length() == 10


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lean_sampling_is_unchanged_by_the_preallocated_cache(tok, arch, monkeypatch):
    model = tiny_causal_lm(tok, arch=arch, hidden_size=32, seed=2).eval()
    enc = tok(["f(x)=3*x+2\nmain:\n", "ab"], return_tensors="pt", padding=True)
    ids = enc["input_ids"].repeat(2, 1)
    mask = enc["attention_mask"].repeat(2, 1)

    def draw():
        return sampling.lean_generate(model, ids, mask, max_new_tokens=24, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                      temperature=1.2, top_p=0.95, generator=torch.Generator().manual_seed(3), fast=False)

    calls = []
    real = sampling._preallocate

    def spy(cache, n):
        out = real(cache, n)
        calls.append((n, {type(la).__name__ for la in out.layers}))
        return out

    monkeypatch.setattr(sampling, "_preallocate", spy)
    fast = draw()
    assert calls == [(ids.shape[1] + 23, {"PreallocatedLayer"})]  # every layer was swapped
    monkeypatch.setattr(sampling, "_preallocate", lambda c, n: c)  # transformers' own growing cache
    slow = draw()
    assert torch.equal(fast, slow)
    assert len({tuple(r.tolist()) for r in fast}) > 1
