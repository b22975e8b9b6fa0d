"""The paper's headline at CPU scale: JSLDS vs the standard nearest-fixed-point linearisation.

Trains the quick JSLDS preset and its standard (plain RNN) baseline, then on one held-out batch
measures: task MSE of both, bit accuracy (flip-flop), the JSLDS's relative error to its RNN
(fully simulated), and the standard RNN linearised about its nearest numerical fixed point,
one-step-ahead and free-running. Also: expansion points vs numerical fixed points (corner
clusters of the readout for the flip-flop) and the time to fixed points (one pass of E vs
find_fixed_points from as many RNN states).

    python benchmarks/jslds/bench_headline.py --task flipflop [--steps-scale 1.0] [--out DIR]

Writes results.json and results.md into --out (default benchmarks/jslds/results/headline-<task>).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from auxfn.core.seeding import make_generator
from auxfn.jslds.analysis import (
    find_fixed_points,
    nearest_fixed_point_linearization,
    relative_error,
)
from auxfn.jslds.tasks import FlipFlopTask
from auxfn.jslds.train import PRESETS, JSLDSResult, evaluate, load_run, train


def held_out(model, task, batch, seed=777):
    x, y, mask = task.sample(batch, make_generator(seed))
    with torch.no_grad():
        tr = model(x, run_jslds=True)
    return x, y, mask, tr


def mse(yhat, y, mask):
    m = mask.unsqueeze(-1).float()
    return (((yhat - y) ** 2) * m).sum().item() / (m.sum().item() * y.shape[-1])


def _trained(cfg, run_dir, out):
    """Train ``cfg`` into ``out``, or load the finished run ``run_dir``; returns (result, seconds)."""
    if run_dir is None:
        t0 = time.perf_counter()
        res = train(cfg, out=out)
        return res, time.perf_counter() - t0
    loaded_cfg, model, task = load_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    return JSLDSResult(run_dir, summary, model, task, loaded_cfg), summary["seconds_per_step"] * loaded_cfg.steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["flipflop", "context"], default="flipflop")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply the presets' step counts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--fp-candidates", type=int, default=1024)
    ap.add_argument("--fp-iters", type=int, default=3000)
    ap.add_argument("--q-tol", type=float, default=None,
                    help="keep fixed points with 1/2||F(h)-h||^2 below this; default n * 2.5e-7, i.e. the official "
                         "notebooks' mean_n (F(h)-h)^2 < 5e-7")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--jslds-run", type=Path, default=None, help="reuse a trained co-trained run instead of training")
    ap.add_argument("--standard-run", type=Path, default=None, help="reuse a trained standard run instead of training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / f"headline-{args.task}"
    out.mkdir(parents=True, exist_ok=True)
    jcfg = PRESETS[f"quick-{args.task}"].config
    scfg = PRESETS[f"standard-{args.task}"].config
    jcfg = replace(jcfg, steps=max(1, int(jcfg.steps * args.steps_scale)), seed=args.seed, threads=args.threads)
    scfg = replace(scfg, steps=max(1, int(scfg.steps * args.steps_scale)), seed=args.seed, threads=args.threads)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jres, t_j = _trained(jcfg, args.jslds_run, out / f"run-jslds-{stamp}")
    sres, t_s = _trained(scfg, args.standard_run, out / f"run-standard-{stamp}")
    jcfg, scfg = jres.config, sres.config
    task = jres.task
    flip = isinstance(task, FlipFlopTask)

    # co-trained model: fully simulated JSLDS
    x, y, mask, tr = held_out(jres.model, task, args.eval_batch)
    row_j = {
        "train_steps": jcfg.steps, "train_seconds": t_j,
        "mse_rnn": mse(tr.y_rnn, y, mask), "mse_jslds": mse(tr.y_jslds, y, mask),
        "relative_error_jslds_free": relative_error(tr.a, tr.h).item(),
        "expansion_fp_loss_mean": ((jres.model.cell(tr.e.flatten(0, 1), jres.model.x_star(x).flatten(0, 1)) - tr.e.flatten(0, 1)) ** 2).mean().item(),
    }
    if flip:
        row_j["bit_accuracy_rnn"] = evaluate(jres.model, task, args.eval_batch, seed=777)[0]["eval/bit_accuracy_rnn"]
        row_j["bit_accuracy_jslds"] = evaluate(jres.model, task, args.eval_batch, seed=777)[0]["eval/bit_accuracy_jslds"]
    # time to fixed points: one pass of E over N states vs the numerical finder from N states
    N = min(args.fp_candidates, tr.a.numel() // tr.a.shape[-1])
    g = make_generator(args.seed + 5)
    idx = torch.randperm(tr.a.shape[0] * tr.a.shape[1], generator=g)[:N]
    a_pts = tr.a.flatten(0, 1)[idx]
    t0 = time.perf_counter()
    with torch.no_grad():
        e_pts = jres.model.expansion(a_pts)
    row_j["seconds_expansion_points"] = time.perf_counter() - t0
    if flip:
        with torch.no_grad():
            corners = torch.sign(jres.model.readout(e_pts))
        row_j["expansion_point_corner_clusters"] = len(torch.unique(corners, dim=0))

    # standard model: numerical fixed points, then the nearest-fixed-point linearisation
    xs_, ys_, ms_, trs = held_out(sres.model, task, args.eval_batch)
    row_s = {"train_steps": scfg.steps, "train_seconds": t_s, "mse_rnn": mse(trs.y_rnn, ys_, ms_)}
    if flip:
        row_s["bit_accuracy_rnn"] = evaluate(sres.model, task, args.eval_batch, seed=777, run_jslds=False)[0]["eval/bit_accuracy_rnn"]
    pool = trs.h.flatten(0, 1)
    pool_x = sres.model.x_star(xs_).flatten(0, 1)
    idx = torch.randperm(pool.shape[0], generator=g)[:N]
    t0 = time.perf_counter()
    q_tol = args.q_tol if args.q_tol is not None else sres.model.n_state * 2.5e-7
    row_s["q_tol"] = q_tol
    fps = find_fixed_points(sres.model.cell, pool[idx], pool_x[idx], lr=0.01, max_iters=args.fp_iters, q_tol=q_tol)
    row_s["seconds_find_fixed_points"] = time.perf_counter() - t0
    row_s["n_candidates"] = N
    row_s["n_fixed_points"] = len(fps)
    row_s["n_stable_fixed_points"] = int(fps.is_stable.sum()) if len(fps) else 0
    h0 = sres.model.initial_state(xs_.shape[0]).detach()
    for mode in ("one_step", "free"):
        try:
            approx = nearest_fixed_point_linearization(fps, trs.h, xs_, h0, sres.model.x_star, mode=mode)
            row_s[f"relative_error_nearest_fp_{mode}"] = relative_error(approx, trs.h).item()
        except ValueError as err:
            row_s[f"relative_error_nearest_fp_{mode}"] = None
            row_s["note"] = str(err)
    if flip and len(fps):
        with torch.no_grad():
            stable = fps.points[fps.is_stable]
            row_s["stable_fp_corner_clusters"] = len(torch.unique(torch.sign(sres.model.readout(stable)), dim=0)) if len(stable) else 0

    results = {"task": args.task, "steps_scale": args.steps_scale, "threads": args.threads, "seed": args.seed,
               "torch": torch.__version__, "jslds": row_j, "standard": row_s}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# JSLDS headline benchmark: {args.task}", "",
             f"steps scale {args.steps_scale}, seed {args.seed}, {args.threads} thread(s), torch {torch.__version__}", "",
             "| system | metric | value |", "|---|---|---|"]
    lines += [f"| co-trained (JSLDS) | {k} | {fmt(v)} |" for k, v in row_j.items()]
    lines += [f"| standard RNN | {k} | {fmt(v)} |" for k, v in row_s.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
