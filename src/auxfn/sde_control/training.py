"""``train(cfg) -> ControlResult``: learn an AS or ES controller, then certify on samples and simulate.

One step (paper §2–3): draw the training states x (a fixed set from the system's box, plus
falsifier counterexamples), evaluate F(x), G(x) with the current controller and

- AS: minimise ``as_loss(x, F, G, alpha)`` over the controller;
- ES: minimise ``es_loss(V, LV, ∇V^T G, b)`` over the controller and V, with LV from
  :func:`auxfn.sde_control.ito_generator.generator` (gradients through ∇V and ∇²V).

Training stops at the first step whose training states show no violation
(``stop_at_zero``). The run then reports the violation rate on ``certify_samples``
fresh random states, and simulates ``eval_paths`` paths of the controlled and the
uncontrolled system on identical noise.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auxfn.core.checkpoint import load_checkpoint, save_checkpoint
from auxfn.core.config import import_object
from auxfn.core.errors import UserError
from auxfn.core.runs import Run, stop_at_step_boundary
from auxfn.core.seeding import make_generator, seed_everything, torch_threads
from auxfn.sde_control.config import ControlConfig
from auxfn.sde_control.controllers import DifferenceMLP, LinearGain, PinnedMLP, ZeroPreservingMLP
from auxfn.sde_control.ito_generator import generator
from auxfn.sde_control.losses import as_loss, as_residual, es_loss, es_residual
from auxfn.sde_control.lyapunov import DiagQuadLyapunov, ICNNLyapunov, QuadraticLyapunov
from auxfn.sde_control.systems import ControlledSDE, make_system

__all__ = ["ControlResult", "build_controller", "build_lyapunov", "build_system", "certify", "step_loss", "train"]

METHOD_NAME = "sde-control"


@dataclass
class ControlResult:
    """What :func:`train` returns: the run folder, its summary, the learned objects and the loss history."""

    run_dir: Path
    summary: dict[str, Any]
    sde: ControlledSDE  # the controlled system
    controller: nn.Module
    lyapunov: nn.Module | None
    history: list[dict[str, float]] = field(default_factory=list)


def build_system(cfg: ControlConfig) -> ControlledSDE:
    """The uncontrolled system of ``cfg``: ``system_factory()`` when set, else the built-in ``system``."""
    if cfg.system_factory:
        sde = import_object(cfg.system_factory, "system_factory")()
        if not isinstance(sde, ControlledSDE):
            raise UserError(f"system_factory {cfg.system_factory!r} returned {type(sde).__name__}, not a ControlledSDE "
                            f"(auxfn.sde_control.ControlledSDE: pass f0/g0 callables or subclass it)")
        return sde
    kw: dict[str, Any] = {}
    if cfg.noise_type != "default":
        kw["noise_type"] = cfg.noise_type
    if cfg.system == "lorenz":
        kw["target"] = cfg.lorenz_target
    if cfg.system == "stuart":
        kw["n"] = cfg.n_oscillators
    if cfg.system == "echo":
        kw.update(dim=cfg.echo_dim, seed=cfg.echo_seed)
    return make_system(cfg.system, **kw)


def build_controller(cfg: ControlConfig, sde: ControlledSDE) -> nn.Module:
    m = sde.noise_dim if sde.noise_type == "general" else 1
    if cfg.pin:
        if m != 1 or max(cfg.pin) >= sde.dim:
            raise ValueError(f"pin = {cfg.pin} needs scalar or diagonal noise and coordinates < dim = {sde.dim}")
        return PinnedMLP(sde.dim, cfg.pin, cfg.hidden, cfg.activation)
    if cfg.controller == "linear" or cfg.method == "es-linear":
        if m != 1:
            raise ValueError("a linear controller needs scalar or diagonal noise")
        return LinearGain(sde.dim)
    cls = ZeroPreservingMLP if cfg.controller == "mul" else DifferenceMLP
    return cls(sde.dim, cfg.hidden, cfg.activation, noise_dim=m)


def build_lyapunov(cfg: ControlConfig, dim: int) -> nn.Module | None:
    if cfg.method == "es-icnn":
        return ICNNLyapunov(dim, cfg.lyap_hidden, eps=cfg.lyap_eps, smooth_d=cfg.smooth_d)
    if cfg.method == "es-quad":
        return DiagQuadLyapunov(dim, cfg.lyap_hidden, l=cfg.quad_l)
    if cfg.method == "es-linear":
        return QuadraticLyapunov(dim, eps=cfg.lyap_eps)
    return None


def _pinned(cfg: ControlConfig, x, F, Gd):
    """The AS loss of a pinning controller: the pinned coordinates' own condition (official cell-fate
    script: the 1-D condition on x2 with f2 evaluated at the full state); all coordinates otherwise."""
    if not cfg.pin:
        return x, F, Gd
    idx = list(cfg.pin)
    return x[:, idx], F[:, idx], Gd[:, idx]


def step_loss(cfg: ControlConfig, sde: ControlledSDE, V: nn.Module | None, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss dict of one step on states ``x`` (B, d) (AS or ES by ``cfg.method``)."""
    F, G, _ = sde.drift_and_diffusion(x)
    Gd = sde.dense(G)
    if V is None:
        x, F, Gd = _pinned(cfg, x, F, Gd)
        return as_loss(x, F, Gd, cfg.alpha, cfg.as_form, cfg.as_normalize)
    t = generator(V, x, F, Gd, hessian=cfg.hessian, legacy_detached_hessian=cfg.legacy_detached_hessian)
    return es_loss(t.V, t.LV, t.VG, cfg.b)


def residual(cfg: ControlConfig, sde: ControlledSDE, V: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """Per-state residual (B,), > 0 where the learned condition is violated."""
    F, G, _ = sde.drift_and_diffusion(x)
    Gd = sde.dense(G)
    if V is None:
        x, F, Gd = _pinned(cfg, x, F, Gd)
        r = as_residual(x, F, Gd, cfg.alpha, cfg.as_form, cfg.as_normalize)
        return r if r.ndim == 1 else r.max(-1).values
    t = generator(V, x, F, Gd, hessian="exact")
    return es_residual(t.V, t.LV, t.VG, cfg.b)


def certify(cfg: ControlConfig, sde: ControlledSDE, V: nn.Module | None, n: int, *, seed: int, chunk: int = 10000) -> float:
    """Violation rate on ``n`` fresh uniform states of the box (a sample estimate, not a proof)."""
    gen = make_generator(seed)
    dtype = next(iter(sde.parameters())).dtype if any(True for _ in sde.parameters()) else torch.float32
    bad = 0
    for start in range(0, n, chunk):
        x = sde.domain.sample(min(chunk, n - start), generator=gen, dtype=dtype)
        r = residual(cfg, sde, V, x).detach()
        bad += int((r > 0).sum())
    return bad / n


def _dtype(cfg: ControlConfig) -> torch.dtype:
    return torch.float64 if cfg.dtype == "float64" else torch.float32


def train(
    cfg: ControlConfig,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = True,
    system: ControlledSDE | None = None,
    evaluate: bool = True,
) -> ControlResult:
    """Train by ``cfg``; ``system`` replaces the built-in system (a user's own uncontrolled SDE).

    A run trained on a ``system`` object is reloaded with ``load_run(run_dir, system=...)`` and
    resumed with the same object passed again; the CLI cannot rebuild it. To make a run that
    ``auxfn sde-control simulate/eval`` and ``--resume`` rebuild by themselves, name an importable
    factory in the config instead (``system_factory``). The object itself is not modified.

    Writes a run folder (config, metrics, checkpoints, figures, summary, report); ``resume``
    continues a run from its newest checkpoint (identical to an uninterrupted run).
    A non-finite loss raises :class:`auxfn.core.errors.DivergedError` naming the last good checkpoint.
    """
    # tiny nets: thread start-up costs more than the work; on a shared 2-core machine
    # the default thread pool made an AS step 60x slower (207 ms vs 3.4 ms, measured)
    if system is not None and cfg.system_factory:
        raise UserError("pass either system= or config field system_factory, not both")
    if system is not None and not isinstance(system, ControlledSDE):
        raise UserError(f"system= must be an auxfn.sde_control.ControlledSDE, got {type(system).__name__}")
    with torch_threads(cfg.threads):
        return _train(cfg, out=out, resume=resume, quiet=quiet, system=system, evaluate=evaluate)


def _train(cfg, *, out, resume, quiet, system, evaluate) -> ControlResult:
    from auxfn.core.errors import DivergedError

    seed_everything(cfg.seed)
    dtype = _dtype(cfg)
    if resume is not None:
        Run.open(resume).require_user_objects({"system": system}, to="train (resume)")
    base = _entry(cfg, system if system is not None else build_system(cfg))
    controller = build_controller(cfg, base).to(dtype)
    sde = base.with_controller(controller)
    V = build_lyapunov(cfg, base.dim)
    if V is not None:
        V = V.to(dtype)
    modules: dict[str, nn.Module] = {"controller": controller}
    if V is not None:
        modules["lyapunov"] = V
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    data_gen = make_generator(cfg.seed + 1)
    batch_gen = make_generator(cfg.seed + 2)
    x_train = base.domain.sample(cfg.n_samples, generator=data_gen, dtype=dtype)
    state: dict[str, Any] = {"train_time": 0.0, "stopped": False, "iters_to_zero": None, "extra": []}

    if resume is not None:
        ck = load_checkpoint(
            resume, modules, optimizers={"opt": opt}, config=cfg,
            ignore_fields=("max_iters", "checkpoint_every", "certify_samples", "eval_paths", "eval_T", "eval_dt",
                           "eps", "eval_seed", "blowup"),
            generators={"data": data_gen, "batch": batch_gen},
        )
        state.update(ck.state)
        run, start = Run.resume(resume, ck.step, config=cfg, quiet=quiet), ck.step
    else:
        run, start = Run.create(METHOD_NAME, cfg, name=f"{_label(cfg, system)}-{cfg.method}", out=out, quiet=quiet), 0
        if system is not None:
            run.record_user_objects({"system": _describe(system)})
    if state["extra"]:
        x_train = torch.cat([x_train, torch.tensor(state["extra"], dtype=dtype)])

    history: list[dict[str, float]] = []

    def checkpoint(step: int) -> None:
        save_checkpoint(run.path, step, modules, optimizers={"opt": opt}, config=cfg, state=state,
                        generators={"data": data_gen, "batch": batch_gen}, keep_last=2)

    with run:
        step = start
        bar = run.progress(cfg.max_iters, f"{_label(cfg, system)}/{cfg.method}", initial=start)
        try:
            with stop_at_step_boundary() as stop:
                while not state["stopped"] and step < cfg.max_iters:
                    t0 = time.perf_counter()
                    if cfg.batch_size and cfg.batch_size < x_train.shape[0]:
                        idx = torch.randperm(x_train.shape[0], generator=batch_gen)[: cfg.batch_size]
                        xb = x_train[idx]
                    else:
                        xb = x_train
                    losses = step_loss(cfg, sde, V, xb)
                    total = losses["total"]
                    if not torch.isfinite(total):
                        raise run.diverged("loss/total", step + 1)
                    zero = cfg.stop_at_zero and float(losses["violation_rate"]) == 0.0
                    if zero and xb is not x_train:  # a clean batch: confirm on every training state
                        zero = bool((residual(cfg, sde, V, x_train).detach() <= 0).all())
                    if cfg.stop_loss > 0 and float(total.detach()) <= cfg.stop_loss:
                        zero = True
                    if not zero:
                        opt.zero_grad(set_to_none=True)
                        total.backward()
                        opt.step()
                        if cfg.lr_schedule == "reset":
                            # the official scripts build a new Adam after every step: fresh moments
                            # make each step about lr * sign(gradient), lr chosen by the loss
                            lr = cfg.lr_low if float(total.detach()) < cfg.lr_switch_loss else cfg.lr_high
                            opt = torch.optim.Adam(params, lr=lr)
                    state["train_time"] += time.perf_counter() - t0
                    if state.get("iters_to_loss_1e-3") is None and float(total.detach()) < 1e-3:
                        # the official ES scripts' stop rule (loss < 1e-3), recorded for comparison
                        state["iters_to_loss_1e-3"] = step
                        state["time_to_loss_1e-3"] = state["train_time"]
                    row = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
                    row["time/train"] = state["train_time"]
                    row["n_train"] = int(x_train.shape[0])
                    if zero:
                        state["stopped"] = True
                        state["iters_to_zero"] = step
                        run.log(step, row)
                        history.append(row)
                        break
                    step += 1
                    run.log(step, row)
                    history.append(row)
                    bar.update(1)
                    if cfg.falsifier_every and step % cfg.falsifier_every == 0:
                        from auxfn.sde_control.falsifier import falsify

                        tf = time.perf_counter()
                        found = falsify(cfg, sde, V, seed=cfg.seed + 1000 + step)
                        state["falsifier_time"] = state.get("falsifier_time", 0.0) + time.perf_counter() - tf
                        if found.shape[0]:
                            x_train = torch.cat([x_train, found.to(dtype)])
                            state["extra"] = state["extra"] + found.tolist()
                        run.log(step, {"falsifier/found": int(found.shape[0]), "time/falsifier": state["falsifier_time"]})
                    if step % cfg.checkpoint_every == 0 or stop.requested:
                        checkpoint(step)
                    if stop.requested and step < cfg.max_iters:  # Ctrl-C: stopped at this step, checkpoint written
                        raise run.interrupted(step)
        finally:
            bar.close()
        checkpoint(step)

        if not history:  # a resumed run that had already finished: its last logged row
            history = [r for r in run.metrics() if "loss/total" in r][-1:]
        summary: dict[str, Any] = {
            "system": base.name,
            "method": cfg.method,
            "iters": step,
            "stopped_early": bool(state["stopped"]),
            "iters_to_stop": state["iters_to_zero"],
            "reached_zero": bool(history and history[-1]["loss/violation_rate"] == 0.0),
            "train_time_s": state["train_time"],
            "final_loss": history[-1]["loss/total"] if history else None,
            "final_violation_rate_train": history[-1]["loss/violation_rate"] if history else None,
            "n_train": int(x_train.shape[0]),
            "falsifier_time_s": state.get("falsifier_time", 0.0),
            "iters_to_loss_1e-3": state.get("iters_to_loss_1e-3"),
            "time_to_loss_1e-3_s": state.get("time_to_loss_1e-3"),
        }
        summary["iters_to_zero"] = summary["iters_to_stop"] if summary["reached_zero"] else None
        if cfg.certify_samples:
            summary["heldout_violation_rate"] = certify(cfg, sde, V, cfg.certify_samples, seed=cfg.seed + 777)
        figures: list[Path] = []
        if evaluate and cfg.eval_paths:
            from auxfn.sde_control.evaluation import evaluate_and_plot

            ev, figures = evaluate_and_plot(cfg, base, sde, V, run)
            summary.update(ev)
        from auxfn.sde_control.plots import plot_loss

        figures.insert(0, plot_loss(run))
        run.write_summary(summary)
        run.write_report(f"sde-control: {base.name} / {cfg.method}", _headline(summary), figures=figures)
    if not all(math.isfinite(p.detach().sum()) for p in params):
        raise DivergedError("parameters are not finite", step=step, last_checkpoint=run.latest_checkpoint())
    return ControlResult(run.path, summary, sde, controller, V, history)


def _entry(cfg: ControlConfig, base: ControlledSDE) -> ControlledSDE:
    """``base`` with the config's control entry; a user's object is copied, not changed."""
    if cfg.control_entry == "drift" and base.control_entry != "drift":
        base = copy.copy(base)  # shallow: shares f0, g0 and parameters; only the attribute differs
        base.control_entry = "drift"
    return base


def _label(cfg: ControlConfig, system: ControlledSDE | None) -> str:
    """The run's name for its system: the config's, or the user object's own name."""
    if system is None:
        return cfg.system
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(system.name)).strip("._") or "user"


def _describe(system: ControlledSDE) -> str:
    return (f"{type(system).__module__}.{type(system).__qualname__} {system.name!r}, "
            f"dim {system.dim}, {system.noise_type} noise")


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ["iters", "iters_to_zero", "train_time_s", "heldout_violation_rate", "controlled/tau_mean_norm",
            "controlled/tau_per_path", "controlled/success_rate", "controlled/energy", "controlled/diverged",
            "uncontrolled/final_mean_norm", "uncontrolled/success_rate", "uncontrolled/diverged"]
    return {k: summary[k] for k in keys if k in summary}


def load_run(run_dir: str | Path, *, system: ControlledSDE | None = None
             ) -> tuple[ControlConfig, ControlledSDE, ControlledSDE, nn.Module | None]:
    """Rebuild ``(cfg, uncontrolled system, controlled system, V)`` of a run from its newest checkpoint.

    The system is rebuilt from the config (built-in, or its ``system_factory``); a run trained with
    ``train(..., system=obj)`` needs that object passed here again (a UserError says so otherwise).
    """
    from auxfn.core.config import from_dict

    run = Run.open(run_dir)
    cfg = from_dict(ControlConfig, run.metadata["config"])
    run.require_user_objects({"system": system}, to="load_run")
    if system is not None and cfg.system_factory:
        raise UserError(f"run {run_dir} rebuilds its system from system_factory {cfg.system_factory!r}; do not pass system=")
    base = _entry(cfg, system if system is not None else build_system(cfg))
    controller = build_controller(cfg, base).to(_dtype(cfg))
    V = build_lyapunov(cfg, base.dim)
    modules: dict[str, nn.Module] = {"controller": controller}
    if V is not None:
        V = V.to(_dtype(cfg))
        modules["lyapunov"] = V
    load_checkpoint(run.path, modules, restore_rng=False)
    return cfg, base, base.with_controller(controller), V
