"""``auxfn jslds ...``: train, eval, analyze, presets, and the demo. Kept light: heavy imports are inside."""

from __future__ import annotations

import json
from pathlib import Path

from auxfn.cli import presets_command
from auxfn.core.errors import UserError
from auxfn.core.registry import DemoContext, DemoResult, Method, Preset


def _presets() -> dict[str, Preset]:
    from auxfn.jslds.train import PRESETS

    return PRESETS


def _train(argv: list[str]) -> int:
    from auxfn.cli import train_command
    from auxfn.jslds.train import PRESETS, train

    return train_command("jslds", PRESETS, train, default_preset="quick-flipflop")(argv)


def _run_dir(argv: list[str], command: str, options: tuple[str, ...] = ()) -> tuple[Path, dict[str, int]]:
    """``RUN_DIR`` plus integer ``--option N`` values (and an ignored ``--quiet``)."""
    args = [a for a in argv if a != "--quiet"]
    values: dict[str, int] = {}
    for opt in options:
        if opt in args:
            i = args.index(opt)
            try:
                values[opt.lstrip("-").replace("-", "_")] = int(args[i + 1])
            except (IndexError, ValueError):
                raise UserError(f"{opt} needs an integer value") from None
            del args[i : i + 2]
    if len(args) != 1 or args[0].startswith("-"):
        usage = "".join(f" [{o} N]" for o in options)
        raise UserError(f"usage: auxfn jslds {command} RUN_DIR{usage}")
    return Path(args[0]), values


def _eval(argv: list[str]) -> int:
    from auxfn.jslds.train import evaluate, load_run

    path, _ = _run_dir(argv, "eval")
    cfg, model, task = load_run(path)
    metrics, _, _ = evaluate(model, task, cfg.eval_batch_size, seed=cfg.seed + 10_000, run_jslds=cfg.weights.needs_jslds)
    (path / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}")
    return 0


def _analyze(argv: list[str]) -> int:
    from auxfn.core.runs import Run, jsonable
    from auxfn.jslds.report import analyze_model
    from auxfn.jslds.train import load_run

    path, opts = _run_dir(argv, "analyze", ("--candidates", "--fp-iters"))
    cfg, model, task = load_run(path)
    run = Run.open(path)
    metrics, figures = analyze_model(model, task, run.figures_dir, jslds=cfg.weights.needs_jslds,
                                     n_candidates=opts.get("candidates", 256), fp_iters=opts.get("fp_iters", 2000),
                                     fixed_points_dir=path / "fixed_points")
    (path / "analysis.json").write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
    body = "\n".join(f"- {k.split('/', 1)[1]}: {v:.4g}" if isinstance(v, float) else f"- {k.split('/', 1)[1]}: {v}"
                     for k, v in metrics.items())
    existing = sorted(run.figures_dir.glob("*.png"))
    run.write_report(f"JSLDS training: {cfg.task}", run.summary(), sections=[("Analysis", body)], figures=existing)
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    print(f"figures: {', '.join(p.name for p in figures)}; fixed points: {path / 'fixed_points'}; report: {path / 'report.md'}")
    return 0


def _demo(ctx: DemoContext) -> DemoResult:
    import torch

    from auxfn.jslds.report import analyze_model
    from auxfn.jslds.train import PRESETS, train

    base = PRESETS["quick-flipflop"].config
    from dataclasses import replace

    if ctx.quick:
        cfg = replace(base, n_state=32, batch_size=32, steps=300, eval_every=300, checkpoint_every=300, seed=ctx.seed)
    else:
        cfg = replace(base, n_state=48, batch_size=64, steps=1500, eval_every=500, checkpoint_every=500, seed=ctx.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = train(cfg, out=ctx.out_dir / "run", quiet=ctx.quiet)
        metrics, figs = analyze_model(res.model, res.task, ctx.out_dir / "run" / "figures", batch_size=32,
                                      n_candidates=32 if ctx.quick else 256, fp_iters=150 if ctx.quick else 1500)
    finally:
        torch.set_num_threads(threads)
    s = res.summary
    rel, fpl = metrics["analysis/relative_error_jslds"], metrics["analysis/expansion_fp_loss_mean"]
    acc = min(s["bit_accuracy_rnn"], s["bit_accuracy_jslds"])
    ok = rel < 0.3 and fpl < 1e-3 and acc > 0.9
    headline = (f"JSLDS vs RNN rel. error {rel:.3f}; expansion-point fixed-point loss {fpl:.1e}; "
                f"bit accuracy RNN {s['bit_accuracy_rnn']:.3f} / JSLDS {s['bit_accuracy_jslds']:.3f}")
    details = (f"3-bit flip-flop, GRU n={cfg.n_state}, {cfg.steps} steps of batch {cfg.batch_size}. "
               f"Task MSE RNN {s['mse_rnn']:.2e}, JSLDS {s['mse_jslds']:.2e}. "
               f"Claim checked: relative error < 0.3, fixed-point loss < 1e-3, bit accuracy > 0.9.")
    return DemoResult(shown="3-bit flip-flop: co-trained GRU and its JSLDS", headline=headline,
                      figures=[res.run_dir / "figures" / "readouts.png", *figs], details=details, ok=ok)


METHOD = Method(
    name="jslds",
    summary="RNNs co-trained with a Jacobian switching linear dynamical system (Smith et al. 2021)",
    commands={
        "train": ("train a JSLDS/RNN pair (or a plain RNN with a standard-* preset)", _train),
        "eval": ("reload a run and recompute its held-out metrics", _eval),
        "analyze": ("fixed points, spectra, relative errors and figures of a run", _analyze),
        "presets": ("list presets", lambda argv: presets_command(_presets())(argv)),
    },
    demo=_demo,
    order=20,
)
