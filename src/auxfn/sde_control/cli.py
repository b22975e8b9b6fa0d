"""``auxfn sde-control ...``: train, simulate, eval, presets, and the demo.

Kept light on purpose: torch and the method's modules are imported inside the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auxfn.core.registry import DemoContext, DemoResult, Method, Preset

NAME = "sde-control"


def _train(argv: list[str]) -> int:
    """``train [--system S] [--method M] [--preset paper|quick] [--field value ...] [--out DIR] [--resume DIR]``.

    ``--system-factory package.module:callable`` trains on a user's system (``--system`` names it).
    """
    from auxfn.cli import UsageError, pop_option, train_command
    from auxfn.sde_control.config import METHODS, PRESETS, SYSTEM_NAMES, preset
    from auxfn.sde_control.training import train

    argv = list(argv)
    # a user's system (--system-factory package.module:callable): --system is then its name in the
    # run; the presets are the method's defaults unless that name is a built-in system's
    factory = pop_option(argv, "--system-factory") or ""
    system = pop_option(argv, "--system") or ("custom" if factory else "harmonic")
    method = pop_option(argv, "--method") or "as"
    if system not in SYSTEM_NAMES and not factory:
        raise UsageError(f"unknown system {system!r}; choose one of {', '.join(SYSTEM_NAMES)}, "
                         f"or name your own with --system-factory package.module:callable")
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    paper = "the official hyperparameters" if (system, method) in PRESETS else "the method's defaults"
    presets = {
        "paper": Preset(f"{system}/{method}: {paper}", preset(system, method, "paper", factory)),
        "quick": Preset(f"{system}/{method}: fewer samples and steps, coarse simulation", preset(system, method, "quick", factory)),
    }
    return train_command(NAME, presets, train, default_preset="paper")(argv)


def _presets(argv: list[str]) -> int:
    from auxfn.cli import presets_command
    from auxfn.sde_control.config import PRESETS

    flat = {}
    for (system, method), named in PRESETS.items():
        for name, cfg in named.items():
            what = f"alpha={cfg.alpha}" if method == "as" else f"b={cfg.b}"
            flat[f"--system {system} --method {method} --preset {name}"] = Preset(
                f"{cfg.n_samples} states, {what}, lr={cfg.lr}, <= {cfg.max_iters} steps, simulate T={cfg.eval_T} dt={cfg.eval_dt:g}",
                cfg,
            )
    return presets_command(flat)(argv)


@dataclass(frozen=True)
class SimulateArgs:
    """Simulate a trained controller against the uncontrolled system on paired noise."""

    run_dir: Path
    """A run folder written by `auxfn sde-control train`."""
    paths: int = 20
    """Number of paths."""
    T: float = 4.0
    """Horizon."""
    dt: float = 1e-3
    """Euler–Maruyama step."""
    eps: float = 0.05
    """epsilon of tau_eps."""
    seed: int = 0
    """Seed of the initial states and the noise."""
    method: str = "euler"
    """euler or milstein."""


def _simulate(argv: list[str]) -> int:
    import json

    from auxfn.cli import UsageError, parse

    if argv and not argv[0].startswith("-"):
        argv = ["--run-dir", argv[0], *argv[1:]]
    args = parse(SimulateArgs, argv, prog=f"auxfn {NAME} simulate")
    if args.paths < 1 or not args.T > 0 or not args.dt > 0 or args.method not in ("euler", "milstein"):
        raise UsageError("simulate: need --paths >= 1, --T > 0, --dt > 0, --method euler|milstein")
    import torch

    from auxfn.core.runs import Run, jsonable
    from auxfn.core.seeding import make_generator
    from auxfn.sde_control.metrics import summarize
    from auxfn.sde_control.plots import plot_norms
    from auxfn.sde_control.simulation import simulate
    from auxfn.sde_control.training import load_run

    cfg, base, sde, V = load_run(args.run_dir)
    torch.set_num_threads(max(1, cfg.threads))
    x0 = base.default_x0(args.paths, generator=make_generator(args.seed))
    n = max(1, round(args.T / args.dt))
    trajs = {
        name: simulate(s, x0, dt=args.dt, n_steps=n, seed=args.seed, method=args.method,
                       record_every=max(1, n // 2000), blowup=cfg.blowup)
        for name, s in (("controlled", sde), ("uncontrolled", base.with_controller(None)))
    }
    out = {name: summarize(tr, args.eps) for name, tr in trajs.items()}
    run = Run.open(args.run_dir)
    fig = plot_norms(trajs, run, eps=args.eps, name="simulate_norms")
    phase = None
    if base.dim == 2:
        from auxfn.sde_control.plots import plot_phase

        phase = plot_phase(trajs, run, name="simulate_phase")
    (run.path / "simulate.json").write_text(json.dumps(jsonable({"args": args, "metrics": out}), indent=2) + "\n")
    for name, m in out.items():
        print(name + ": " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))
    print(f"figure: {fig}")
    if phase is not None:
        print(f"figure: {phase}")
    return 0


def _eval(argv: list[str]) -> int:
    from auxfn.cli import UsageError

    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError(f"usage: auxfn {NAME} eval RUN_DIR")
    import torch

    from auxfn.core.runs import Run
    from auxfn.sde_control.evaluation import evaluate_and_plot
    from auxfn.sde_control.plots import plot_loss
    from auxfn.sde_control.training import _headline, certify, load_run

    cfg, base, sde, V = load_run(argv[0])
    torch.set_num_threads(max(1, cfg.threads))
    run = Run.open(argv[0])
    summary = dict(run.summary())
    if cfg.certify_samples:
        summary["heldout_violation_rate"] = certify(cfg, sde, V, cfg.certify_samples, seed=cfg.seed + 777)
    figures = [plot_loss(run)]
    if cfg.eval_paths:
        ev, figs = evaluate_and_plot(cfg, base, sde, V, run)
        summary.update(ev)
        figures += figs
    run.write_summary(summary)
    run.write_report(f"sde-control: {base.name} / {cfg.method}", _headline(summary), figures=figures)
    for k, v in _headline(summary).items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def _demo(ctx: DemoContext) -> DemoResult:
    import dataclasses

    from auxfn.sde_control.config import preset
    from auxfn.sde_control.training import train

    cfg = preset("harmonic", "as", "quick" if ctx.quick else "paper")
    cfg = dataclasses.replace(cfg, seed=ctx.seed)
    if ctx.quick:  # keep the quick demo well inside its 30 s on a busy 2-core machine
        cfg = dataclasses.replace(cfg, eval_dt=2e-3, certify_samples=10_000)
    res = train(cfg, out=ctx.out_dir / "harmonic-as", quiet=True)
    s = res.summary
    from auxfn.core.seeding import make_generator

    start = float(res.sde.default_x0(cfg.eval_paths, generator=make_generator(cfg.eval_seed)).norm(dim=1).mean())
    # the claim: AS reaches zero violation and every controlled path reaches eps; the
    # uncontrolled mean norm never reaches eps and grows (single uncontrolled paths may
    # touch eps by chance on the way, so their success rate is shown, not required to be 0)
    ok = (
        s["reached_zero"]
        and s["controlled/success_rate"] == 1.0
        and s["controlled/diverged"] == 0
        and s["uncontrolled/tau_mean_norm"] == float("inf")
        and s["uncontrolled/final_mean_norm"] > start
    )
    headline = (
        f"AS: zero violation after {s['iters_to_zero']} steps ({s['train_time_s']:.2f} s), "
        f"tau_0.05 = {s['controlled/tau_mean_norm']:.3g} (mean |x|), success {s['controlled/success_rate']:.0%}; "
        f"uncontrolled: mean |x| {start:.3g} -> {s['uncontrolled/final_mean_norm']:.3g} at T = {cfg.eval_T:g}, "
        f"paths reaching eps {s['uncontrolled/success_rate']:.0%}"
    )
    figs = [res.run_dir / "figures" / n for n in ("norms.png", "phase.png", "loss.png")]
    details = (
        f"Harmonic oscillator with destabilising noise (beta=0.5, k1=-3, k2=2.15), AS controller "
        f"u = NN(x)⊙x in the diffusion, alpha={cfg.alpha}, {cfg.n_samples} training states. "
        f"Held-out violation rate on {cfg.certify_samples} random states: {s.get('heldout_violation_rate')}. "
        f"{cfg.eval_paths} paired paths, T={cfg.eval_T}, dt={cfg.eval_dt:g}. Run folder: `{res.run_dir}`."
    )
    return DemoResult(
        shown="harmonic oscillator: AS control vs uncontrolled (paired noise)",
        headline=headline, figures=[f for f in figs if f.exists()], details=details, ok=bool(ok),
    )


METHOD = Method(
    name=NAME,
    summary="neural stochastic control: AS and ES learners for controlled SDEs (Zhang, Zhu & Lin 2022)",
    commands={
        "train": ("train a controller: --system S --method as|es-icnn|es-quad|es-linear [--preset paper|quick]", _train),
        "simulate": ("simulate a run's controller vs the uncontrolled system: RUN_DIR [--paths --T --dt]", _simulate),
        "eval": ("recompute a run's metrics and figures: RUN_DIR", _eval),
        "presets": ("list the presets per system and method", _presets),
    },
    demo=_demo,
    order=10,
)
