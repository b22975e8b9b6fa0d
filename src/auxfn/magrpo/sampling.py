"""A lean sampling loop for decoder-only Hugging Face models (the default generation backend).

``model.generate`` runs a generic pipeline (logits processors, stopping criteria, cache
set-up, validation) around every decoding step; with tiny models on a CPU that per-step
overhead costs more than the forward pass itself. This loop does only what MAGRPO needs:

- for GPT-2, Llama, Qwen2 and Qwen3 models the forward is
  :class:`auxfn.magrpo.fastdecode.FastDecoder`, a hand-written functional forward on the
  model's own weights (the per-step framework overhead of the model's forward was most
  of the decoding time at CPU scale); it applies only where it computes exactly what the
  model computes (:func:`auxfn.magrpo.fastdecode.fast_decode_refusal`), else the loop
  below calls the model;
- one forward over the (left-padded) prompts, then one forward per new token with the
  key/value cache (``past_key_values``), position ids following the attention mask;
- the cache is preallocated for prompt + ``max_new_tokens`` positions and written in
  place (``_preallocated_layer_class``). ``DynamicCache`` grows by ``torch.cat``, which copies
  the whole cache of every layer at every step (quadratic in the length); at 128 new
  tokens on a 12-layer model that copying was a quarter of the decoding time. The
  attention sees exactly the same keys and values (views of the buffer), so the tokens
  do not change;
- temperature, top-k and nucleus (top-p) filtering, sampling with an optional
  ``torch.Generator``; ``greedy=True`` takes the argmax (identical tokens to
  ``generate(do_sample=False)``);
- rows stop at their first EOS (later positions are filled with the pad token), the
  loop stops when every row has.

Top-p follows the usual definition: keep the smallest set of most probable tokens whose
mass reaches ``top_p`` (the most probable token is always kept).
"""

from __future__ import annotations

from typing import Any

import torch

from auxfn.magrpo.fastdecode import FastDecoder, fast_decode_refusal, joint_refusal

__all__ = ["LEAN_ARCHITECTURES", "lean_generate", "lean_supported"]

# decoder-only classes whose forward takes (input_ids, attention_mask, position_ids, past_key_values, use_cache)
LEAN_ARCHITECTURES = (
    "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Phi3ForCausalLM",
)


def _base(model: Any) -> Any:
    """The transformers model under a peft wrapper (peft models forward the same arguments)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


_LAYER_CLASS: Any = None


def _preallocated_layer_class() -> Any:
    """A ``DynamicLayer`` whose keys/values live in a buffer of fixed capacity, filled in place.

    ``update`` appends and returns the keys/values so far, as views of the buffer (the
    same interface as ``DynamicLayer``). When the capacity is reached the buffer doubles
    (never in :func:`lean_generate`, which sizes it). Defined on first use so that
    importing this module does not import transformers.
    """
    global _LAYER_CLASS
    if _LAYER_CLASS is None:
        from transformers.cache_utils import DynamicLayer

        class PreallocatedLayer(DynamicLayer):
            def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
                super().__init__()
                self.lazy_initialization(keys, values)
                B, H, L, _ = keys.shape
                cap = max(capacity, L)
                self._kbuf = keys.new_empty(B, H, cap, keys.shape[-1])
                self._vbuf = values.new_empty(B, H, cap, values.shape[-1])
                self._len = 0
                self.update(keys, values)

            def update(self, key_states, value_states, *args, **kwargs):
                end = self._len + key_states.shape[-2]
                if end > self._kbuf.shape[-2]:
                    self._grow(2 * end)
                self._kbuf[:, :, self._len : end].copy_(key_states)
                self._vbuf[:, :, self._len : end].copy_(value_states)
                self._len = end
                self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
                return self.keys, self.values

            def _grow(self, cap: int) -> None:
                k, v = self._kbuf, self._vbuf
                self._kbuf = k.new_empty(*k.shape[:2], cap, k.shape[-1])
                self._vbuf = v.new_empty(*v.shape[:2], cap, v.shape[-1])
                self._kbuf[:, :, : self._len] = k[:, :, : self._len]
                self._vbuf[:, :, : self._len] = v[:, :, : self._len]

        _LAYER_CLASS = PreallocatedLayer
    return _LAYER_CLASS


def _preallocate(cache: Any, capacity: int) -> Any:
    """Swap the plain dynamic layers of ``cache`` for preallocated ones (in place); other caches stay as they are."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # older transformers: no layer objects
        return cache
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers or getattr(cache, "offloading", False):
        return cache
    if not all(type(la) is DynamicLayer and la.is_initialized and la.keys is not None and la.keys.ndim == 4 for la in layers):
        return cache
    cls = _preallocated_layer_class()
    for i, la in enumerate(layers):
        layers[i] = cls(la.keys, la.values, capacity)
    return cache


def lean_supported(model: Any) -> bool:
    """True when :func:`lean_generate` handles ``model`` (else use ``generate``)."""
    return type(_base(model)).__name__ in LEAN_ARCHITECTURES


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        before = probs.cumsum(-1) - probs  # mass of the strictly more probable tokens
        drop = before >= top_p  # never the first: its "before" is p - p = 0 exactly, and top_p > 0
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def lean_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    suppress_tokens: list[int] | None = None,
    fast: bool | None = None,
) -> torch.Tensor:
    """Completions (B, T <= max_new_tokens) of left-padded prompts ``input_ids`` (B, P).

    After a row's first EOS its remaining positions hold ``pad_token_id``. Tokens in
    ``suppress_tokens`` are never produced (``generate``'s option of the same name).

    ``fast``: run the forward with :class:`auxfn.magrpo.fastdecode.FastDecoder` (True; a
    ValueError names the reason when it does not apply to ``model``), with the model's
    own forward (False), or the first wherever it applies (None, the default).

    ``model`` may be a list of models: the rows are split evenly among them, agent-major
    (rows ``[i * B/N, (i + 1) * B/N)`` continue with model i). Where
    :func:`auxfn.magrpo.fastdecode.joint_refusal` allows it (and ``fast`` is not False) they
    are decoded together in one stacked forward per token; otherwise one after the other
    (the tokens then come from other random draws, with the same distribution).
    """
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids and attention_mask must be equal (batch, length) shapes, got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    B = input_ids.shape[0]
    many = isinstance(model, (list, tuple))
    if many:
        if not model or B % len(model):
            raise ValueError(f"{B} rows cannot be split evenly over {len(model)} models")
        if fast is False or (fast is None and joint_refusal(list(model)) is not None):
            # one model after the other on its own rows, then right-padded to a common length
            kw = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id, temperature=temperature,
                      top_p=top_p, top_k=top_k, greedy=greedy, generator=generator, suppress_tokens=suppress_tokens, fast=fast)
            n = B // len(model)
            outs = [lean_generate(m, input_ids[i * n : (i + 1) * n], attention_mask[i * n : (i + 1) * n], **kw) for i, m in enumerate(model)]
            T = max(o.shape[1] for o in outs)
            return torch.cat([torch.nn.functional.pad(o, (0, T - o.shape[1]), value=pad_token_id) for o in outs])
    mask = attention_mask.long()
    # without padding (one prompt repeated G times, the trainer's case) the mask and
    # position ids are implied: skipping them avoids rebuilding a 4-D mask every step
    padded = bool((mask == 0).any())
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    checked = fast is None  # a list has passed joint_refusal above
    if fast is None:
        fast = many or fast_decode_refusal(model) is None
    if fast:
        rows_per_model = B // len(model) if many else B
        # fast=True: the decoder checks and raises a ValueError with the reason when it does not apply
        dec = FastDecoder(model, rows_per_model, input_ids.shape[1] + max_new_tokens - 1, check=not checked)
        logits = dec.prefill(input_ids, mask if padded else None, pos)

        def forward(tok: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
            return dec.step(tok, next_pos)
    else:
        extra = dict(attention_mask=mask, position_ids=pos) if padded else {}
        out = model(input_ids=input_ids, use_cache=True, **extra)
        cache_key = "cache" if getattr(out, "cache", None) is not None else "past_key_values"  # transformers >= 5.2x renames it
        state = {"past": getattr(out, cache_key), "mask": mask}
        if max_new_tokens > 1:
            state["past"] = _preallocate(state["past"], input_ids.shape[1] + max_new_tokens - 1)
        logits = out.logits[:, -1, :]

        def forward(tok: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
            kw = {}
            if padded:
                state["mask"] = torch.cat([state["mask"], torch.ones((B, 1), dtype=mask.dtype, device=mask.device)], 1)
                kw = dict(attention_mask=state["mask"], position_ids=next_pos)
            out = model(input_ids=tok[:, None], use_cache=True, **{cache_key: state["past"]}, **kw)
            state["past"] = getattr(out, cache_key)
            return out.logits[:, -1, :]

    next_pos = pos[:, -1:] + 1
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    suppress = None
    if suppress_tokens:  # one masked_fill per step (same logits as clone + index assignment)
        suppress = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        suppress[list(suppress_tokens)] = True
    tokens = []
    for t in range(max_new_tokens):
        if suppress is not None:
            logits = logits.masked_fill(suppress, float("-inf"))
        if greedy:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(_filter(logits.float() / temperature, top_k, top_p), -1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if t:
            tok = torch.where(done, pad_token_id, tok)
        tokens.append(tok)
        done = done | (tok == eos_token_id)
        if t + 1 == max_new_tokens or bool(done.all()):
            break
        logits = forward(tok, next_pos)
        next_pos = next_pos + 1
    return torch.stack(tokens, 1)
