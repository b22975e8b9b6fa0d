"""Analysis of a trained model: fixed points, spectra, relative errors and figures.

``analyze_model`` is what ``auxfn jslds analyze RUN_DIR`` and the demo run: on a held-out batch it
measures the JSLDS's relative error to its RNN, the fixed-point loss of the expansion points,
refines expansion points into numerical fixed points of F, runs the standard
nearest-fixed-point linearisation of the RNN (one-step-ahead and free-running), and draws the
spectra and readout-space figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from auxfn.jslds.analysis import (
    find_fixed_points,
    nearest_fixed_point_linearization,
    relative_error,
)
from auxfn.jslds.model import JSLDS
from auxfn.jslds.tasks import ContextIntegrationTask, FlipFlopTask

__all__ = ["analyze_model"]


def _x_star_rows(model: JSLDS, x: torch.Tensor) -> torch.Tensor:
    """The distinct input expansion points used on inputs ``x: (B, T, u)``."""
    return torch.unique(model.x_star(x).reshape(-1, x.shape[-1]), dim=0)


@torch.no_grad()
def _expansion_fp_loss(model: JSLDS, e: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    return ((model.cell(e, xs) - e) ** 2).mean(-1)


def analyze_model(model: JSLDS, task, out_dir: str | Path, *, batch_size: int = 64, seed: int = 54321,
                  n_candidates: int = 256, fp_iters: int = 2000, fp_lr: float = 0.01, q_tol: float | None = None,
                  jslds: bool = True, figures: bool = True,
                  fixed_points_dir: str | Path | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Metrics (``analysis/*``) and figure paths for ``model`` on ``task``.

    ``fixed_points_dir``: where to save the numerical fixed points (``FixedPoints.save``).

    ``q_tol`` defaults to ``n * 2.5e-7``: the official notebooks' ``mean_n (F(h) - h)^2 < 5e-7``.
    With ``jslds=False`` (a plain RNN) only the RNN's fixed points and its nearest-fixed-point
    linearisation are computed; candidates are then RNN states instead of expansion points.
    """
    from auxfn.core.seeding import make_generator

    out_dir = Path(out_dir)
    g = make_generator(seed)
    x, y, mask = task.sample(batch_size, g)
    model.eval()
    with torch.no_grad():
        tr = model(x, run_jslds=jslds)
    B, T, n = tr.h.shape
    h0 = model.initial_state(B).detach()
    metrics: dict[str, Any] = {}
    if jslds:
        metrics["analysis/relative_error_jslds"] = relative_error(tr.a, tr.h).item()
        xs_all = model.x_star(x)
        fpl = _expansion_fp_loss(model, tr.e.reshape(-1, n), xs_all.reshape(-1, x.shape[-1]))
        metrics["analysis/expansion_fp_loss_mean"] = fpl.mean().item()
        metrics["analysis/expansion_fp_loss_log10_median"] = fpl.clamp_min(1e-30).log10().median().item()
    # candidates: expansion points (co-trained) or RNN states (standard), per input expansion point
    pool = (tr.e if jslds else tr.h).reshape(-1, n)
    pool_xs = model.x_star(x).reshape(-1, x.shape[-1])
    idx = torch.randperm(pool.shape[0], generator=g)[:n_candidates]
    # spectra at (a sample of) the points the JSLDS linearises about: memory and integration
    # need eigenvalues near 1 (marginal stability), the rest decay
    jh, _ = model.linear_system(pool[idx[:64]], pool_xs[idx[:64]])
    top = torch.linalg.eigvals(jh.double()).abs().max(-1).values
    metrics["analysis/top_abs_eigenvalue_median"] = top.median().item()
    if q_tol is None:
        q_tol = n * 2.5e-7
    t0 = time.perf_counter()
    fps = find_fixed_points(model.cell, pool[idx], pool_xs[idx], lr=fp_lr, max_iters=fp_iters, q_tol=q_tol,
                            unique_tol=1e-3, eigenvectors=False)
    metrics["analysis/fixed_point_seconds"] = time.perf_counter() - t0
    metrics["analysis/n_fixed_points"] = len(fps)
    if fixed_points_dir is not None:
        fps.save(fixed_points_dir)
    if len(fps):
        metrics["analysis/n_stable_fixed_points"] = int(fps.is_stable.sum())
        for mode in ("one_step", "free"):
            try:
                approx = nearest_fixed_point_linearization(fps, tr.h, x, h0, model.x_star, mode=mode)
                metrics[f"analysis/relative_error_nearest_fp_{mode}"] = relative_error(approx, tr.h).item()
            except ValueError as err:  # no fixed point for some x*
                metrics[f"analysis/relative_error_nearest_fp_{mode}"] = None
                metrics["analysis/note"] = str(err)
    paths: list[Path] = []
    if figures:
        paths = _figures(model, task, tr, fps, x, out_dir, jslds)
    if jslds and isinstance(task, ContextIntegrationTask):
        more, fig = _context_selection(model, task, tr, x, out_dir, figures)
        metrics.update(more)
        paths += fig
        more, fig = condition_grid_analysis(model, task, out_dir, fps=fps, figures=figures, seed=seed)
        metrics.update(more)
        paths += fig
    return metrics, paths


@torch.no_grad()
def condition_grid_analysis(model: JSLDS, task: ContextIntegrationTask, out_dir: str | Path, *, n_trials: int = 16,
                            fps=None, figures: bool = True, seed: int = 0, offset: int = 2):
    """The 6 x 6 fixed-bias condition grid (motion bias x colour bias, per context; Fig. 3D-I).

    - Choices: the sign of the final readout (the integrated cued stream) of the RNN and of the JSLDS,
      as the fraction of positive choices per condition ("psychometric" grid), and the accuracy
      against the sign of the cued bias (``analysis/grid_choice_accuracy_{rnn,jslds}``).
    - Line attractor, per context: the subspace from QR of [mean top right eigenvector of J_h at the
      expansion points (steps >= ``offset``), motion input direction, colour input direction] (the
      cell's input weights ``W_x`` for the vanilla cell, as in the official code; else the mean
      effective inputs ``J_x`` columns), the fraction of the expansion points' variance along the
      line-attractor direction, and a figure of the condition-averaged JSLDS trajectories projected
      on (line attractor, cued input) with the expansion points and the numerical fixed points.
    """
    from auxfn.core.seeding import make_generator
    from auxfn.jslds.analysis import line_attractor_subspace
    from auxfn.jslds.cells import VanillaRNNCell
    from auxfn.jslds.tasks import CONDITION_BIASES

    g = make_generator(seed + 1)
    grid = task.condition_grid()
    xs_, conds = [], []
    for c in (0, 1):
        for mb, cb in grid:
            x, _, _ = task.sample_fixed_bias(n_trials, mb, cb, c, generator=g)
            xs_.append(x)
            conds.append((c, mb, cb))
    x = torch.cat(xs_)
    tr = model(x)
    K, nb = len(conds), len(CONDITION_BIASES)
    cued = torch.tensor([mb if c == 0 else cb for c, mb, cb in conds]).repeat_interleave(n_trials)
    metrics: dict[str, Any] = {}
    frac = {}
    for name, yv in (("rnn", tr.y_rnn), ("jslds", tr.y_jslds)):
        choice = yv[:, -1, 0] > 0
        metrics[f"analysis/grid_choice_accuracy_{name}"] = (choice == (cued > 0)).float().mean().item()
        frac[name] = choice.float().view(K, n_trials).mean(1).view(2, nb, nb)  # [context, motion bias, colour bias]
    n = model.n_state
    ctx = torch.tensor([c for c, _, _ in conds]).repeat_interleave(n_trials)
    rows = []
    for c, cname in ((0, "motion"), (1, "colour")):
        e = tr.e[ctx == c][:, offset:].reshape(-1, n)
        pick = torch.randperm(e.shape[0], generator=g)[:64]
        xs = torch.zeros(len(pick), task.n_input)
        xs[:, 2 + c] = 1.0
        jh, jx = model.linear_system(e[pick], xs)
        vals, vecs = torch.linalg.eig(jh.double())
        if isinstance(model.cell, VanillaRNNCell):
            w_in = model.cell.w_x.detach()[:2].T.double()
        else:
            w_in = jx[:, :, :2].mean(0).double()
        q = line_attractor_subspace(vecs, vals, w_in).float()
        centred = e - e.mean(0)
        metrics[f"analysis/{cname}_line_attractor_variance_fraction"] = ((centred @ q[:, 0]) ** 2).sum().item() / (centred**2).sum().item()
        a_c = tr.a[ctx == c].view(nb * nb, n_trials, -1, n).mean(1)  # condition means (B, T, n)
        rows.append((cname, c, q, a_c, e[pick]))
    paths: list[Path] = []
    if figures:
        from auxfn.core.plotting import save_figure, subplots

        fig, axes = subplots(2, 2, width=3.4, height=3.0, squeeze=False)
        ticks = [f"{b:g}" for b in CONDITION_BIASES]
        for i, name in enumerate(("rnn", "jslds")):
            for c, cname in ((0, "motion"), (1, "colour")):
                ax = axes[i, c]
                im = ax.imshow(frac[name][c].numpy(), vmin=0, vmax=1, cmap="RdBu_r", origin="lower")
                ax.set_xticks(range(nb), ticks, rotation=90, fontsize=7)
                ax.set_yticks(range(nb), ticks, fontsize=7)
                ax.set(xlabel="colour bias", ylabel="motion bias", title=f"{name.upper()}, {cname} context")
        fig.colorbar(im, ax=axes, label="P(choice > 0)")
        fig.suptitle("6 x 6 fixed-bias condition grid")
        paths.append(save_figure(fig, out_dir, "condition_grid"))
        fig, axes = subplots(1, 2, width=4.2, height=3.6, squeeze=False)
        cmap = __import__("matplotlib").colormaps["coolwarm"]
        for j, (cname, c, q, a_c, e_pts) in enumerate(rows):
            ax = axes[0, j]
            pe = e_pts @ q
            ax.scatter(pe[:, 0], pe[:, 1 + c], s=5, color="0.3", zorder=3, label="expansion points")
            for k in range(nb * nb):
                mb, cb = grid[k]
                level = CONDITION_BIASES.index(mb if c == 0 else cb)
                p = a_c[k] @ q
                ax.plot(p[:, 0], p[:, 1 + c], color=cmap(level / (nb - 1)), lw=0.8)
            if fps is not None and len(fps):
                sel = fps.x_star[:, 2 + c] > 0.5
                pf = fps.points[sel] @ q
                ax.scatter(pf[:, 0], pf[:, 1 + c], s=14, marker="x", color="k", zorder=4, label="fixed points")
            ax.set(xlabel="line attractor direction", ylabel=f"{cname} input direction", title=f"{cname} context")
            ax.legend(fontsize=7)
        fig.suptitle("JSLDS states in the line-attractor subspace (colour: cued bias)")
        paths.append(save_figure(fig, out_dir, "line_attractor"))
    return metrics, paths


def _context_selection(model, task, tr, x, out_dir: Path, figures: bool):
    """Per context: the top left eigenvector ("selection vector") at expansion points, projected on
    the effective inputs of the motion and colour streams (J_x columns 0 and 1; the paper's Fig. 3J),
    and how often the spectrum has one eigenvalue near 1 (a line attractor)."""
    from auxfn.jslds.analysis import selection_projections

    ctx = task.context_of(x)
    metrics, rows = {}, []
    for c, name in ((0, "motion"), (1, "colour")):
        e = tr.e[ctx == c][:, 2:].reshape(-1, tr.e.shape[-1])[:64]  # skip the first steps (transient)
        if e.shape[0] == 0:
            continue
        xs = torch.zeros(e.shape[0], task.n_input)
        xs[:, 2 + c] = 1.0
        jh, jx = model.linear_system(e, xs)
        vals, vecs = torch.linalg.eig(jh.double())
        order = vals.real.argsort(-1, descending=True)
        vals = torch.gather(vals, -1, order)
        vecs = torch.gather(vecs, -1, order[:, None, :].expand_as(vecs))
        proj = selection_projections(torch.linalg.inv(vecs), jx.double(), top=1)[:, 0, :2]
        proj = proj.real * torch.sign(proj.real.sum(-1, keepdim=True) + 1e-30)  # eigenvector sign is arbitrary
        near_one = ((vals - 1).abs() < 0.05).sum(-1)
        metrics[f"analysis/{name}_top_eigenvalue_median"] = vals[:, 0].real.median().item()
        metrics[f"analysis/{name}_fraction_one_eigenvalue_near_1"] = (near_one == 1).float().mean().item()
        metrics[f"analysis/{name}_selection_on_motion_median_abs"] = proj[:, 0].abs().median().item()
        metrics[f"analysis/{name}_selection_on_colour_median_abs"] = proj[:, 1].abs().median().item()
        rows.append((name, proj))
    paths = []
    if figures and rows:
        from auxfn.core.plotting import save_figure, subplots

        fig, ax = subplots(width=4, height=4)
        for name, proj in rows:
            ax.scatter(proj[:, 0].abs(), proj[:, 1].abs(), s=8, label=f"{name} context")
        ax.set(xlabel="|selection · effective motion input|", ylabel="|selection · effective colour input|",
               title="selection vectors at expansion points")
        ax.legend()
        paths.append(save_figure(fig, out_dir, "selection_vectors"))
    return metrics, paths


def _figures(model, task, tr, fps, x, out_dir: Path, jslds: bool) -> list[Path]:
    from auxfn.core.plotting import plt, save_figure, subplots

    paths = []
    W = model.readout.weight.detach()
    b = model.readout.bias.detach()
    # spectra along one trial: eigenvalues of J_h at the expansion points (or RNN states)
    pts = (tr.e if jslds else tr.h)[0]
    xs = model.x_star(x[0])
    jh, _ = model.linear_system(pts, xs)
    ev = torch.linalg.eigvals(jh.double())
    fig, ax = subplots(width=4, height=4)
    th = torch.linspace(0, 2 * torch.pi, 200)
    ax.plot(th.cos(), th.sin(), color="0.5", lw=1)
    sc = ax.scatter(ev.real.flatten(), ev.imag.flatten(), s=6, c=torch.arange(ev.shape[0]).repeat_interleave(ev.shape[1]), cmap="viridis")
    fig.colorbar(sc, ax=ax, label="time step")
    ax.set(xlabel="Re λ", ylabel="Im λ", title="J_h spectra along a trial", aspect="equal")
    paths.append(save_figure(fig, out_dir, "spectra"))
    if fps is not None and fps.eigvals is not None and len(fps):
        fig, ax = subplots(width=4, height=4)
        ax.plot(th.cos(), th.sin(), color="0.5", lw=1)
        ax.scatter(fps.eigvals.real.flatten(), fps.eigvals.imag.flatten(), s=4, alpha=0.5)
        ax.set(xlabel="Re λ", ylabel="Im λ", title=f"spectra at {len(fps)} fixed points", aspect="equal")
        paths.append(save_figure(fig, out_dir, "fixed_point_spectra"))
    # readout space: trajectories, expansion points and fixed points
    proj = lambda s: (s @ W.T + b).cpu()  # noqa: E731
    if W.shape[0] >= 3:
        fig = plt.figure(figsize=(5, 5))
        ax = fig.add_subplot(projection="3d")
        for i in range(min(4, tr.h.shape[0])):
            p = proj(tr.h[i])
            ax.plot(p[:, 0], p[:, 1], p[:, 2], color="0.6", lw=0.8)
        if jslds:
            pe = proj(tr.e.reshape(-1, tr.e.shape[-1]))
            ax.scatter(pe[:, 0], pe[:, 1], pe[:, 2], s=3, alpha=0.3, label="expansion points")
        if len(fps):
            pf = proj(fps.points)
            ax.scatter(pf[:, 0], pf[:, 1], pf[:, 2], s=12, marker="x", color="k", label="fixed points")
        ax.set(xlabel="out 0", ylabel="out 1", zlabel="out 2")
        ax.legend(fontsize=8)
        ax.set_title("readout space")
        paths.append(save_figure(fig, out_dir, "readout_space"))
    if jslds:
        fig, axes = subplots(1, 2, width=4.2)
        t = torch.arange(1, tr.h.shape[1] + 1)
        axes[0].plot(t, tr.y_rnn[0, :, 0].cpu(), label="RNN")
        axes[0].plot(t, tr.y_jslds[0, :, 0].cpu(), "--", label="JSLDS")
        axes[0].set(xlabel="time step", ylabel="readout 0", title="RNN vs JSLDS")
        axes[0].legend()
        err = ((tr.h - tr.a).norm(dim=-1) / tr.h.norm(dim=-1)).mean(0).cpu()
        axes[1].plot(t, err)
        axes[1].set(xlabel="time step", ylabel="||h - a|| / ||h||", title="relative error per step")
        paths.append(save_figure(fig, out_dir, "rnn_vs_jslds"))
    return paths


def is_flipflop(task) -> bool:
    return isinstance(task, FlipFlopTask)
