"""Token masks, batched log-probs and the MAGRPO policy loss (pure functions of tensors).

For agent i with completions y^(k) of prompt x and advantages A_k (notes §3.1, §3.4):

    L_i = -(1/G) sum_k A_k * sum_t log pi_i(y^(k)_t | x, y^(k)_<t)         (sequence_sum, paper)

only over completion tokens up to and including the first EOS (the reference library
also trains on the padding after EOS). With ``num_iterations > 1`` (``old_logps`` given) the per-token term
becomes the clipped surrogate min(rho_t A, clip(rho_t, 1-eps, 1+eps) A), rho_t =
pi/pi_old; at the first iteration rho = 1 and the gradient equals the REINFORCE one.
With beta > 0 the per-token KL estimate exp(q - p) - (q - p) - 1 (p = log pi, q = log
pi_ref, TRL's k3) is subtracted from the surrogate.
"""

from __future__ import annotations

import inspect

import torch

__all__ = ["completion_mask", "policy_loss", "token_logprobs", "token_logprobs_joint"]


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(B, T) int mask: 1 on tokens up to and including the first ``eos_token_id``, 0 after."""
    if completion_ids.ndim != 2:
        raise ValueError(f"completion_ids must have shape (batch, length), got {tuple(completion_ids.shape)}")
    is_eos = completion_ids == eos_token_id
    T = completion_ids.shape[1]
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], T, dtype=torch.long))
    return (torch.arange(T, device=completion_ids.device)[None, :] <= first[:, None]).long()


_KEEP: dict[type, bool] = {}


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    get = getattr(model, "get_base_model", None)  # peft wrappers forward the argument
    base = get() if callable(get) else model
    base = getattr(base, "module", base)  # DDP
    cls = type(base)
    if cls not in _KEEP:  # inspect.signature costs more than a tiny model's forward; once per class
        try:
            _KEEP[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            _KEEP[cls] = False
    return _KEEP[cls]


def token_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    comp_mask: torch.Tensor,
) -> torch.Tensor:
    """log pi(y_t | x, y_<t) for every completion token, (B, T), zero where ``comp_mask`` is 0.

    Prompts are left-padded (B, P), completions right-padded (B, T); one batched forward
    pass. Position ids follow the attention mask, as in generation with left padding.

    Two savings, neither of which changes a kept log-prob: when no prompt is padded
    (the trainer's usual case: one prompt, G completions) no attention mask is passed, so
    the model takes its causal fast path (right padding after a completion cannot reach
    earlier positions through causal attention); and the LM head runs only on the T
    positions that predict completion tokens (``logits_to_keep``), not on the prompt.
    """
    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != comp_mask.shape:
        raise ValueError("prompt_ids/prompt_mask and completion_ids/comp_mask must have equal shapes")
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(f"prompt batch {prompt_ids.shape[0]} != completion batch {completion_ids.shape[0]}")
    T = completion_ids.shape[1]
    ids = torch.cat([prompt_ids, completion_ids], 1)
    kwargs: dict = {}
    if not bool(prompt_mask.bool().all()):
        attn = torch.cat([prompt_mask, comp_mask], 1)
        kwargs = dict(attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0))
    if _takes_logits_to_keep(model):
        logits = model(input_ids=ids, logits_to_keep=T + 1, **kwargs).logits[:, :-1]
    else:
        logits = model(input_ids=ids, **kwargs).logits[:, prompt_ids.shape[1] - 1 : -1]
    if logits.dtype not in (torch.float32, torch.float64):  # half precision: softmax in float32
        logits = logits.float()
    logp = torch.log_softmax(logits, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return logp * comp_mask


def token_logprobs_joint(
    models: list[torch.nn.Module],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    comp_mask: torch.Tensor,
    *,
    check: bool = True,
) -> torch.Tensor:
    """:func:`token_logprobs` of several models at once, rows agent-major (model i: rows
    ``[i * B/N, (i + 1) * B/N)``), in one stacked forward
    (:meth:`auxfn.magrpo.fastdecode.FastDecoder.logits`; needs
    :func:`auxfn.magrpo.fastdecode.joint_refusal` to return None). The gradient reaches
    every model's own parameters; one backward of the sum of the agents' losses gives every
    agent the gradient of its own loss (their parameters are disjoint).
    """
    from auxfn.magrpo.fastdecode import FastDecoder

    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != comp_mask.shape:
        raise ValueError("prompt_ids/prompt_mask and completion_ids/comp_mask must have equal shapes")
    R, T = completion_ids.shape
    if R % len(models):
        raise ValueError(f"{R} rows cannot be split evenly over {len(models)} models")
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attn = None
    pos = torch.arange(ids.shape[1], device=ids.device).expand(R, -1)
    if not bool(prompt_mask.bool().all()):
        attn = torch.cat([prompt_mask, comp_mask], 1)
        pos = (attn.cumsum(1) - 1).clamp(min=0)
    dec = FastDecoder(models, R // len(models), ids.shape[1], cache=False, check=check)  # check=False: the caller has just checked
    logits = dec.logits(ids, attn, pos, keep=T + 1)[:, :-1]
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    logp = torch.log_softmax(logits, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return logp * comp_mask


def policy_loss(
    logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    aggregation: str = "sequence_sum",
) -> dict[str, torch.Tensor]:
    """The loss of one agent's batch: ``{"total", "pg", "kl", "clip_frac"}``.

    logps, mask, old_logps, ref_logps: (B, T); advantages: (B,).
    """
    B, T = logps.shape
    if mask.shape != (B, T) or advantages.shape != (B,):
        raise ValueError(f"mask must be ({B}, {T}) and advantages ({B},), got {tuple(mask.shape)} and {tuple(advantages.shape)}")
    m = mask.to(logps.dtype)
    A = advantages.to(logps.dtype)[:, None]
    if old_logps is None:
        # on-policy (one gradient step): the REINFORCE term A * log pi; same gradient as the
        # ratio form at rho = 1, and its value is the paper's loss
        ratio = torch.ones_like(logps)
        per_token = A * logps
    else:
        ratio = torch.exp(logps - old_logps)
        per_token = torch.minimum(ratio * A, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * A)
    kl = torch.zeros_like(logps)
    if beta > 0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        d = ref_logps - logps
        kl = torch.exp(d) - d - 1
        per_token = per_token - beta * kl
    per_token = per_token * m
    lengths = m.sum(1).clamp(min=1)
    if aggregation == "sequence_sum":
        objective = per_token.sum(1).mean()
    elif aggregation == "sequence_mean":
        objective = (per_token.sum(1) / lengths).mean()
    elif aggregation == "token_mean":
        objective = per_token.sum() / m.sum().clamp(min=1)
    else:
        raise ValueError(f"aggregation must be sequence_sum, sequence_mean or token_mean, got {aggregation!r}")
    with torch.no_grad():
        mean_kl = (kl * m).sum() / m.sum().clamp(min=1)
        clip_frac = (((ratio - 1).abs() > epsilon).to(m.dtype) * m).sum() / m.sum().clamp(min=1)
    return {"total": -objective, "pg": -objective.detach(), "kl": mean_kl, "clip_frac": clip_frac}
