"""``train(cfg) -> MAGRPOResult``: a MAGRPO run on a toy task with tiny models, through the core.

Writes the run directory (config.json, metrics.jsonl + TensorBoard, checkpoints with every
agent's weights and AdamW state plus RNG state, figures, summary.json, report.md, and the
final agents as ``model/agent_<i>/`` reloadable with ``from_pretrained``). ``resume``
continues from the newest checkpoint and draws the same samples as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auxfn.core.config import check_choice, check_positive, check_range
from auxfn.magrpo.config import MAGRPOConfig

__all__ = ["ModelConfig", "MAGRPOResult", "TrainConfig", "build", "evaluate_run", "train"]


@dataclass(frozen=True)
class ModelConfig:
    """The tiny randomly initialised causal LM every agent starts from (one seed per agent)."""

    arch: str = "llama"
    """llama or gpt2."""
    hidden_size: int = 64
    """Width."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 2
    """Attention heads."""

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ("llama", "gpt2"))
        check_range("hidden_size", self.hidden_size, 8)
        check_range("num_layers", self.num_layers, 1)
        check_range("num_heads", self.num_heads, 1)
        if self.hidden_size % self.num_heads:
            from auxfn.core.errors import ConfigError

            raise ConfigError(f"config field 'hidden_size' = {self.hidden_size} must be divisible by num_heads = {self.num_heads}")


@dataclass(frozen=True)
class TrainConfig:
    """A MAGRPO run on a toy cooperative task."""

    task: str = "length-ratio"
    """length-ratio, coop-sum, aux-code or aux-code-mt (the last needs trainer.num_turns=2)."""
    ratio: float = 2.0
    """Target length ratio len(c2)/len(c1) of the length-ratio task."""
    trainer: MAGRPOConfig = MAGRPOConfig(
        num_generations=8, max_completion_length=16, learning_rate=3e-3, temperature=1.0, top_p=1.0, max_steps=60
    )
    """Trainer hyper-parameters."""
    model: ModelConfig = ModelConfig()
    """Agent architecture."""
    eval_items: int = 16
    """Eval-set items scored before and after training."""
    eval_samples: int = 4
    """Sampled joint actions per eval item (mean reward over them)."""
    checkpoint_every: int = 20
    """Steps between checkpoints."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    threads: int = 1
    """torch CPU threads (tiny models run fastest on one; 0 = torch's default)."""
    warmup_steps: int = 0
    """Supervised warm-up steps per agent on the task's template programs before MAGRPO (0 = none)."""
    warmup_match: float = 0.5
    """Fraction of warm-up templates that are the item's intended solution (the rest: random templates)."""
    warmup_lr: float = 3e-3
    """AdamW learning rate of the warm-up."""

    def __post_init__(self) -> None:
        from auxfn.magrpo.tasks import TASKS

        check_choice("task", self.task, TASKS)
        check_positive("ratio", self.ratio)
        check_range("eval_items", self.eval_items, 1)
        check_range("eval_samples", self.eval_samples, 1)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        check_range("threads", self.threads, 0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("warmup_match", self.warmup_match, 0, 1)
        check_positive("warmup_lr", self.warmup_lr)
        from auxfn.core.errors import ConfigError

        if self.trainer.num_agents != 2:
            raise ConfigError(f"config field 'trainer.num_agents' = {self.trainer.num_agents}: the toy tasks have 2 roles")
        multi = self.task == "aux-code-mt"
        if self.trainer.num_turns > 1 and not multi:
            raise ConfigError(f"config field 'trainer.num_turns' = {self.trainer.num_turns}: task {self.task!r} is single-turn (use aux-code-mt)")
        if multi and self.trainer.num_turns < 2:
            raise ConfigError("config field 'trainer.num_turns' = 1: task 'aux-code-mt' needs num_turns >= 2")
        if self.warmup_steps and self.task not in ("aux-code", "aux-code-mt", "coop-sum"):
            raise ConfigError(f"config field 'warmup_steps' = {self.warmup_steps}: task {self.task!r} has no warm-up templates")


@dataclass
class MAGRPOResult:
    run_dir: Path
    summary: dict[str, Any]
    trainer: Any = field(repr=False, default=None)


def build(cfg: TrainConfig, agents: list[Any] | None = None):
    """Tokenizer, task and trainer of ``cfg`` (fresh tiny agents unless ``agents`` is given)."""
    import torch

    from auxfn.core.seeding import resolve_device
    from auxfn.magrpo.tasks import get_task
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
    from auxfn.magrpo.trainer import MAGRPOTrainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = char_tokenizer()
    task = get_task(cfg.task, seed=cfg.trainer.seed, ratio=cfg.ratio)
    if agents is None:
        m = cfg.model
        agents = [
            tiny_causal_lm(tok, arch=m.arch, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads, seed=1000 * cfg.trainer.seed + i)
            for i in range(cfg.trainer.num_agents)
        ]
    device = resolve_device(cfg.device)
    trainer = MAGRPOTrainer(
        [a.to(device) for a in agents], cfg.trainer, task.train, task.reward, task.formatters,
        processing_class=tok, eval_dataset=task.eval[: cfg.eval_items], external_transition=task.transition,
    )
    return tok, task, trainer


def _eval(trainer: Any, cfg: TrainConfig) -> float:
    return trainer.evaluate(greedy=False, num_samples=cfg.eval_samples)["eval/reward"]


def train(cfg: TrainConfig, *, out: str | Path | None = None, resume: str | Path | None = None, quiet: bool = True) -> MAGRPOResult:
    from auxfn.core.checkpoint import load_checkpoint, save_checkpoint
    from auxfn.core.runs import Run, stop_at_step_boundary
    from auxfn.core.seeding import seed_everything

    seed_everything(cfg.trainer.seed)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tok, task, trainer = build(cfg)
    modules = {f"agent_{i}": a for i, a in enumerate(trainer.agents)}
    optims = {f"agent_{i}": o for i, o in enumerate(trainer.optimizers)}
    if cfg.warmup_steps and trainer.ref_models:  # the KL reference is the warmed-up pair: checkpointed with the run
        modules.update({f"reference_{i}": r for i, r in enumerate(trainer.ref_models)})
    if resume is not None:
        ck = load_checkpoint(resume, modules, optimizers=optims, config=cfg, ignore_fields=("trainer.max_steps", "checkpoint_every"))
        run = Run.resume(resume, ck.step, config=cfg, quiet=quiet)
        trainer.state.update(step=ck.step, cursor=int(ck.state["cursor"]))
        eval_before = float(ck.state["eval_before"])
        extra = dict(ck.state.get("warmup", {}))
    else:
        run = Run.create("magrpo", cfg, name=cfg.task, out=out, quiet=quiet)
        extra = run_warmup(cfg, tok, task, trainer)
        eval_before = _eval(trainer, cfg)
    t0 = time.perf_counter()
    start = trainer.state["step"]
    with run, run.progress(cfg.trainer.max_steps, f"magrpo {cfg.task}", initial=start) as bar:
        with stop_at_step_boundary() as stop:  # Ctrl-C: stop after the current step, checkpoint there
            while trainer.state["step"] < cfg.trainer.max_steps:
                metrics = trainer.step()
                step = trainer.state["step"]
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    raise run.diverged(bad[0], step)
                run.log(step, metrics)
                bar.update(1)
                if step % cfg.trainer.logging_steps == 0:
                    bar.set_postfix(reward=f"{metrics['reward']:.3f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.trainer.max_steps or stop.requested:
                    save_checkpoint(
                        run.path, step, modules, optimizers=optims, config=cfg,
                        state={"cursor": trainer.state["cursor"], "eval_before": eval_before, "warmup": extra}, keep_last=2,
                    )
                if stop.requested and step < cfg.trainer.max_steps:  # Ctrl-C: stopped at this step, checkpoint written
                    raise run.interrupted(step)
        seconds = time.perf_counter() - t0
        eval_after = _eval(trainer, cfg)
        trainer.save_model(run.path / "model")
        rows = run.metrics()
        rewards = [r["reward"] for r in rows]
        k = max(1, min(10, len(rewards) // 3))
        summary = {
            "task": cfg.task,
            "steps": trainer.state["step"],
            "eval_reward_before": eval_before,
            "eval_reward_after": eval_after,
            "train_reward_first": sum(rewards[:k]) / k,
            "train_reward_last": sum(rewards[-k:]) / k,
            "max_reward": task.max_reward,
            "seconds_per_step": seconds / max(1, trainer.state["step"] - start),
            **extra,
        }
        run.write_summary(summary)
        fig = reward_figure(rows, eval_before, eval_after, run.figures_dir)
        run.write_report(f"MAGRPO on {cfg.task}", summary, figures=[fig])
    return MAGRPOResult(run.path, summary, trainer)


def run_warmup(cfg: TrainConfig, tok: Any, task: Any, trainer: Any) -> dict[str, float]:
    """The supervised warm-up of ``cfg`` (if any); returns its figures for the summary.

    ``eval_reward_init`` is the eval reward of the random-init agents; for the coding tasks
    also the valid-code rate of each agent before and after the warm-up.
    """
    if not cfg.warmup_steps:
        return {}
    from auxfn.magrpo import codetask

    code = cfg.task.startswith("aux-code")
    items = task.eval[: cfg.eval_items]
    out: dict[str, float] = {"eval_reward_init": _eval(trainer, cfg)}

    def rates(tag: str) -> None:
        for i, role in enumerate(("aux", "main")):
            out[f"valid_code_rate/agent_{i}/{tag}"] = codetask.valid_code_rate(trainer.agent(i), tok, items, role, trainer.args, cfg.eval_samples)

    if code:
        rates("init")
    pairs = task.warmup_data(4096, cfg.trainer.seed, cfg.warmup_match)
    losses = codetask.warmup([trainer.agent(i) for i in range(2)], tok, pairs, steps=cfg.warmup_steps, lr=cfg.warmup_lr, seed=cfg.trainer.seed)
    for i, v in enumerate(losses):
        out[f"warmup_loss/agent_{i}"] = v
    if code:
        rates("warmup")
    trainer.reset_reference()  # beta > 0: KL to the warmed-up agents, not to their random init
    return out


def reward_figure(rows: list[dict[str, Any]], before: float, after: float, folder: Path) -> Path:
    from auxfn.core.plotting import save_figure, subplots

    steps = [r["step"] for r in rows]
    rewards = [r["reward"] for r in rows]
    w = 10
    smooth = [sum(rewards[max(0, i - w + 1) : i + 1]) / len(rewards[max(0, i - w + 1) : i + 1]) for i in range(len(rewards))]
    fig, ax = subplots(width=5.0)
    ax.plot(steps, rewards, alpha=0.3, label="joint reward (per step)")
    ax.plot(steps, smooth, label=f"moving mean ({w})")
    if steps:
        ax.scatter([0, steps[-1]], [before, after], color="k", zorder=3, label="eval (held-out prompts)")
    ax.set(xlabel="step", ylabel="joint reward", title="MAGRPO training")
    ax.legend()
    return save_figure(fig, folder, "reward")


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Reload a run's final agents (``model/agent_<i>``) and recompute its eval reward and figure."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from auxfn.core.config import from_dict
    from auxfn.core.errors import UserError
    from auxfn.core.runs import Run
    from auxfn.core.seeding import seed_everything

    hf_logging.disable_progress_bar()
    run = Run.open(run_dir)
    cfg = from_dict(TrainConfig, run.metadata["config"])
    folders = [run.path / "model" / f"agent_{i}" for i in range(cfg.trainer.num_agents)]
    if not all(f.is_dir() for f in folders):
        raise UserError(f"{run.path} has no finished agents under model/ (train it to the end first)")
    seed_everything(cfg.trainer.seed + 1)
    agents = [AutoModelForCausalLM.from_pretrained(f) for f in folders]
    _, _, trainer = build(cfg, agents)
    out = {"eval_reward": _eval(trainer, cfg), "eval_reward_greedy": trainer.evaluate()["eval/reward"]}
    summary = run.summary()
    reward_figure(run.metrics(), summary.get("eval_reward_before", float("nan")), out["eval_reward"], run.figures_dir)
    (run.path / "eval.json").write_text(__import__("json").dumps(out, indent=2) + "\n")
    return out
