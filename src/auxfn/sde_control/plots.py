"""Figures: loss curves, ‖x(t)‖ on a log scale, phase portraits, level sets of V, sweep curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from auxfn.core.plotting import COLORS, save_figure, subplots
from auxfn.sde_control.simulation import Trajectories

__all__ = ["plot_level_sets", "plot_loss", "plot_norms", "plot_phase", "plot_sweep"]


def plot_loss(run) -> Path:
    rows = [r for r in run.metrics() if "loss/total" in r]
    fig, ax = subplots()
    steps = [r["step"] for r in rows]
    ax.plot(steps, [max(r["loss/total"] or 0.0, 1e-12) for r in rows], label="loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["loss/violation_rate"] for r in rows], color=COLORS[1], label="violation rate")
    ax.set(xlabel="step", ylabel="loss (log)", yscale="log")
    ax2.set_ylabel("violation rate on training states")
    ax.set_title("training")
    return save_figure(fig, run, "loss")


def plot_norms(trajs: Mapping[str, Trajectories], run, eps: float | None = None, name: str = "norms") -> Path:
    fig, ax = subplots(width=5.0)
    for i, (label, tr) in enumerate(trajs.items()):
        n = tr.norms.numpy()
        t = tr.ts.numpy()
        ax.plot(t, n, color=COLORS[i % len(COLORS)], alpha=0.15, lw=0.8)
        ax.plot(t, n.mean(1), color=COLORS[i % len(COLORS)], lw=2.0,
                label=f"{label} (mean; {tr.n_diverged} diverged)")
    if eps is not None:
        ax.axhline(eps, color="k", ls=":", lw=1.0, label=f"eps = {eps:g}")
    ax.set(xlabel="t", ylabel="|x(t)|", yscale="log", title="paired paths")
    if eps is not None:
        ax.set_ylim(bottom=eps * 1e-4)  # converged paths fall to 1e-50 and would squash the plot
    ax.legend()
    return save_figure(fig, run, name)


def plot_phase(trajs: Mapping[str, Trajectories], run, name: str = "phase") -> Path:
    fig, axes = subplots(1, len(trajs), width=3.6, height=3.4)
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (label, tr) in zip(axes, trajs.items(), strict=True):
        xs = tr.xs.numpy()
        for p in range(xs.shape[1]):
            ax.plot(xs[:, p, 0], xs[:, p, 1], lw=0.7, alpha=0.7)
        ax.plot(0, 0, "k*", ms=8)
        ax.set(xlabel="x1", ylabel="x2", title=label)
    return save_figure(fig, run, name)


def plot_level_sets(V, sde, traj: Trajectories, run, name: str = "level_sets") -> Path:
    lo, hi = sde.domain.low, sde.domain.high
    dtype = next(V.parameters()).dtype
    g1 = torch.linspace(lo[0], hi[0], 120, dtype=dtype)
    g2 = torch.linspace(lo[1], hi[1], 120, dtype=dtype)
    X1, X2 = torch.meshgrid(g1, g2, indexing="ij")
    with torch.no_grad():
        vals = V(torch.stack([X1.reshape(-1), X2.reshape(-1)], 1)).reshape(X1.shape)
    fig, ax = subplots(width=4.4, height=3.8)
    v = vals.numpy()
    pos = v[v > 0]
    # V grows fast away from 0: geometric levels show the sub-level sets near the origin too
    levels = np.geomspace(max(pos.min(), pos.max() * 1e-6), pos.max(), 15) if pos.size else 15
    cs = ax.contour(X1.numpy(), X2.numpy(), v, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="V")
    xs = traj.xs.numpy()
    for p in range(min(xs.shape[1], 8)):
        ax.plot(xs[:, p, 0], xs[:, p, 1], color="k", lw=0.6, alpha=0.6)
    ax.set(xlabel="x1", ylabel="x2", title="level sets of V and controlled paths")
    return save_figure(fig, run, name)


def plot_sweep(values: Sequence[float], ys: Mapping[str, Sequence[float]], run, *, xlabel: str, name: str,
               logy: bool = False, marks: Sequence[float] = ()) -> Path:
    """One curve per entry of ``ys`` against the swept ``values``; ``marks``: vertical reference lines."""
    fig, ax = subplots(width=4.8)
    for label, y in ys.items():
        ax.plot(values, y, marker="o", label=label)
    for m in marks:
        ax.axvline(m, color="k", ls=":", lw=1.0)
    ax.set(xlabel=xlabel, yscale="log" if logy else "linear")
    ax.legend()
    return save_figure(fig, run, name)
