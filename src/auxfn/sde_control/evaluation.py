"""Paired simulation of the controlled and the uncontrolled system, with metrics and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from auxfn.core.seeding import make_generator
from auxfn.sde_control.metrics import summarize
from auxfn.sde_control.simulation import Trajectories, simulate
from auxfn.sde_control.systems import ControlledSDE

__all__ = ["compare", "evaluate_and_plot"]


def compare(
    systems: dict[str, ControlledSDE], x0: torch.Tensor, *, T: float, dt: float, eps: float, seed: int = 0,
    blowup: float = 1e6, record_every: int | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Trajectories]]:
    """Simulate each system from the same ``x0`` (P, d) on the same noise (``seed``); metrics per system."""
    n_steps = max(1, round(T / dt))
    every = record_every or max(1, n_steps // 2000)
    metrics, trajs = {}, {}
    for name, sde in systems.items():
        tr = simulate(sde, x0, dt=dt, n_steps=n_steps, seed=seed, record_every=every, blowup=blowup)
        trajs[name] = tr
        metrics[name] = summarize(tr, eps)
    return metrics, trajs


def evaluate_and_plot(cfg, base: ControlledSDE, sde: ControlledSDE, V: nn.Module | None, run) -> tuple[dict[str, Any], list[Path]]:
    """Controlled vs uncontrolled on paired noise: ``controlled/*``, ``uncontrolled/*`` metrics and figures."""
    from auxfn.sde_control.plots import plot_level_sets, plot_norms, plot_phase

    x0 = base.default_x0(cfg.eval_paths, generator=make_generator(cfg.eval_seed))
    metrics, trajs = compare(
        {"controlled": sde, "uncontrolled": base.with_controller(None)}, x0,
        T=cfg.eval_T, dt=cfg.eval_dt, eps=cfg.eps, seed=cfg.eval_seed, blowup=cfg.blowup,
    )
    out = {f"{name}/{k}": v for name, m in metrics.items() for k, v in m.items()}
    out["eval/dt"] = cfg.eval_dt
    out["eval/T"] = cfg.eval_T
    out["eval/eps"] = cfg.eps
    figs = [plot_norms(trajs, run, eps=cfg.eps)]
    if base.dim == 2:
        figs.append(plot_phase(trajs, run))
        if V is not None:
            figs.append(plot_level_sets(V, base, trajs["controlled"], run))
    return out, figs
