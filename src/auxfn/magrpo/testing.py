"""Tiny causal LMs built from configs in code and a locally built character tokenizer.

Nothing here downloads anything: the tokenizer is a ``tokenizers`` WordLevel model over
single characters wrapped in ``PreTrainedTokenizerFast``, and the model is a randomly
initialised ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` of a few hundred thousand
parameters. The same trainer code runs hub models (e.g. Qwen) on a GPU.
"""

from __future__ import annotations

import string
from typing import Any

__all__ = ["DEFAULT_ALPHABET", "char_tokenizer", "tiny_causal_lm"]

DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + " .,:;()+-*=<>_#!?\n'\"[]"
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> Any:
    """A character-level ``PreTrainedTokenizerFast``: one token per character, pad/bos/eos/unk specials.

    Padding side is left (what batched generation needs).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    if any(len(c) != 1 for c in chars) or not chars:
        raise ValueError("alphabet must be a non-empty string of characters")
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character its own token
    tok.decoder = decoders.Fuse()  # join characters without separators
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    return fast


def tiny_causal_lm(
    tokenizer: Any,
    *,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    dropout: float | None = None,
) -> Any:
    """A randomly initialised causal LM sized for CPU tests, matching ``tokenizer``'s special tokens.

    ``dropout``: every dropout probability of the config (GPT-2: residual, embedding and
    attention; Llama: attention); None keeps the config defaults (GPT-2 0.1, Llama 0).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vocab = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "llama":
            cfg = LlamaConfig(
                vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate_size or 2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                max_position_embeddings=max_positions, tie_word_embeddings=False, **special,
                **({} if dropout is None else {"attention_dropout": dropout}),
            )
            model = LlamaForCausalLM(cfg)
        elif arch == "gpt2":
            drop = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
            cfg = GPT2Config(vocab_size=vocab, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_positions, **special, **drop)
            model = GPT2LMHeadModel(cfg)
        else:
            raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
