"""A hand-written decoding forward for GPT-2 and Llama-family models (Llama, Qwen2, Qwen3).

Why hand-written: at CPU scale the transformers forward is mostly framework overhead, not
arithmetic. With a GPT-2 of width 64 and 2 layers, one decoding step through
``model(input_ids=..., past_key_values=...)`` took about 2.7 ms for 4 rows (0.175 s for
2 agents x 32 tokens per training step), almost all of it in mask building, cache
objects, output dataclasses and per-layer module wrappers; the matrix products of such a
model take a few microseconds. This module runs the same computation directly on the
model's own weight tensors: embeddings, layer norms / RMSNorm, the fused (GPT-2) or
separate (Llama) q/k/v projections, rotary embedding from the model's own rotary module,
``torch.nn.functional.scaled_dot_product_attention`` on a preallocated key/value buffer
written in place, the MLP, the final norm and the LM head on the last position only.

It is used only where it computes what the model computes: :func:`fast_decode_refusal`
names the reason it does not apply (another architecture, a peft/LoRA wrapper or injected
adapter layers, module hooks, active dropout, an attention implementation other than
``eager``/``sdpa``, sliding-window attention, position-dependent RoPE scaling, ...), and
the sampler then falls back to the model's forward. Tests compare its logits with the
transformers forward (float64 to 1e-10, float32 to 1e-5) with left-padded and unpadded
batches, and its sampled tokens with those of the model-forward sampler.

Weights are read at every call (no copies), so an optimizer step between calls is seen.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["FAST_ARCHITECTURES", "FastDecoder", "fast_decode_refusal"]

FAST_ARCHITECTURES = ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_LLAMA_LIKE = FAST_ARCHITECTURES[1:]
# activations by config name whose one-op functional form equals transformers' module
_ACTS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}
# RoPE types whose cos/sin depend on the position only (not on the sequence length)
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def _refuse_modules(model: Any) -> str | None:
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook"):
            return f"module {name or 'model'} has forward hooks"
        if model.training and isinstance(m, torch.nn.Dropout) and m.p > 0:
            return f"dropout is active (train mode, {name}.p = {m.p}); set disable_dropout=True or call eval()"
        if model.training and float(getattr(m, "attention_dropout", 0.0) or 0.0) > 0:
            return f"attention dropout is active (train mode, {name}.attention_dropout = {m.attention_dropout})"
    return None


def fast_decode_refusal(model: Any) -> str | None:
    """None when :class:`FastDecoder` computes exactly what ``model`` computes, else the reason it does not apply."""
    if callable(getattr(model, "get_base_model", None)):
        return "peft-wrapped model"
    name = type(model).__name__
    if name not in FAST_ARCHITECTURES or not type(model).__module__.startswith("transformers.models."):
        return f"architecture {name} has no fast path"
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None)
    if impl not in ("eager", "sdpa"):
        return f"attention implementation {impl!r} (only eager and sdpa)"
    if getattr(cfg, "is_encoder_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return "cross-attention"
    linear_types = (torch.nn.Linear,)
    if name == "GPT2LMHeadModel":
        from transformers.pytorch_utils import Conv1D

        if cfg.reorder_and_upcast_attn:
            return "reorder_and_upcast_attn=True"
        if cfg.activation_function not in _ACTS:
            return f"activation {cfg.activation_function!r}"
        tr = model.transformer
        for blk in tr.h:
            if not all(type(m) is Conv1D for m in (blk.attn.c_attn, blk.attn.c_proj, blk.mlp.c_fc, blk.mlp.c_proj)):
                return "a projection is not transformers' Conv1D (adapter or quantized layer)"
            if not all(type(m) is torch.nn.LayerNorm for m in (blk.ln_1, blk.ln_2)):
                return "a layer norm is not torch.nn.LayerNorm"
        if type(tr.ln_f) is not torch.nn.LayerNorm:
            return "final norm is not torch.nn.LayerNorm"
    else:
        layer_types = getattr(cfg, "layer_types", None) or ["full_attention"]
        if any(t != "full_attention" for t in layer_types) or getattr(cfg, "use_sliding_window", False):
            return "sliding-window attention"
        rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope not in _STATIC_ROPE:
            return f"rope_type {rope!r} (cos/sin depend on the sequence length)"
        if cfg.hidden_act not in _ACTS:
            return f"activation {cfg.hidden_act!r}"
        norm_cls = type(model.model.norm)
        if not norm_cls.__name__.endswith("RMSNorm"):
            return "final norm is not an RMSNorm"
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            mods = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
            if not all(type(x) in linear_types for x in mods):
                return "a projection is not torch.nn.Linear (adapter or quantized layer)"
            if getattr(a, "sliding_window", None) is not None:
                return "sliding-window attention"
            norms = [layer.input_layernorm, layer.post_attention_layernorm]
            if name == "Qwen3ForCausalLM":
                norms += [a.q_norm, a.k_norm]
            elif hasattr(a, "q_norm") or hasattr(a, "k_norm"):
                return "unexpected q/k norm"
            if not all(type(x) is norm_cls for x in norms):
                return "a norm is not the model's RMSNorm"
    if type(model.lm_head) not in linear_types:
        return "LM head is not torch.nn.Linear"
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
        return "logit soft-capping"
    return _refuse_modules(model)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    # as transformers' RMSNorm: normalise in float32 (also for float64 models), cast back, then scale
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


class FastDecoder:
    """Prefill + one-token steps of a supported model with a preallocated key/value buffer.

    ``prefill(input_ids, attention_mask, position_ids)`` runs the (left-padded) prompts and
    returns the last position's logits (B, V); each ``step(tokens (B,), position_ids (B, 1))``
    appends one token per row and returns its logits. ``attention_mask`` None means no
    padding. At most ``capacity`` positions in all.
    """

    def __init__(self, model: Any, batch: int, capacity: int):
        reason = fast_decode_refusal(model)
        if reason is not None:
            raise ValueError(f"no fast decoding path for this model: {reason}")
        self.model = model
        self.B, self.cap = batch, capacity
        self.gpt2 = type(model).__name__ == "GPT2LMHeadModel"
        cfg = model.config
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        if self.gpt2:
            self.H = cfg.n_head
            self.KV = self.H
            self.hd = cfg.n_embd // self.H
            self.act = _ACTS[cfg.activation_function]
            n_layers = len(model.transformer.h)
        else:
            a0 = model.model.layers[0].self_attn
            self.H, self.KV, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, a0.head_dim
            self.act = _ACTS[cfg.hidden_act]
            n_layers = len(model.model.layers)
            # cos/sin of every position this decoder can see, from the model's own rotary module
            pos = torch.arange(capacity, device=self.device)[None]
            cos, sin = model.model.rotary_emb(torch.empty(0, dtype=self.dtype, device=self.device), pos)
            self.cos, self.sin = cos[0], sin[0]  # (capacity, head_dim)
        # one buffer per layer: [keys, values] x (B, kv heads, capacity, head_dim)
        self.kv = [torch.empty(2, batch, self.KV, capacity, self.hd, dtype=self.dtype, device=self.device) for _ in range(n_layers)]
        self.valid: torch.Tensor | None = None  # (B, capacity) key mask when the prompts are padded
        self.len = 0

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor) -> torch.Tensor:
        B, L = input_ids.shape
        if B != self.B or L > self.cap:
            raise ValueError(f"prefill of {tuple(input_ids.shape)} does not fit batch {self.B}, capacity {self.cap}")
        mask = None
        if attention_mask is not None:
            self.valid = torch.ones(B, self.cap, dtype=torch.bool, device=input_ids.device)
            self.valid[:, :L] = attention_mask.bool()
            causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
            # a padded query position sees only itself (its output is never used): no empty softmax rows
            mask = (causal & self.valid[:, None, :L]) | torch.eye(L, dtype=torch.bool, device=input_ids.device)
            mask = mask[:, None]
        self.len = 0
        return self._forward(input_ids, position_ids, mask)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if self.len + 1 > self.cap:
            raise ValueError(f"decoding past the capacity {self.cap}")
        mask = None if self.valid is None else self.valid[:, None, None, : self.len + 1]
        return self._forward(tokens[:, None], position_ids, mask)

    # ------------------------------------------------------------------ forward
    def _attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, scale: float, L: int) -> torch.Tensor:
        """q (B, H, L, hd), k/v (B, KV, L, hd) written at the current position; returns (B*L, H*hd)."""
        s, e = self.len, self.len + L
        buf = self.kv[i]
        buf[0, :, :, s:e].copy_(k)
        buf[1, :, :, s:e].copy_(v)
        is_causal = mask is None and L > 1  # only the prefill (s = 0) has L > 1
        out = F.scaled_dot_product_attention(
            q, buf[0, :, :, :e], buf[1, :, :, :e], attn_mask=mask, is_causal=is_causal, scale=scale,
            enable_gqa=self.KV != self.H,
        )
        return out.transpose(1, 2).reshape(self.B * L, self.H * self.hd)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask) -> torch.Tensor:
        B, L = ids.shape
        m = self.model
        if self.gpt2:
            tr = m.transformer
            h = (F.embedding(ids, tr.wte.weight) + F.embedding(pos, tr.wpe.weight)).view(B * L, -1)
            for i, blk in enumerate(tr.h):
                a, mlp = blk.attn, blk.mlp
                x = F.layer_norm(h, blk.ln_1.normalized_shape, blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
                qkv = torch.addmm(a.c_attn.bias, x, a.c_attn.weight).view(B, L, 3, self.H, self.hd).permute(2, 0, 3, 1, 4)
                h = torch.addmm(h + a.c_proj.bias, self._attend(i, qkv[0], qkv[1], qkv[2], mask, a.scaling, L), a.c_proj.weight)
                x = F.layer_norm(h, blk.ln_2.normalized_shape, blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps)
                x = self.act(torch.addmm(mlp.c_fc.bias, x, mlp.c_fc.weight))
                h = torch.addmm(h + mlp.c_proj.bias, x, mlp.c_proj.weight)
            last = h.view(B, L, -1)[:, -1]
            last = F.layer_norm(last, tr.ln_f.normalized_shape, tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)
        else:
            base = m.model
            qwen3 = type(m).__name__ == "Qwen3ForCausalLM"
            h = F.embedding(ids, base.embed_tokens.weight).view(B * L, -1)
            cos = F.embedding(pos, self.cos)[:, None]  # (B, 1, L, hd)
            sin = F.embedding(pos, self.sin)[:, None]
            H, KV, hd = self.H, self.KV, self.hd
            for i, layer in enumerate(base.layers):
                a, mlp = layer.self_attn, layer.mlp
                n1 = layer.input_layernorm
                x = _rms(h, n1.weight, n1.variance_epsilon)
                q = F.linear(x, a.q_proj.weight, a.q_proj.bias).view(B, L, H, hd)
                k = F.linear(x, a.k_proj.weight, a.k_proj.bias).view(B, L, KV, hd)
                v = F.linear(x, a.v_proj.weight, a.v_proj.bias).view(B, L, KV, hd).transpose(1, 2)
                if qwen3:
                    q = _rms(q, a.q_norm.weight, a.q_norm.variance_epsilon)
                    k = _rms(k, a.k_norm.weight, a.k_norm.variance_epsilon)
                qk = _rotate(torch.cat((q, k), 2).transpose(1, 2), cos, sin)  # (B, H + KV, L, hd)
                att = self._attend(i, qk[:, :H], qk[:, H:], v, mask, a.scaling, L)
                h = h + F.linear(att, a.o_proj.weight, a.o_proj.bias)
                n2 = layer.post_attention_layernorm
                x = _rms(h, n2.weight, n2.variance_epsilon)
                x = self.act(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias)) * F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)
                h = h + F.linear(x, mlp.down_proj.weight, mlp.down_proj.bias)
            last = h.view(B, L, -1)[:, -1]
            last = _rms(last, base.norm.weight, base.norm.variance_epsilon)
        self.len += L
        return F.linear(last, m.lm_head.weight, m.lm_head.bias)
