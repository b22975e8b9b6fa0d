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

__all__ = ["FAST_ARCHITECTURES", "JOINT_MAX_PARAMS", "FastDecoder", "fast_decode_refusal", "joint_refusal"]

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
        return F.rms_norm(x, (x.shape[-1],), None, eps) * w  # w broadcasts over the agent axis
    # as transformers' RMSNorm: normalise in float32 (also for float64 models), cast back, then scale
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def joint_refusal(models: list[Any]) -> str | None:
    """None when one :class:`FastDecoder` can run all ``models`` together (stacked weights), else why not.

    Each must have the fast path, and all the same class, configuration, dtype and device.
    Stacking copies the weights once per sampling call, so several models are decoded
    together only up to :data:`JOINT_MAX_PARAMS` parameters each (beyond that the matrix
    products dominate and decoding one model after the other loses little).
    """
    for m in models:
        reason = fast_decode_refusal(m)
        if reason is not None:
            return reason
    if len(models) == 1:
        return None
    first = models[0]
    p0 = next(first.parameters())

    def conf(m: Any) -> dict:  # the configuration's own attributes (to_dict costs more than a tiny model's step)
        return {k: v for k, v in vars(m.config).items() if k not in ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash")}

    for m in models[1:]:
        p = next(m.parameters())
        if type(m) is not type(first) or p.dtype != p0.dtype or p.device != p0.device or conf(m) != conf(first):
            return "the models differ in class, configuration, dtype or device"
    if sum(p.numel() for p in first.parameters()) > JOINT_MAX_PARAMS:
        return f"more than {JOINT_MAX_PARAMS:,} parameters per model (stacking would copy them)"
    return None


JOINT_MAX_PARAMS = 50_000_000


class FastDecoder:
    """Prefill + one-token steps of one or several supported models with a preallocated key/value buffer.

    ``models``: one model, or a list of models of the same configuration (see
    :func:`joint_refusal`) decoded together: their weights are stacked along a leading
    agent axis and every product is one batched matrix product over the agents, so the
    per-operation overhead is paid once for all of them. Rows are agent-major: rows
    ``[n * batch, (n + 1) * batch)`` belong to model n. With one model the stacked weights
    are views, not copies.

    ``check=False`` skips :func:`joint_refusal` for a caller that has just run it.

    ``prefill(input_ids, attention_mask, position_ids)`` runs the (left-padded) prompts and
    returns the last position's logits (rows, V); each ``step(tokens (rows,), position_ids
    (rows, 1))`` appends one token per row and returns its logits. ``attention_mask`` None
    means no padding. At most ``capacity`` positions in all.
    """

    def __init__(self, models: Any, batch: int, capacity: int, *, cache: bool = True, check: bool = True):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        reason = joint_refusal(models) if check else None  # check=False: the caller has just checked
        if reason is not None:
            raise ValueError(f"no fast decoding path for this model: {reason}")
        model = models[0]
        self.models, self.N = models, len(models)
        self.B, self.cap = batch, capacity
        self.gpt2 = type(model).__name__ == "GPT2LMHeadModel"
        cfg = model.config
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        N = self.N

        def st(get, bias: bool = False, t: bool = False):
            """The agents' tensors ``get(model)`` stacked on a new axis 0 (a view for one model).

            bias: shaped (N, 1, out) to broadcast over rows; t: transposed (N, in, out) for bmm.
            """
            ts = [get(m) for m in models]
            if ts[0] is None:
                return None
            x = ts[0].unsqueeze(0) if N == 1 else torch.stack(ts)
            if bias:
                x = x.unsqueeze(1)
            return x.transpose(1, 2) if t else x

        if self.gpt2:
            self.H = self.KV = cfg.n_head
            self.hd = cfg.n_embd // self.H
            self.act = _ACTS[cfg.activation_function]
            blocks = [m.transformer.h for m in models]
            n_layers = len(blocks[0])
            tr = model.transformer
            self.eps = [(blk.ln_1.eps, blk.ln_2.eps) for blk in tr.h] + [tr.ln_f.eps]
            self.wte = st(lambda m: m.transformer.wte.weight).reshape(-1, cfg.n_embd)
            self.wpe = st(lambda m: m.transformer.wpe.weight).reshape(-1, cfg.n_embd)
            self.lnf = (st(lambda m: m.transformer.ln_f.weight, True), st(lambda m: m.transformer.ln_f.bias, True))
        else:
            a0 = model.model.layers[0].self_attn
            self.H, self.KV, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, a0.head_dim
            self.act = _ACTS[cfg.hidden_act]
            n_layers = len(model.model.layers)
            # cos/sin of every position this decoder can see, from the model's own rotary module
            # (equal configurations give equal rotary tables)
            pos = torch.arange(capacity, device=self.device)[None]
            cos, sin = model.model.rotary_emb(torch.empty(0, dtype=self.dtype, device=self.device), pos)
            self.cos, self.sin = cos[0], sin[0]  # (capacity, head_dim)
            self.wte = st(lambda m: m.model.embed_tokens.weight).reshape(-1, cfg.hidden_size)
            self.normf = (st(lambda m: m.model.norm.weight, True), model.model.norm.variance_epsilon)
        self.vocab = cfg.vocab_size
        # row offsets into the stacked embedding tables: agent n's rows index table n
        self.row_agent = torch.arange(N, device=self.device).repeat_interleave(batch)[:, None]
        self.lm = (st(lambda m: m.lm_head.weight, t=True), st(lambda m: m.lm_head.bias, True))
        rows = N * batch
        # one buffer per layer: [keys, values] x (rows, kv heads, capacity, head_dim)
        self.kv = [torch.empty(2, rows, self.KV, capacity, self.hd, dtype=self.dtype, device=self.device) if cache else None
                   for _ in range(n_layers)]
        # per layer, the models' own parameter tensors (views for one model; the decoder lives
        # for one sampling call) and its cache views
        self.layers = []
        for i, kv in enumerate(self.kv):
            if self.gpt2:
                def blk(m, i=i):
                    return m.transformer.h[i]

                self.layers.append((
                    st(lambda m: blk(m).ln_1.weight, True), st(lambda m: blk(m).ln_1.bias, True),
                    st(lambda m: blk(m).attn.c_attn.weight), st(lambda m: blk(m).attn.c_attn.bias, True),
                    st(lambda m: blk(m).attn.c_proj.weight), st(lambda m: blk(m).attn.c_proj.bias, True),
                    st(lambda m: blk(m).ln_2.weight, True), st(lambda m: blk(m).ln_2.bias, True),
                    st(lambda m: blk(m).mlp.c_fc.weight), st(lambda m: blk(m).mlp.c_fc.bias, True),
                    st(lambda m: blk(m).mlp.c_proj.weight), st(lambda m: blk(m).mlp.c_proj.bias, True),
                    self.eps[i][0], self.eps[i][1], tr.h[i].attn.scaling, kv, *(kv if cache else (None, None)),
                ))
            else:
                def lay(m, i=i):
                    return m.model.layers[i]

                L0 = model.model.layers[i]
                a0 = L0.self_attn
                qwen3 = type(model).__name__ == "Qwen3ForCausalLM"
                qk_norm = None
                if qwen3:
                    qk_norm = (st(lambda m: lay(m).self_attn.q_norm.weight, True).unsqueeze(1), a0.q_norm.variance_epsilon,
                               st(lambda m: lay(m).self_attn.k_norm.weight, True).unsqueeze(1), a0.k_norm.variance_epsilon)
                self.layers.append((
                    st(lambda m: lay(m).input_layernorm.weight, True), L0.input_layernorm.variance_epsilon,
                    st(lambda m: lay(m).self_attn.q_proj.weight, t=True), st(lambda m: lay(m).self_attn.q_proj.bias, True),
                    st(lambda m: lay(m).self_attn.k_proj.weight, t=True), st(lambda m: lay(m).self_attn.k_proj.bias, True),
                    st(lambda m: lay(m).self_attn.v_proj.weight, t=True), st(lambda m: lay(m).self_attn.v_proj.bias, True),
                    qk_norm,
                    st(lambda m: lay(m).self_attn.o_proj.weight, t=True), st(lambda m: lay(m).self_attn.o_proj.bias, True),
                    st(lambda m: lay(m).post_attention_layernorm.weight, True), L0.post_attention_layernorm.variance_epsilon,
                    st(lambda m: lay(m).mlp.gate_proj.weight, t=True), st(lambda m: lay(m).mlp.gate_proj.bias, True),
                    st(lambda m: lay(m).mlp.up_proj.weight, t=True), st(lambda m: lay(m).mlp.up_proj.bias, True),
                    st(lambda m: lay(m).mlp.down_proj.weight, t=True), st(lambda m: lay(m).mlp.down_proj.bias, True),
                    a0.scaling, kv, *(kv if cache else (None, None)),
                ))
        self.valid: torch.Tensor | None = None  # (rows, capacity) key mask when the prompts are padded
        self.len = 0

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor) -> torch.Tensor:
        R, L = input_ids.shape
        if R != self.N * self.B or L > self.cap:
            raise ValueError(f"prefill of {tuple(input_ids.shape)} does not fit {self.N} x {self.B} rows, capacity {self.cap}")
        mask = None
        if attention_mask is not None:
            self.valid = torch.ones(R, self.cap, dtype=torch.bool, device=input_ids.device)
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

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor, keep: int) -> torch.Tensor:
        """Logits (rows, keep, V) of the last ``keep`` positions of whole sequences, differentiable.

        For the update: no key/value cache (build the decoder with ``cache=False``), the
        gradient flows to every model's own parameters (through the stacking). Padded rows
        (``attention_mask`` not None) are masked as in :meth:`prefill`.
        """
        R, L = input_ids.shape
        mask = None
        if attention_mask is not None:
            causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
            mask = ((causal & attention_mask.bool()[:, None, :]) | torch.eye(L, dtype=torch.bool, device=input_ids.device))[:, None]
        self.len = 0
        return self._forward(input_ids, position_ids, mask, keep=keep)

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x (N, rows, in) @ w (N, in, out) [+ b (N, 1, out)]: one batched product for all agents."""
        return torch.bmm(x, w) if b is None else torch.baddbmm(b, x, w)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask, keep: int = 0) -> torch.Tensor:
        """Last position's logits (rows, V) with the cache; with ``keep`` > 0 the last ``keep``
        positions' (rows, keep, V) of whole sequences, without the cache (training)."""
        R, L = ids.shape
        N, B = self.N, self.B
        s, e = self.len, self.len + L
        H, KV, hd = self.H, self.KV, self.hd
        is_causal = mask is None and L > 1  # only the prefill (s = 0) has L > 1
        gqa = KV != H
        sdpa, act, lin = F.scaled_dot_product_attention, self.act, self._lin
        ln = F.layer_norm
        if self.gpt2:
            D = self.wte.shape[-1]
            shape = (D,)
            h = F.embedding(ids + self.row_agent * self.vocab, self.wte) + F.embedding(pos + self.row_agent * (self.wpe.shape[0] // N), self.wpe)
            h = h.view(N, B * L, D)
            for ln1w, ln1b, aw, ab, pw, pb, ln2w, ln2b, fw, fb, mw, mb, e1, e2, scale, kv, kall, vall in self.layers:
                x = torch.addcmul(ln1b, ln(h, shape, None, None, e1), ln1w)
                qkv = torch.baddbmm(ab, x, aw).view(R, L, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, rows, H, L, hd)
                if keep:
                    att = sdpa(qkv[0], qkv[1], qkv[2], attn_mask=mask, is_causal=is_causal, scale=scale)
                else:
                    kv[:, :, :, s:e] = qkv[1:]
                    att = sdpa(qkv[0], kall[:, :, :e], vall[:, :, :e], attn_mask=mask, is_causal=is_causal, scale=scale)
                h = torch.baddbmm(h + pb, att.transpose(1, 2).reshape(N, B * L, D), pw)
                x = torch.addcmul(ln2b, ln(h, shape, None, None, e2), ln2w)
                h = torch.baddbmm(h + mb, act(torch.baddbmm(fb, x, fw)), mw)
            last = h.view(N, B, L, D)[:, :, -keep:].reshape(N, -1, D) if keep else h.view(N, B, L, D)[:, :, -1]
            last = torch.addcmul(self.lnf[1], ln(last, shape, None, None, self.eps[-1]), self.lnf[0])
        else:
            D = self.wte.shape[-1]
            h = F.embedding(ids + self.row_agent * self.vocab, self.wte).view(N, B * L, D)
            cos = F.embedding(pos, self.cos)[:, None]  # (rows, 1, L, hd)
            sin = F.embedding(pos, self.sin)[:, None]
            for (n1w, n1e, qw, qb, kw, kb, vw, vb, qk_norm, ow, ob, n2w, n2e, gw, gb, uw, ub, dw, db, scale, _kv, kall,
                 vall) in self.layers:
                x = _rms(h, n1w, n1e)
                q = lin(x, qw, qb).view(N, B * L, H, hd)
                k = lin(x, kw, kb).view(N, B * L, KV, hd)
                if qk_norm is not None:  # Qwen3: RMSNorm of every head before the rotation
                    q, k = _rms(q, qk_norm[0], qk_norm[1]), _rms(k, qk_norm[2], qk_norm[3])
                qk = _rotate(torch.cat((q, k), 2).view(R, L, H + KV, hd).transpose(1, 2), cos, sin)  # (rows, H + KV, L, hd)
                v = lin(x, vw, vb).view(R, L, KV, hd).transpose(1, 2)
                if keep:
                    k_all, v_all = qk[:, H:], v
                else:
                    kall[:, :, s:e] = qk[:, H:]
                    vall[:, :, s:e] = v
                    k_all, v_all = kall[:, :, :e], vall[:, :, :e]
                att = sdpa(qk[:, :H], k_all, v_all, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)
                h = h + lin(att.transpose(1, 2).reshape(N, B * L, H * hd), ow, ob)
                x = _rms(h, n2w, n2e)
                h = h + lin(act(lin(x, gw, gb)) * lin(x, uw, ub), dw, db)
            last = h.view(N, B, L, D)[:, :, -keep:].reshape(N, -1, D) if keep else h.view(N, B, L, D)[:, :, -1]
            last = _rms(last, self.normf[0], self.normf[1])
        self.len = e
        out = lin(last, *self.lm)
        return out.reshape(R, keep, -1) if keep else out.reshape(R, -1)
