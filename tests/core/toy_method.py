"""A throwaway method used only by the tests: a tiny regression trained through the core.

It exercises what every real method does (config validation, run directory,
metrics, checkpoints with optimizer + scheduler + RNG state, resume, divergence,
figures, CLI registration, a demo) without shipping a placeholder in the package.
Loaded in subprocesses with ``AUXFN_PLUGINS=toy_method`` and ``PYTHONPATH`` set to
this folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auxfn.cli import presets_command, train_command
from auxfn.core.checkpoint import load_checkpoint, save_checkpoint
from auxfn.core.config import check_choice, check_positive, check_range
from auxfn.core.registry import DemoContext, DemoResult, Method, Preset
from auxfn.core.runs import Run
from auxfn.core.seeding import make_generator, seed_everything


@dataclass(frozen=True)
class ToyConfig:
    """Regress y = sin(3 x0) + x1 with a small MLP."""

    steps: int = 20
    """Optimizer steps."""
    lr: float = 0.01
    """Learning rate."""
    optimizer: str = "adam"
    """adam or sgd."""
    hidden: int = 16
    """Hidden width."""
    dropout: float = 0.1
    """Dropout probability (makes the torch RNG matter for resume)."""
    checkpoint_every: int = 5
    """Steps between checkpoints."""
    seed: int = 0
    """Seed."""

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1)
        check_positive("lr", self.lr)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_range("hidden", self.hidden, 1)
        check_range("dropout", self.dropout, 0, 1, high_open=True)
        check_range("checkpoint_every", self.checkpoint_every, 1)


@dataclass
class ToyResult:
    run_dir: Path
    summary: dict
    model: torch.nn.Module


def train(cfg: ToyConfig, *, out=None, resume=None, quiet: bool = True) -> ToyResult:
    seed_everything(cfg.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, cfg.hidden), torch.nn.Tanh(), torch.nn.Dropout(cfg.dropout), torch.nn.Linear(cfg.hidden, 1)
    )
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.7)
    gen = make_generator(cfg.seed + 1)
    if resume is not None:
        ck = load_checkpoint(
            resume, {"model": model}, optimizers={"opt": opt}, schedulers={"sched": sched},
            config=cfg, ignore_fields=("steps",), generators={"data": gen},
        )
        run, start = Run.resume(resume, ck.step, config=cfg, quiet=quiet), ck.step
    else:
        run, start = Run.create("toy", cfg, out=out, quiet=quiet), 0
    losses = []
    with run, run.progress(cfg.steps, "toy", initial=start) as bar:
        for step in range(start + 1, cfg.steps + 1):
            x = torch.randn(32, 2, generator=gen)
            jitter = torch.from_numpy(np.random.randn(32, 1)).float() * 0.01 * random.random()
            y = torch.sin(3 * x[:, :1]) + x[:, 1:] + jitter
            loss = torch.mean((model(x) - y) ** 2)
            if not torch.isfinite(loss):
                raise run.diverged("loss/total", step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            run.log(step, {"loss/total": loss, "lr": sched.get_last_lr()[0]})
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(
                    run.path, step, {"model": model}, optimizers={"opt": opt}, schedulers={"sched": sched},
                    config=cfg, generators={"data": gen}, keep_last=2,
                )
        summary = {"final_loss": losses[-1] if losses else None, "steps": cfg.steps}
        run.write_summary(summary)
        from auxfn.core.plotting import save_figure, subplots

        fig, ax = subplots()
        ax.plot([r["loss/total"] for r in run.metrics()])
        ax.set(xlabel="step", ylabel="loss", yscale="log")
        fig_path = save_figure(fig, run, "loss")
        run.write_report("toy regression", summary, figures=[fig_path])
    return ToyResult(run.path, summary, model)


PRESETS = {
    "quick": Preset("20 Adam steps", ToyConfig()),
    "long": Preset("200 Adam steps", ToyConfig(steps=200, checkpoint_every=50)),
}


def _demo(ctx: DemoContext) -> DemoResult:
    cfg = ToyConfig(steps=60 if ctx.quick else 200, seed=ctx.seed, checkpoint_every=1000)
    result = train(cfg, out=ctx.out_dir / "run", quiet=True)
    rows = result.run_dir / "metrics.jsonl"
    first = float(rows.read_text().splitlines()[0].split('"loss/total": ')[1].split(",")[0])
    last = result.summary["final_loss"]
    return DemoResult(
        shown="toy regression loss drops",
        headline=f"loss {first:.3f} -> {last:.3f}",
        figures=[result.run_dir / "figures" / "loss.png"],
        ok=last < first,
    )


METHOD = Method(
    name="toy",
    summary="a throwaway regression used by the tests",
    commands={
        "train": ("train the toy regression", train_command("toy", PRESETS, train)),
        "presets": ("list presets", presets_command(PRESETS)),
    },
    demo=_demo,
)
