"""``auxfn jepa ...``: train, audit/eval, ablation, presets, and the demo.

Kept light: torch and the method's modules are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auxfn.core.registry import DemoContext, DemoResult, Method, Preset

__all__ = ["METHOD"]


def _presets() -> dict[str, Preset]:
    from auxfn.jepa.training import PRESETS

    return PRESETS


def _train(argv: list[str]) -> int:
    from auxfn.cli import train_command
    from auxfn.jepa.training import PRESETS, train

    return train_command("jepa", PRESETS, train, default_preset="quick")(argv)


def _presets_cmd(argv: list[str]) -> int:
    from auxfn.cli import presets_command

    return presets_command(_presets())(argv)


@dataclass(frozen=True)
class AuditOptions:
    """auxfn jepa audit RUN_DIR [--n-render N]: reload a run and recompute its audit
    (Theorem 1 measured), summary.json, figures and report.md."""

    n_render: int | None = None
    """Renders per state (default: the run's audit_n_render)."""


def _audit(argv: list[str]) -> int:
    from auxfn.cli import UsageError, parse
    from auxfn.core.errors import UserError
    from auxfn.core.runs import Run

    if argv and argv[0] in ("-h", "--help"):
        parse(AuditOptions, ["--help"], prog="auxfn jepa audit RUN_DIR")
    if not argv or argv[0].startswith("-"):
        raise UsageError("auxfn jepa audit needs a run directory: auxfn jepa audit RUN_DIR [--n-render N]")
    run_dir, opts = Path(argv[0]), parse(AuditOptions, argv[1:], prog="auxfn jepa audit RUN_DIR")
    Run.open(run_dir)  # a clear error when it is not a run directory
    if opts.n_render is not None and opts.n_render < 2:
        raise UserError(f"--n-render must be >= 2, got {opts.n_render}")
    from auxfn.jepa.training import reaudit

    _, report = reaudit(run_dir, opts.n_render)
    print(report.markdown())
    print(f"run directory: {run_dir}")
    return 0


@dataclass(frozen=True)
class AblationArgs:
    """Train and audit the ablation grid (modes x seeds x environments); writes results.json and results.md."""

    modes: tuple[str, ...] = ("joint", "aux_only", "dyn_only", "random_aux", "two_stage", "stopgrad", "ema", "vicreg")
    """Training modes."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds."""
    envs: tuple[str, ...] = ("counting-slots", "counting-resample", "gridworld-bg")
    """Environment settings: counting-slots, counting-resample, gridworld-bg."""
    steps: int = 1500
    """Steps per run (quick preset otherwise)."""
    out: Path = Path("benchmarks/jepa/results")
    """Output folder (finished cells in OUT/cells are skipped when run again)."""
    workers: int = 1
    """Cells trained at a time, each in its own process with one torch thread."""


def _ablation(argv: list[str]) -> int:
    import dataclasses

    from auxfn.cli import parse
    from auxfn.core.errors import UserError
    from auxfn.jepa.ablation import run_grid
    from auxfn.jepa.training import PRESETS

    args = parse(AblationArgs, argv, prog="auxfn jepa ablation")
    try:
        base = dataclasses.replace(PRESETS["quick"].config, steps=args.steps, figures=False)
        run_grid(args.modes, args.seeds, args.envs, args.out, base=base, workers=args.workers)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(f"results: {args.out / 'results.md'}")
    return 0


def _demo(ctx: DemoContext) -> DemoResult:
    """joint vs dyn_only on the counting env (16x16, slots): separated classes and collapsed pairs."""
    import dataclasses

    from auxfn.core.plotting import save_figure, subplots
    from auxfn.jepa.training import PRESETS, train

    base = PRESETS["quick"].config
    if ctx.quick:
        base = dataclasses.replace(base, steps=450, batch_size=64, audit_n_render=8, figures=False)  # the demo draws its own figure
    results = {}
    for mode in ("joint", "dyn_only"):
        cfg = dataclasses.replace(base, mode=mode, seed=ctx.seed, steps=base.steps if mode == "joint" else max(200, base.steps // 2), device=ctx.device)
        results[mode] = train(cfg, out=ctx.out_dir / mode, quiet=True)
    j, d = results["joint"].report, results["dyn_only"].report
    fig, axes = subplots(1, 2, width=4.0, height=3.4)
    import numpy as np

    for ax, (mode, rep) in zip(axes, ((m, results[m].report) for m in results)):
        z, cls = rep.latents["z"], rep.latents["classes"]
        zc = z - z.mean(0)
        vt = np.linalg.svd(zc, full_matrices=False)[2]
        pc = zc @ vt[:2].T
        ax.scatter(pc[:, 0], pc[:, 1], c=cls, cmap="tab10", s=6)
        ax.set(title=f"{mode}: {rep.n_separated_classes}/{rep.n_classes} separated", xlabel="PC 1", ylabel="PC 2")
    fig_path = save_figure(fig, ctx.out_dir, "joint_vs_dyn_only")
    ok = j.n_separated_classes >= 8 and j.n_collapsed_pairs == 0 and d.n_separated_classes < 3
    headline = (
        f"joint: {j.n_separated_classes}/{j.n_classes} classes separated, {j.n_collapsed_pairs} collapsed pairs, "
        f"{j.n_clusters} clusters; dyn_only: {d.n_separated_classes}/{d.n_classes} separated, {d.n_collapsed_pairs} collapsed"
    )
    details = "### joint\n\n" + j.markdown() + "\n\n### dyn_only\n\n" + d.markdown()
    return DemoResult(shown="counting env: joint P-JEPA vs dynamics-only", headline=headline, figures=[fig_path], details=details, ok=ok)


METHOD = Method(
    name="jepa",
    summary="JEPA with an auxiliary head in deterministic MDPs (P-JEPA) and its bisimulation audit",
    commands={
        "train": ("train P-JEPA or an ablation mode: --preset quick|paper, --mode, --env, ...", _train),
        "audit": ("recompute a run's audit (collapsed pairs, clusters, probes, figures): RUN_DIR", _audit),
        "eval": ("same as audit: reload RUN_DIR and recompute its metrics and figures", _audit),
        "ablation": ("train and audit the grid of modes x seeds x environments", _ablation),
        "presets": ("list presets", _presets_cmd),
    },
    demo=_demo,
    order=30,
)
