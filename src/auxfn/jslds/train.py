"""Co-training an RNN and its JSLDS: config, presets, ``train(cfg) -> JSLDSResult``, ``evaluate``.

Optimisation as in the official notebooks: Adam (b1 0.9, b2 0.999, eps 0.1), learning rate
``lr * lr_decay^step``, global-norm gradient clipping at 10, and a fresh synthetic batch at
every step. The plain RNN baseline is the same loop with ``w_jslds = w_fixed_point = w_approx = 0``
(the JSLDS recurrence is then not run at all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from auxfn.core.checkpoint import load_checkpoint, save_checkpoint
from auxfn.core.config import (
    ConfigError,
    check_choice,
    check_import_path,
    check_positive,
    check_range,
    from_dict,
    import_object,
)
from auxfn.core.errors import UserError
from auxfn.core.registry import Preset
from auxfn.core.runs import Run, stop_at_step_boundary
from auxfn.core.seeding import make_generator, resolve_device, seed_everything, torch_threads
from auxfn.jslds.analysis import relative_error
from auxfn.jslds.cells import GRUCell, VanillaRNNCell, cell_dims
from auxfn.jslds.losses import LossWeights, jslds_losses
from auxfn.jslds.model import JSLDS, Trajectories
from auxfn.jslds.tasks import ContextIntegrationTask, FlipFlopTask

__all__ = ["PRESETS", "JSLDSConfig", "JSLDSResult", "build_model", "build_task", "compile_loss", "evaluate", "load_run", "train"]


@dataclass(frozen=True)
class JSLDSConfig:
    """Co-train an RNN with its JSLDS on a synthetic task (Smith, Linderman & Sussillo 2021)."""

    task: str = "flipflop"
    """flipflop (3-bit memory, GRU in the paper) or context (context integration, vanilla tanh)."""
    task_mode: str = "official"
    """flipflop: official (pulses on 2/3 of steps) or described (pulse probability pulse_p); context: official (normal bias) or described (uniform bias)."""
    pulse_p: float = 0.3
    """Pulse probability per bit and step in the flip-flop's described mode."""
    n_bits: int = 3
    """Bits of the flip-flop task."""
    T: int = 25
    """Time steps per trial."""
    cell: str = "gru"
    """gru, vanilla-tanh or vanilla-relu."""
    n_state: int = 64
    """State size n of the RNN (and the width of the expansion net)."""
    expansion_layers: int = 2
    """Layers of the residual tanh expansion net E."""
    steps: int = 8000
    """Optimizer steps (one fresh batch each)."""
    batch_size: int = 64
    """Trials per batch."""
    lr: float = 0.02
    """Initial learning rate."""
    lr_decay: float = 0.9999
    """Learning rate multiplier per step."""
    adam_eps: float = 0.1
    """Adam epsilon (0.1 in the official code)."""
    clip: float = 10.0
    """Global gradient-norm clipping threshold."""
    w_rnn: float = 3.0
    """lambda_RNN, weight of the RNN's task loss."""
    w_jslds: float = 1.0
    """lambda_JSLDS, weight of the JSLDS's task loss."""
    w_fixed_point: float = 100.0
    """lambda_e, weight of (F(e, x*) - e)^2."""
    w_approx: float = 10.0
    """lambda_a, weight of (h - a)^2."""
    w_l2: float = 0.0
    """L2 penalty on all parameters."""
    log_every: int = 25
    """Steps between metric rows."""
    eval_every: int = 500
    """Steps between evaluations on a held-out batch."""
    eval_batch_size: int = 256
    """Trials in the held-out evaluation batch."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    seed: int = 0
    """Seed of the weights and of the data stream."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    threads: int = 1
    """CPU threads for torch during training (0 keeps torch's default). One thread is fastest for
    these small matrices, and far faster than two on a shared 2-core machine."""
    fused: bool = True
    """Built-in cells and expansion net: run each batch's whole sequence in one autograd Function with a
    hand-written backward (auxfn.jslds.fused; fastest, same values and gradients). False: per-step autograd."""
    native: bool = False
    """With fused (and not compile): run the whole-sequence path on the C++ kernel (auxfn.jslds.native;
    same values and gradients, faster). Compiled at first use (a C++ compiler and ninja: pip install
    auxfn[native]), cached in torch's extension directory; if the build fails, a warning and the
    Python Function."""
    compile: bool = False
    """Wrap the loss (model forward with per-step autograd, and its backward) in torch.compile; the first
    step then takes the compile time (reported as compile_seconds). Off by default: compiling takes
    minutes on 2 cores."""
    compile_wrapper: str = "cpp"
    """With compile: inductor's wrapper code around the generated kernels, "cpp" (C++, compiled once
    more; faster per step) or "python" (compiles in about half the time)."""
    cell_factory: str = ""
    """Your own cell: "package.module:callable", called as callable(n_state, n_input) -> an nn.Module
    F(h, x); recorded in the run so eval/analyze/resume rebuild it. Empty: the built-in `cell`."""
    task_factory: str = ""
    """Your own task: "package.module:callable", called with no arguments -> an object with n_input,
    n_output and sample(batch_size, generator); recorded like cell_factory. Empty: the built-in `task`."""

    def __post_init__(self) -> None:
        check_choice("task", self.task, ("flipflop", "context"))
        check_choice("task_mode", self.task_mode, ("official", "described"))
        check_range("pulse_p", self.pulse_p, 0, 1, low_open=True)
        check_range("n_bits", self.n_bits, 1, 64)
        check_range("T", self.T, 2, 100_000)
        check_choice("cell", self.cell, ("gru", "vanilla-tanh", "vanilla-relu"))
        check_range("n_state", self.n_state, 1, 100_000)
        check_range("expansion_layers", self.expansion_layers, 1, 64)
        check_choice("compile_wrapper", self.compile_wrapper, ("cpp", "python"))
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_positive("lr", self.lr)
        check_range("lr_decay", self.lr_decay, 0, 1, low_open=True)
        check_positive("adam_eps", self.adam_eps)
        check_positive("clip", self.clip)
        for name in ("w_rnn", "w_jslds", "w_fixed_point", "w_approx", "w_l2"):
            check_range(name, getattr(self, name), 0)
        if self.w_rnn == 0 and self.w_jslds == 0:
            raise ConfigError("config fields 'w_rnn' and 'w_jslds' are both 0: at least one task loss must count")
        for name in ("log_every", "eval_every", "eval_batch_size", "checkpoint_every"):
            check_range(name, getattr(self, name), 1)
        check_range("seed", self.seed, 0)
        check_choice("device", self.device, ("cpu", "cuda", "auto"))
        check_range("threads", self.threads, 0, 1024)
        for name in ("cell_factory", "task_factory"):
            check_import_path(name, getattr(self, name))
        if self.task == "flipflop" and self.T <= 5 and not self.task_factory:
            raise ConfigError(f"config field 'T' = {self.T} is out of range: allowed T > 5 for flipflop (5 settle steps)")

    @property
    def weights(self) -> LossWeights:
        return LossWeights(self.w_rnn, self.w_jslds, self.w_fixed_point, self.w_approx, self.w_l2)


_STANDARD = dict(w_rnn=1.0, w_jslds=0.0, w_fixed_point=0.0, w_approx=0.0)
_QUICK_FF = JSLDSConfig(steps=16000)
_QUICK_CTX = JSLDSConfig(task="context", cell="vanilla-tanh", lr=0.005, steps=8000, w_rnn=1.0, w_l2=1e-5, eval_every=1000, checkpoint_every=1000)
PRESETS: dict[str, Preset] = {
    "quick-flipflop": Preset("3-bit flip-flop, GRU n=64, batch 64, 16000 steps (about 10 minutes on an idle 2-core CPU)", _QUICK_FF),
    "quick-context": Preset("context integration, tanh n=64, batch 64, lr 0.005, 8000 steps", _QUICK_CTX),
    "standard-flipflop": Preset("plain GRU baseline for quick-flipflop (no JSLDS terms), 6000 steps",
                                replace(_QUICK_FF, steps=6000, **_STANDARD)),
    "standard-context": Preset("plain tanh RNN baseline for quick-context (no JSLDS terms), 12000 steps",
                               replace(_QUICK_CTX, steps=12000, **_STANDARD)),
    "paper-flipflop": Preset("the notebook's 3-bit run: GRU n=100, batch 256, 40k steps, lambda_RNN=3 (GPU)",
                             JSLDSConfig(n_state=100, batch_size=256, steps=40_000, eval_every=2000, checkpoint_every=2000, device="auto")),
    "paper-context": Preset("the notebook's context run: tanh n=128, batch 256, 50k steps, L2 1e-5 (GPU)",
                            replace(_QUICK_CTX, n_state=128, batch_size=256, lr=0.02, steps=50_000, eval_every=2000,
                                    checkpoint_every=2000, device="auto")),
    "standard-paper-flipflop": Preset("plain GRU at paper size (n=100, batch 256, 40k steps)",
                                      JSLDSConfig(n_state=100, batch_size=256, steps=40_000, eval_every=2000,
                                                  checkpoint_every=2000, device="auto", **_STANDARD)),
}


@dataclass
class JSLDSResult:
    run_dir: Path
    summary: dict[str, Any]
    model: JSLDS
    task: Any
    config: JSLDSConfig


# --------------------------------------------------------------------------- building


def build_task(cfg: JSLDSConfig):
    """The config's task: ``task_factory()`` when set, else the built-in ``task``."""
    if cfg.task_factory:
        return import_object(cfg.task_factory, "task_factory")()
    if cfg.task == "flipflop":
        return FlipFlopTask(cfg.n_bits, cfg.T, settle=5, mode=cfg.task_mode, p=cfg.pulse_p)
    return ContextIntegrationTask(cfg.T, bias_dist="normal" if cfg.task_mode == "official" else "uniform")


def build_model(cfg: JSLDSConfig, task, cell: torch.nn.Module | None = None) -> JSLDS:
    """The JSLDS for ``task``: a built-in cell from ``cfg`` unless ``cell`` is given."""
    for attr in ("n_input", "n_output", "sample"):
        if not hasattr(task, attr):
            raise UserError(f"task {type(task).__name__} has no '{attr}': a task needs n_input, n_output and sample(batch_size, generator)")
    g = make_generator(cfg.seed)
    if cell is None and cfg.cell_factory:
        cell = import_object(cfg.cell_factory, "cell_factory")(cfg.n_state, task.n_input)
        if not isinstance(cell, torch.nn.Module):
            raise UserError(f"cell_factory {cfg.cell_factory!r} returned {type(cell).__name__}, not a torch.nn.Module")
    if cell is None:
        if cfg.cell == "gru":
            cell = GRUCell(cfg.n_state, task.n_input, generator=g)
        else:
            cell = VanillaRNNCell(cfg.n_state, task.n_input, cfg.cell.split("-")[1], generator=g)
    n, u = cell_dims(cell)
    if u != task.n_input:
        raise UserError(f"the cell takes {u} inputs but the task {type(task).__name__} gives {task.n_input}")
    from auxfn.jslds.expansion import ExpansionNet

    return JSLDS(cell, ExpansionNet(n, cfg.expansion_layers), n_out=task.n_output, x_star=getattr(task, "x_star", None), generator=g)


def _check_batch(task, x, y, mask, batch_size: int, model: JSLDS) -> None:
    B = batch_size
    if x.dim() != 3 or x.shape[0] != B or x.shape[2] != model.n_input:
        raise UserError(f"task.sample returned x of shape {tuple(x.shape)}; expected ({B}, T, {model.n_input})")
    T = x.shape[1]
    if y.shape != (B, T, model.n_out):
        raise UserError(f"task.sample returned y of shape {tuple(y.shape)}; expected ({B}, {T}, {model.n_out})")
    if mask.shape != (B, T) or mask.dtype != torch.bool:
        raise UserError(f"task.sample returned mask {mask.dtype} {tuple(mask.shape)}; expected bool ({B}, {T})")


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: JSLDS, task, batch_size: int = 256, seed: int = 12345, *, run_jslds: bool = True,
             device: torch.device | str = "cpu") -> tuple[dict[str, float], Trajectories, tuple]:
    """Held-out metrics ``eval/*`` on one fresh batch drawn with ``seed``; also returns the trajectories and the batch."""
    x, y, mask = task.sample(batch_size, make_generator(seed))
    x, y, mask = x.to(device), y.to(device), mask.to(device)
    tr = model(x, run_jslds=run_jslds)
    m = mask.unsqueeze(-1).to(y.dtype)
    denom = m.sum() * y.shape[-1]
    out = {"eval/mse_rnn": (((tr.y_rnn - y) ** 2) * m).sum().item() / denom.item()}
    if isinstance(task, FlipFlopTask):
        out["eval/bit_accuracy_rnn"] = ((torch.sign(tr.y_rnn) == y).to(y.dtype) * m).sum().item() / denom.item()
    if run_jslds:
        out["eval/mse_jslds"] = (((tr.y_jslds - y) ** 2) * m).sum().item() / denom.item()
        out["eval/relative_error"] = relative_error(tr.a, tr.h).item()
        out["eval/fixed_point_loss"] = ((tr.F_e - tr.e) ** 2).mean().item()
        if isinstance(task, FlipFlopTask):
            out["eval/bit_accuracy_jslds"] = ((torch.sign(tr.y_jslds) == y).to(y.dtype) * m).sum().item() / denom.item()
    return out, tr, (x, y, mask)


# --------------------------------------------------------------------------- training


def _modules(model: JSLDS) -> dict[str, torch.nn.Module]:
    return {"model": model}


# settings that do not change the mathematics: a resume may change them, and checkpoints written before
# the path options existed still load
_RESUMABLE = ("steps", "log_every", "eval_every", "eval_batch_size", "checkpoint_every", "device", "threads", "fused", "native", "compile", "compile_wrapper")


def train(cfg: JSLDSConfig, *, out: str | Path | None = None, resume: str | Path | None = None, quiet: bool = True,
          task=None, cell: torch.nn.Module | None = None) -> JSLDSResult:
    """Train ``cfg``; returns the run directory, final metrics and the model.

    ``task`` (any object with ``n_input``, ``n_output``, ``sample``) and ``cell`` (any
    ``F(h, x)`` module) replace the config's built-in task and cell; a run trained that way is
    reloaded with ``load_run(run_dir, task=..., cell=...)``. To make runs that ``auxfn jslds
    eval/analyze`` can reload by themselves, name importable factories in the config instead
    (``cell_factory`` / ``task_factory``). A non-finite loss or
    gradient stops the run with :class:`auxfn.core.errors.DivergedError` naming the last
    good checkpoint.
    """
    if cell is not None and cfg.cell_factory:
        raise UserError("pass either cell= or config field cell_factory, not both")
    if task is not None and cfg.task_factory:
        raise UserError("pass either task= or config field task_factory, not both")
    with torch_threads(cfg.threads):
        return _train(cfg, out=out, resume=resume, quiet=quiet, task=task, cell=cell)


def _train(cfg: JSLDSConfig, *, out, resume, quiet, task, cell) -> JSLDSResult:
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    task_obj = task
    task = task if task is not None else build_task(cfg)
    model = build_model(cfg, task, cell).to(device)
    weights = cfg.weights
    run_jslds = weights.needs_jslds
    model.fused = cfg.fused and not cfg.compile
    model.native = cfg.native and model.fused
    model.fold_expansion = not cfg.compile  # see JSLDS.__init__: compiled, the folded E trained wrongly

    def step_losses(x, y, mask):
        tr = model(x, run_jslds=run_jslds)
        return jslds_losses(tr, y, mask, weights, params=model.parameters() if weights.l2 > 0 else None)

    compute_losses = compile_loss(step_losses, cfg.compile_wrapper) if cfg.compile else step_losses
    compile_seconds = None
    # fused Adam: one kernel over all parameters instead of torch's per-parameter Python loop on CPU;
    # measured 1.19x faster per JSLDS step at n=64, B=64 and 1.05x at paper size (native kernel,
    # benchmarks/jslds/RESULTS.md). Same update up to rounding.
    fused_adam = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in model.parameters()) or None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps, fused=fused_adam)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    gen = make_generator(cfg.seed + 1)
    if resume is not None:
        Run.open(resume).require_user_objects({"task": task_obj, "cell": cell}, to="train (resume)")
        ck = load_checkpoint(resume, _modules(model), optimizers={"adam": opt}, schedulers={"lr": sched}, config=cfg,
                             ignore_fields=_RESUMABLE, generators={"data": gen}, map_location=device)
        run, start = Run.resume(resume, ck.step, config=cfg, quiet=quiet), ck.step
        if start >= cfg.steps:
            raise UserError(f"{resume} already ran {start} steps; pass --steps N with N > {start} to continue")
    else:
        run, start = Run.create("jslds", cfg, name=f"{cfg.task}", out=out, quiet=quiet), 0
        run.record_user_objects({k: f"{type(v).__module__}.{type(v).__qualname__}"
                                 for k, v in (("task", task_obj), ("cell", cell)) if v is not None})
    last_eval: dict[str, float] = {}
    t_train = 0.0
    with run, run.progress(cfg.steps, "jslds", initial=start) as bar:
        with stop_at_step_boundary() as stop:  # Ctrl-C: stop after the current step, checkpoint there
            for step in range(start + 1, cfg.steps + 1):
                t0 = time.perf_counter()
                x, y, mask = task.sample(cfg.batch_size, gen)
                if step == start + 1:
                    _check_batch(task, x, y, mask, cfg.batch_size, model)
                x, y, mask = x.to(device), y.to(device), mask.to(device)
                losses = compute_losses(x, y, mask)
                if not torch.isfinite(losses["total"]):
                    raise run.diverged("loss/total", step)
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                if not torch.isfinite(gnorm):
                    raise run.diverged("gradient norm", step)
                opt.step()
                sched.step()
                if cfg.compile and compile_seconds is None:
                    compile_seconds = time.perf_counter() - t0  # the first step: tracing, compiling, running
                    run.log(step, {"time/compile_s": compile_seconds})
                else:
                    t_train += time.perf_counter() - t0
                if step % cfg.log_every == 0 or step == cfg.steps:
                    row = {f"loss/{k}": v.item() for k, v in losses.items()}
                    timed = step - start - (1 if compile_seconds is not None else 0)
                    row.update({"lr": sched.get_last_lr()[0], "grad_norm": gnorm.item(), "time/step_s": t_train / max(1, timed)})
                    run.log(step, row)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    model.eval()
                    last_eval, _, _ = evaluate(model, task, cfg.eval_batch_size, seed=cfg.seed + 10_000, run_jslds=run_jslds, device=device)
                    model.train()
                    run.log(step, last_eval)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.requested:
                    save_checkpoint(run.path, step, _modules(model), optimizers={"adam": opt}, schedulers={"lr": sched},
                                    config=cfg, generators={"data": gen}, keep_last=2)
                bar.update(1)
                if stop.requested and step < cfg.steps:  # Ctrl-C: stopped at this step, checkpoint written
                    raise run.interrupted(step)
        summary = {"steps": cfg.steps, **{k.split("/", 1)[1]: v for k, v in last_eval.items()},
                   "seconds_per_step": t_train / max(1, cfg.steps - start - (1 if compile_seconds is not None else 0))}
        if compile_seconds is not None:
            summary["compile_seconds"] = compile_seconds
        first = next((r for r in run.metrics() if "loss/total" in r), None)
        if first is not None:
            summary["first_loss"] = first["loss/total"]
        summary["final_loss"] = next((r["loss/total"] for r in reversed(run.metrics()) if "loss/total" in r), None)
        run.write_summary(summary)
        figures = _training_figures(run, model, task, cfg, run_jslds, device)
        run.write_report(f"JSLDS training: {cfg.task}", summary, figures=figures)
    return JSLDSResult(run.path, summary, model, task, cfg)


def compile_loss(fn, wrapper: str = "cpp"):
    """``torch.compile(fn)`` as ``compile=True`` trains with it: inductor with its C++ wrapper
    (``wrapper="cpp"``: the host code that launches the generated kernels is compiled C++ instead of
    Python, which removes a per-kernel Python cost from every call of the unrolled loop's thousands of
    kernels) or its Python wrapper (``"python"``). Both graphs (forward and backward) are compiled at
    the first call and its backward. ``benchmarks/jslds/bench_compile.py`` measures both."""
    check_choice("compile_wrapper", wrapper, ("cpp", "python"))
    return torch.compile(fn, options={"cpp_wrapper": wrapper == "cpp"})


def _training_figures(run: Run, model: JSLDS, task, cfg: JSLDSConfig, run_jslds: bool, device) -> list[Path]:
    from auxfn.core.plotting import save_figure, subplots

    rows = [r for r in run.metrics() if "loss/total" in r]
    fig, ax = subplots(width=5)
    for key in ("loss/total", "loss/rnn", "loss/jslds", "loss/fixed_point", "loss/approx"):
        vals = [(r["step"], r[key]) for r in rows if r.get(key) not in (None, 0.0)]
        if vals:
            ax.plot(*zip(*vals, strict=True), label=key.split("/")[1])
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
    ax.legend()
    paths = [save_figure(fig, run, "losses")]
    model.eval()
    _, tr, (x, y, mask) = evaluate(model, task, 8, seed=cfg.seed + 20_000, run_jslds=run_jslds, device=device)
    k = y.shape[-1]
    fig, axes = subplots(k, 1, width=6, height=1.6, squeeze=False, sharex=True)
    t = range(1, y.shape[1] + 1)
    for i in range(k):
        ax = axes[i, 0]
        ax.plot(t, y[0, :, i].cpu(), color="0.6", lw=3, label="target")
        ax.plot(t, tr.y_rnn[0, :, i].cpu(), label="RNN")
        if run_jslds:
            ax.plot(t, tr.y_jslds[0, :, i].cpu(), "--", label="JSLDS")
        ax.set_ylabel(f"out {i}")
    axes[0, 0].legend(ncol=3, fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    fig.suptitle("held-out trial: RNN vs JSLDS readouts")
    paths.append(save_figure(fig, run, "readouts"))
    return paths


def load_run(run_dir: str | Path, device: str = "cpu", *, task=None, cell: torch.nn.Module | None = None
             ) -> tuple[JSLDSConfig, JSLDS, Any]:
    """Config, model (last checkpoint) and task of a run written by :func:`train`.

    The task and cell are rebuilt from the config (built-in, or its ``task_factory`` /
    ``cell_factory``); runs trained with ``train(task=..., cell=...)`` objects need the same
    objects (fresh ones: the weights are loaded into the cell) passed here.
    """
    run = Run.open(run_dir)
    cfg = from_dict(JSLDSConfig, run.metadata["config"])
    run.require_user_objects({"task": task, "cell": cell}, to="load_run")
    task = task if task is not None else build_task(cfg)
    model = build_model(cfg, task, cell)
    # the model is rebuilt from this run's own config.json (a run written before the factory fields
    # existed lacks them in its checkpoint too: core treats an absent field at its default as equal)
    load_checkpoint(run.path, _modules(model), config=cfg, ignore_fields=_RESUMABLE, restore_rng=False, map_location=device)
    model.eval()
    return cfg, model, task

