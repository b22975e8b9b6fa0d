"""``MAGRPOTrainer``: N Hugging Face causal LMs trained with one shared joint reward.

One step (notes §3.6): for each of ``prompts_per_step`` dataset items, build the episode
tree (every agent samples G completions of its own prompt in one batched ``generate``
call; joint actions are scored by the joint reward; turns > 1 come from the external
transition), compute returns bottom-up, turn each node's returns into per-agent credits
and group-relative advantages, then give every agent one AdamW step (or
``num_iterations`` clipped steps) on all of its completions in one batched forward pass.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auxfn.magrpo.advantages import group_advantages
from auxfn.magrpo.config import MAGRPOConfig
from auxfn.magrpo.joint import agent_credit
from auxfn.magrpo.losses import completion_mask, policy_loss, token_logprobs
from auxfn.magrpo.rewards import combine_rewards, make_reward_specs
from auxfn.magrpo.tree import Node, build_tree, compute_returns, iter_postorder

__all__ = ["MAGRPOTrainer", "disable_dropout", "generate_group", "generate_joint", "joint_generation_refusal"]


def generate_group(
    model: Any, tokenizer: Any, prompt: str, n: int, cfg: MAGRPOConfig, *, greedy: bool = False,
    generator: torch.Generator | None = None,
):
    """Sample ``n`` completions of ``prompt`` in one batched call.

    Returns (texts, prompt_ids (P,), completion_ids list of (T_k,) cut after the first EOS).
    This is the one function to swap for another generation backend (e.g. vLLM). The
    backend is ``cfg.generation_backend``: ``lean`` (:func:`auxfn.magrpo.sampling.lean_generate`,
    a cached decoding loop without ``generate``'s per-step overhead), ``generate`` (Hugging
    Face ``model.generate``), or ``auto`` (lean for the architectures it supports).
    """
    from auxfn.magrpo.sampling import lean_generate, lean_supported

    device = next(model.parameters()).device
    enc = tokenizer([prompt], return_tensors="pt", padding=True).to(device)
    eos = tokenizer.eos_token_id
    backend = getattr(cfg, "generation_backend", "auto")
    lean = backend == "lean" or (backend == "auto" and lean_supported(model))
    rows = 1 if greedy else n
    P = enc["input_ids"].shape[1]
    if lean:
        comp = lean_generate(
            model, enc["input_ids"].expand(rows, -1), enc["attention_mask"].expand(rows, -1),
            max_new_tokens=cfg.max_completion_length, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
            temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, greedy=greedy, generator=generator,
            suppress_tokens=getattr(getattr(model, "generation_config", None), "suppress_tokens", None),
        )
    else:
        if generator is not None:
            raise ValueError("generation_backend='generate' draws from torch's global RNG; a generator needs the lean backend")
        kwargs = dict(max_new_tokens=cfg.max_completion_length, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        if greedy:
            kwargs.update(do_sample=False, num_return_sequences=1, top_p=None, top_k=None, temperature=None)
        else:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None, num_return_sequences=n)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        comp = out[:, P:]
    prompt_ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].cpu()
    return _finish(comp, tokenizer, prompt_ids)


def _finish(comp: torch.Tensor, tokenizer: Any, prompt_ids: torch.Tensor):
    """(texts, prompt_ids, completion ids cut after the first EOS) of completions ``comp`` (rows, T)."""
    eos = tokenizer.eos_token_id
    if comp.shape[1] == 0:
        comp = torch.full((comp.shape[0], 1), eos, device=comp.device)
    mask = completion_mask(comp, eos)
    lengths = mask.sum(1).tolist()
    comp_cpu = comp.cpu()
    ids = [comp_cpu[k, : lengths[k]] for k in range(comp.shape[0])]
    texts = tokenizer.batch_decode(comp * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True)
    return texts, prompt_ids, ids


def joint_generation_refusal(models: Sequence[Any], tokenizers: Sequence[Any], cfg: MAGRPOConfig, *, check_models: bool = True) -> str | None:
    """None when :func:`generate_joint` can sample all agents in one stacked decoding loop, else why not.

    ``check_models=False`` leaves out :func:`auxfn.magrpo.fastdecode.joint_refusal` (the
    models themselves): :func:`generate_joint` checks them and falls back to one agent after
    the other."""
    from auxfn.magrpo.fastdecode import joint_refusal

    if len(models) < 2:
        return "one agent"
    if getattr(cfg, "generation_backend", "auto") == "generate":
        return "generation_backend='generate'"
    if len({id(m) for m in models}) != len(models):
        return "the agents share one model (adapters)"
    if len({(t.pad_token_id, t.eos_token_id) for t in tokenizers}) != 1:
        return "the tokenizers differ in pad or EOS token"
    sup = {tuple(getattr(getattr(m, "generation_config", None), "suppress_tokens", None) or ()) for m in models}
    if len(sup) != 1:
        return "the agents suppress different tokens"
    return joint_refusal(list(models)) if check_models else None


def generate_joint(models: Sequence[Any], tokenizers: Sequence[Any], prompts: Sequence[str], n: int, cfg: MAGRPOConfig):
    """Sample ``n`` completions of every agent's prompt in one decoding loop over all agents.

    The same result per agent as :func:`generate_group` (same models, same sampling
    settings; other random draws), but one stacked forward per token for all agents
    (:class:`auxfn.magrpo.fastdecode.FastDecoder`) where the models allow it (else one after
    the other); needs ``joint_generation_refusal(..., check_models=False)`` to return None
    (tokenizers, suppressed tokens, backend). Returns one (texts, prompt_ids,
    completion_ids) per agent.
    """
    from auxfn.magrpo.sampling import lean_generate

    device = next(models[0].parameters()).device
    encs = [tok([p])["input_ids"][0] for tok, p in zip(tokenizers, prompts)]
    P = max(len(e) for e in encs)
    pad, eos = tokenizers[0].pad_token_id, tokenizers[0].eos_token_id
    ids = torch.full((len(models) * n, P), pad, dtype=torch.long)
    mask = torch.zeros((len(models) * n, P), dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i * n : (i + 1) * n, P - len(e) :] = torch.as_tensor(e)
        mask[i * n : (i + 1) * n, P - len(e) :] = 1
    comp = lean_generate(  # checks the models once; where they cannot be stacked, one after the other
        list(models), ids.to(device), mask.to(device), max_new_tokens=cfg.max_completion_length, eos_token_id=eos, pad_token_id=pad,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
        suppress_tokens=getattr(getattr(models[0], "generation_config", None), "suppress_tokens", None),
    )
    return [_finish(comp[i * n : (i + 1) * n], tok, torch.as_tensor(e)) for i, (tok, e) in enumerate(zip(tokenizers, encs))]


def _grad_norm(params: list[torch.Tensor]) -> float:
    """Global L2 norm of the parameters' gradients (0 for none), without clipping; written out
    because ``torch.nn.utils.get_total_norm`` needs torch >= 2.6 and pyproject admits 2.4."""
    if not params:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` to 0, in place (``nn.Dropout`` modules and
    the float ``attention_dropout`` attribute of Llama-family attention modules)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def _pad_batch(prompts: list[torch.Tensor], comps: list[torch.Tensor], pad: int):
    """Left-pad prompts, right-pad completions; returns (p_ids, p_mask, c_ids, c_mask)."""
    B, P, T = len(prompts), max(len(p) for p in prompts), max(len(c) for c in comps)
    p_ids = torch.full((B, P), pad, dtype=torch.long)
    p_mask = torch.zeros((B, P), dtype=torch.long)
    c_ids = torch.full((B, T), pad, dtype=torch.long)
    c_mask = torch.zeros((B, T), dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, comps)):
        p_ids[b, P - len(p) :], p_mask[b, P - len(p) :] = p, 1
        c_ids[b, : len(c)], c_mask[b, : len(c)] = c, 1
    return p_ids, p_mask, c_ids, c_mask


class MAGRPOTrainer:
    """Train N agents with MAGRPO.

    - ``agents``: N ``PreTrainedModel``s (distinct objects) or model names (loaded with
      ``AutoModelForCausalLM.from_pretrained``, needs the hub or a local path);
    - ``train_dataset``: a sequence of dict items (a ``datasets.Dataset`` works);
    - ``reward_funcs``: one joint reward or a list (see :mod:`auxfn.magrpo.rewards`);
    - ``formatters``: one callable ``f(item) -> str`` per agent (its prompt);
    - ``processing_class``: one tokenizer or one per agent (default: loaded by model name);
    - ``external_transition(prompt=..., agent_completions=..., num_agents=...,
      prompt_history_per_agent=..., response_history_per_agent=...) -> list[str]``, the
      next prompt of every agent (required when ``num_turns > 1``).
    """

    def __init__(
        self,
        agents: Sequence[Any],
        args: MAGRPOConfig,
        train_dataset: Sequence[Mapping[str, Any]],
        reward_funcs: Callable | Sequence[Callable],
        formatters: Callable | Sequence[Callable],
        processing_class: Any = None,
        external_transition: Callable[..., list[str]] | None = None,
        eval_dataset: Sequence[Mapping[str, Any]] | None = None,
        peft_config: Any = None,
        reward_weights: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        agent_devices: Sequence[str | torch.device] | None = None,
        accelerator: Any = None,
    ):
        if not isinstance(args, MAGRPOConfig):
            raise TypeError(f"args must be a MAGRPOConfig, got {type(args).__name__}")
        self.args = args
        N = args.num_agents
        agents = list(agents)
        if len(agents) != N:
            raise ValueError(f"got {len(agents)} agents for num_agents={N}")
        self.shared = args.share_base_model
        if self.shared:
            if peft_config is None:
                raise ValueError("share_base_model=True needs a peft_config (one adapter per agent on one base model)")
            agents = agents[:1]  # every agent is an adapter on this one model
        if any(isinstance(a, str) for a in agents):
            from transformers import AutoModelForCausalLM

            agents = [AutoModelForCausalLM.from_pretrained(a) if isinstance(a, str) else a for a in agents]
        if len({id(a) for a in agents}) != len(agents):
            raise ValueError("agents must be distinct model objects (pass copies, not the same model twice)")
        if peft_config is not None:
            from peft import get_peft_model

            if self.shared:
                base = get_peft_model(agents[0], copy.deepcopy(peft_config), adapter_name="agent_0")
                for i in range(1, N):
                    base.add_adapter(f"agent_{i}", copy.deepcopy(peft_config))
                agents = [base] * N
            else:
                agents = [get_peft_model(a, copy.deepcopy(peft_config)) for a in agents]
        self.peft = peft_config is not None
        if accelerator is not None and device is not None:
            raise ValueError("pass either device or accelerator (the accelerator decides the device)")
        if accelerator is not None and self.shared:
            raise ValueError("accelerator with share_base_model=True is not supported (one model would be prepared N times)")
        self.accelerator = accelerator
        if accelerator is not None:
            device = accelerator.device
        self.device = torch.device(device) if device is not None else next(agents[0].parameters()).device
        if agent_devices is not None:
            if len(agent_devices) != N or self.shared:
                raise ValueError(f"agent_devices must list one device per agent ({N}) and needs separate models, got {list(agent_devices)}")
            self.devices = [torch.device(d) for d in agent_devices]
        else:
            self.devices = [self.device] * N
        self.agents = [a.to(d) for a, d in zip(agents, self.devices)] if not self.shared else [a.to(self.device) for a in agents]
        if args.disable_dropout:
            for a in {id(a): a for a in self.agents}.values():
                disable_dropout(a)
        formatters = [formatters] * N if callable(formatters) else list(formatters)
        if len(formatters) != N or not all(callable(f) for f in formatters):
            raise ValueError(f"formatters must be one callable per agent: expected {N}, got {len(formatters)}")
        self.formatters = formatters
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = [AutoTokenizer.from_pretrained(a.config._name_or_path) for a in self.agents]
        toks = list(processing_class) if isinstance(processing_class, (list, tuple)) else [processing_class] * N
        if len(toks) != N:
            raise ValueError(f"processing_class must be one tokenizer or {N}, got {len(toks)}")
        for t in toks:
            t.padding_side = "left"  # batched generation appends to the right end of every row
            if t.pad_token_id is None:
                t.pad_token = t.eos_token
        self.tokenizers = toks
        if args.num_turns > 1 and external_transition is None:
            raise ValueError(f"num_turns={args.num_turns} needs an external_transition")
        self.external_transition = external_transition
        self.reward_specs = make_reward_specs(reward_funcs, reward_weights)
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty")
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        # fused AdamW: one kernel for all parameters instead of a Python loop over them (torch's
        # default on CPU); with a 2-layer GPT-2 of width 64 the loop took 1.8 ms per agent and
        # step, fused 0.4 ms (min of 38 steps, one thread)
        self.optimizers = []
        for i in range(N):
            params = self._trainable(i)
            fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params) or None
            self.optimizers.append(torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay, fused=fused))
        if accelerator is not None:  # one (model, optimizer) pair per agent; DDP wraps each under accelerate launch
            for i in range(N):
                self.agents[i], self.optimizers[i] = accelerator.prepare(self.agents[i], self.optimizers[i])
        self.ref_models: list[Any] = []
        if args.beta > 0:
            # peft models: the reference is the same model with the adapter disabled (no copy)
            if peft_config is None:
                self.ref_models = [copy.deepcopy(a).eval().requires_grad_(False) for a in self.agents]
        self.state = {"step": 0, "cursor": 0}
        self.log_history: list[dict[str, float]] = []

    def reset_reference(self) -> None:
        """Take the agents' current weights as the KL reference (``beta > 0``), e.g. after a warm-up.

        Copies the weights into the frozen reference models in place. With peft agents the
        reference is the adapter-disabled base model, which a warm-up of the adapters does
        not change; this call then has nothing to copy.
        """
        with torch.no_grad():
            for i, ref in enumerate(self.ref_models):
                ref.load_state_dict(self.agent(i).state_dict())

    def _trainable(self, i: int) -> list[torch.nn.Parameter]:
        if self.shared:  # only agent i's adapter weights
            return [p for n, p in self.agents[i].named_parameters() if f".agent_{i}." in n]
        return [p for p in self.agents[i].parameters() if p.requires_grad]

    def agent(self, i: int) -> Any:
        """Agent i's model, with its adapter active when the agents share one base model."""
        model = self.agents[i]
        if self.accelerator is not None:  # generation and saving use the bare model, updates the prepared one
            return self.accelerator.unwrap_model(model)
        if self.shared:
            model.set_adapter(f"agent_{i}")
        return model

    # ------------------------------------------------------------------ sampling and rewards
    def _transition(self, item: Mapping[str, Any], joint: list[str], ph: list[list[str]], rh: list[list[str]]) -> list[str]:
        f = self.external_transition
        kwargs = dict(
            prompt=item.get("prompt"), agent_completions=joint, num_agents=self.args.num_agents,
            prompt_history_per_agent=ph, response_history_per_agent=rh,
        )
        params = inspect.signature(f).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
        if "item" in params:
            kwargs["item"] = item
        return f(**kwargs)

    def rollout(self, item: Mapping[str, Any]) -> Node:
        """The episode tree of one dataset item, returns filled in."""
        cfg = self.args
        prompts = [f(item) for f in self.formatters]

        models = [self.agent(i) for i in range(cfg.num_agents)]
        joint = not self.shared and joint_generation_refusal(models, self.tokenizers, cfg, check_models=False) is None

        def sample(cur: list[str], turn: int):
            texts, extra = [], {"prompt_ids": [], "completion_ids": []}
            if joint:  # all agents in one decoding loop
                outs = generate_joint(models, self.tokenizers, cur, cfg.num_generations, cfg)
            else:
                outs = [generate_group(self.agent(i), tok, cur[i], cfg.num_generations, cfg) for i, tok in enumerate(self.tokenizers)]
            for t, p_ids, c_ids in outs:
                texts.append(t)
                extra["prompt_ids"].append(p_ids)
                extra["completion_ids"].append(c_ids)
            return texts, extra

        components: list[dict[str, np.ndarray]] = []

        def reward(cur: list[str], joint: list[list[str]], turn: int) -> np.ndarray:
            J = len(joint[0])
            total, parts = combine_rewards(self.reward_specs, [[p] * J for p in cur], joint, item)
            components.append(parts)
            return total

        transition = (lambda j, ph, rh: self._transition(item, j, ph, rh)) if cfg.num_turns > 1 else None
        root = build_tree(
            prompts, sample, reward, num_turns=cfg.num_turns, G=cfg.num_generations, joint_mode=cfg.joint_mode,
            transition=transition, termination_threshold=cfg.termination_threshold,
        )
        nodes = list(_preorder(root))
        for node, parts in zip(nodes, components):  # build_tree scores nodes in pre-order
            node.extra["components"] = parts
        compute_returns(root, cfg.discount)
        return root

    # ------------------------------------------------------------------ one optimizer step
    def step(self) -> dict[str, float]:
        """One MAGRPO step on the next ``prompts_per_step`` items; returns the logged metrics."""
        cfg = self.args
        N = cfg.num_agents
        batch = []
        for _ in range(cfg.prompts_per_step):
            batch.append(self.train_dataset[self.state["cursor"] % len(self.train_dataset)])
            self.state["cursor"] += 1
        per_agent: list[dict[str, list]] = [{"p": [], "c": [], "a": []} for _ in range(N)]
        rewards, comp_means, turn_rewards = [], {}, {}
        for item in batch:
            root = self.rollout(item)
            for node in iter_postorder(root):
                credit = agent_credit(node.returns, node.combos, cfg.num_generations, cfg.cross_credit)
                for i in range(N):
                    adv = group_advantages(credit[i], cfg.advantage_mode, cfg.scale_rewards)
                    per_agent[i]["p"] += [node.extra["prompt_ids"][i]] * cfg.num_generations
                    per_agent[i]["c"] += node.extra["completion_ids"][i]
                    per_agent[i]["a"] += adv.tolist()
                turn_rewards.setdefault(node.turn, []).extend(node.rewards.tolist())
                for k, v in node.extra["components"].items():
                    comp_means.setdefault(k, []).extend(v.tolist())
            rewards.extend(root.rewards.tolist())
        metrics: dict[str, float] = {
            "reward": float(np.mean(rewards)),
            "reward_std": float(np.std(rewards)),
        }
        for k, v in comp_means.items():
            metrics[f"rewards/{k}/mean"] = float(np.mean(v))
        if cfg.num_turns > 1:
            for t, v in sorted(turn_rewards.items()):
                metrics[f"reward/turn_{t + 1}"] = float(np.mean(v))
        lengths = [len(c) for d in per_agent for c in d["c"]]
        metrics["completions/mean_length"] = float(np.mean(lengths))
        kls = []
        for a in self.agents:  # the update runs in train mode (the joint check's dropout test depends on it)
            a.train()
        outs = self._update_joint(per_agent) if self._joint_update_ok(per_agent) else None
        for i in range(N):
            out = outs[i] if outs is not None else self._update_agent(i, per_agent[i])
            metrics[f"loss/agent_{i}"] = out["loss"]
            metrics[f"grad_norm/agent_{i}"] = out["grad_norm"]
            kls.append(out["kl"])
        metrics["kl"] = float(np.mean(kls))
        self.state["step"] += 1
        self.log_history.append({"step": self.state["step"], **metrics})
        return metrics

    def _joint_update_ok(self, per_agent: list[dict[str, list]]) -> bool:
        """True when all agents can take their update through one stacked forward and backward.

        The paper's settings (one gradient step, beta = 0), separate models of one
        configuration that the fast forward computes exactly (no peft, no accelerate, no
        active dropout), the same pad token and the same number of completions per agent.
        """
        from auxfn.magrpo.fastdecode import joint_refusal

        cfg = self.args
        if cfg.num_agents < 2 or self.shared or self.peft or self.accelerator is not None or cfg.num_iterations != 1 or cfg.beta > 0:
            return False
        if len({t.pad_token_id for t in self.tokenizers}) != 1 or len({len(d["c"]) for d in per_agent}) != 1:
            return False
        if any(getattr(m, "gradient_checkpointing", False) is True for a in self.agents for m in a.modules()):
            return False  # the stacked forward keeps every activation: respect the memory choice
        return joint_refusal(list(self.agents)) is None  # the agents are in train mode (the update's mode)

    def _update_joint(self, per_agent: list[dict[str, list]]) -> list[dict[str, float]]:
        """Every agent's update from one stacked forward (:func:`auxfn.magrpo.losses.token_logprobs_joint`)
        and one backward of the sum of the agents' losses; then each agent's own clipping and AdamW step.

        Same gradients as one update per agent (their parameters are disjoint; tested equal in float64).
        """
        from auxfn.magrpo.losses import token_logprobs_joint

        cfg = self.args
        N = cfg.num_agents
        dev = self.devices[0]
        B = len(per_agent[0]["c"])
        p_ids, p_mask, c_ids, c_mask = (t.to(dev) for t in _pad_batch(
            [p for d in per_agent for p in d["p"]], [c for d in per_agent for c in d["c"]], self.tokenizers[0].pad_token_id))
        logps = token_logprobs_joint(list(self.agents), p_ids, p_mask, c_ids, c_mask, check=False)  # _joint_update_ok checked
        terms = []
        for i in range(N):
            rows = slice(i * B, (i + 1) * B)
            adv = torch.tensor(per_agent[i]["a"], dtype=torch.float32, device=dev)
            terms.append(policy_loss(logps[rows], c_mask[rows], adv, epsilon=cfg.epsilon, aggregation=cfg.loss_aggregation))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        torch.stack([t["total"] for t in terms]).sum().backward()
        outs = []
        for i in range(N):
            params = [p for p in self.agents[i].parameters() if p.grad is not None]
            if cfg.max_grad_norm > 0:
                gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            else:
                gn = _grad_norm(params)
            self.optimizers[i].step()
            outs.append({"loss": float(terms[i]["total"].detach()), "kl": float(terms[i]["kl"]), "grad_norm": gn})
        return outs

    def _update_agent(self, i: int, data: dict[str, list]) -> dict[str, float]:
        cfg = self.args
        model = self.agents[i] if self.accelerator is not None else self.agent(i)
        opt = self.optimizers[i]
        pad = self.tokenizers[i].pad_token_id
        dev = self.devices[i]
        p_ids, p_mask, c_ids, c_mask = (t.to(dev) for t in _pad_batch(data["p"], data["c"], pad))
        adv = torch.tensor(data["a"], dtype=torch.float32, device=dev)
        model.train()
        old = ref = None
        if cfg.num_iterations > 1:
            with torch.no_grad():
                old = token_logprobs(model, p_ids, p_mask, c_ids, c_mask)
        if cfg.beta > 0:
            with torch.no_grad():
                if self.ref_models:
                    ref = token_logprobs(self.ref_models[i], p_ids, p_mask, c_ids, c_mask)
                else:
                    with model.disable_adapter():
                        ref = token_logprobs(model, p_ids, p_mask, c_ids, c_mask)
        loss_v = kl_v = gn = 0.0
        for _ in range(cfg.num_iterations):
            logps = token_logprobs(model, p_ids, p_mask, c_ids, c_mask)
            terms = policy_loss(
                logps, c_mask, adv, old_logps=old, ref_logps=ref, beta=cfg.beta, epsilon=cfg.epsilon,
                aggregation=cfg.loss_aggregation,
            )
            opt.zero_grad(set_to_none=True)
            if self.accelerator is not None:
                self.accelerator.backward(terms["total"])
            else:
                terms["total"].backward()
            params = [p for p in model.parameters() if p.grad is not None]
            if cfg.max_grad_norm > 0:
                gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            else:
                gn = _grad_norm(params)
            opt.step()
            loss_v, kl_v = float(terms["total"].detach()), float(terms["kl"])
        return {"loss": loss_v, "kl": kl_v, "grad_norm": gn}

    # ------------------------------------------------------------------ public API
    def train(self, callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run up to ``max_steps`` steps (continuing from ``state['step']``); returns the log history."""
        while self.state["step"] < self.args.max_steps:
            metrics = self.step()
            if not all(math.isfinite(v) for v in metrics.values()):
                bad = next(k for k, v in metrics.items() if not math.isfinite(v))
                raise FloatingPointError(f"{bad} is not finite at step {self.state['step']}")
            if callback is not None:
                callback(self.state["step"], metrics)
        return self.log_history

    @torch.no_grad()
    def evaluate(self, dataset: Sequence[Mapping[str, Any]] | None = None, *, greedy: bool = True, num_samples: int = 1) -> dict[str, float]:
        """Mean joint reward of the agents on ``dataset`` (default: the eval set), turn by turn.

        Greedy decoding by default (one joint action per item); with ``greedy=False``,
        ``num_samples`` aligned samples per item.
        """
        data = self.eval_dataset if dataset is None else dataset
        if data is None or len(data) == 0:
            raise ValueError("evaluate needs a non-empty dataset (none given and no eval_dataset)")
        cfg = self.args
        n = 1 if greedy else num_samples
        per_turn: dict[int, list[float]] = {}
        parts_all: dict[str, list[float]] = {}
        for a in self.agents:
            a.eval()
        for item in data:
            cur = [f(item) for f in self.formatters]
            ph = [[] for _ in cur]
            rh = [[] for _ in cur]
            for turn in range(cfg.num_turns):
                comps = [generate_group(self.agent(i), t, cur[i], n, cfg, greedy=greedy)[0] for i, t in enumerate(self.tokenizers)]
                total, parts = combine_rewards(self.reward_specs, [[p] * n for p in cur], comps, item)
                per_turn.setdefault(turn, []).extend(total.tolist())
                for k, v in parts.items():
                    parts_all.setdefault(k, []).extend(v.tolist())
                if turn + 1 < cfg.num_turns:
                    joint = [c[0] for c in comps]
                    ph = [h + [p] for h, p in zip(ph, cur)]
                    rh = [h + [c] for h, c in zip(rh, joint)]
                    cur = self._transition(item, joint, ph, rh)
        out = {"eval/reward": float(np.mean(per_turn[cfg.num_turns - 1]))}
        for t, v in per_turn.items():
            out[f"eval/reward/turn_{t + 1}"] = float(np.mean(v))
        for k, v in parts_all.items():
            out[f"eval/rewards/{k}/mean"] = float(np.mean(v))
        return out

    def save_model(self, output_dir: str | Path) -> list[Path]:
        """Write ``agent_<i>/`` (``save_pretrained`` + tokenizer) per agent; returns the folders.

        Every folder loads with ``AutoModelForCausalLM.from_pretrained``: LoRA agents are
        saved merged into (a copy of) their base weights.
        """
        out = Path(output_dir)
        paths = []
        for i, t in enumerate(self.tokenizers):
            p = out / f"agent_{i}"
            model = self.agent(i)
            if self.peft:
                model = copy.deepcopy(model)
                if self.shared:
                    for j in range(len(self.agents)):
                        if j != i:
                            model.delete_adapter(f"agent_{j}")
                model = model.merge_and_unload()
            model.save_pretrained(p)
            t.save_pretrained(p)
            paths.append(p)
        return paths


def _preorder(node: Node):
    yield node
    for c in node.children:
        yield from _preorder(c)
