"""Toy-scale analogues of the paper's claims, over 3 seeds (CPU, tiny models, no download).

For each task (length-ratio, coop-sum) and seed: train a pair with MAGRPO (aligned), and for
length-ratio also with cross joint actions; evaluate the trained pair and the four baselines
of the untrained start (naive concatenation, sequential, one-round discussion, single
agent) on the held-out prompts (mean of sampled joint actions). Prints a table and writes
results/toy_results.json + results/toy_results.md.

    python benchmarks/magrpo/bench_toy.py [--steps 60] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    import torch

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.baselines import BASELINES, run_baseline
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.train import TrainConfig, build, train

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = MAGRPOConfig(num_generations=8, max_completion_length=16, learning_rate=3e-3, temperature=1.0, top_p=1.0, max_steps=args.steps)
    settings = {
        "length-ratio": [("MAGRPO aligned", base), ("MAGRPO cross (G=4, 16 joint)", dataclasses.replace(base, num_generations=4, joint_mode="cross"))],
        "coop-sum": [("MAGRPO aligned", dataclasses.replace(base, max_completion_length=4))],
    }
    results: dict = {}
    for task, variants in settings.items():
        res = results.setdefault(task, {})
        for seed in args.seeds:
            for label, tcfg in variants:
                cfg = TrainConfig(task=task, trainer=dataclasses.replace(tcfg, seed=seed), eval_items=16, eval_samples=4, checkpoint_every=10**6)
                r = train(cfg, out=out / "runs" / f"{task}-{label.split()[1]}-seed{seed}")
                res.setdefault(label, []).append(r.summary["eval_reward_after"])
                print(f"{task} seed {seed} {label}: eval {r.summary['eval_reward_before']:.3f} -> {r.summary['eval_reward_after']:.3f}", flush=True)
            seed_everything(seed)
            cfg = TrainConfig(task=task, trainer=dataclasses.replace(variants[0][1], seed=seed), eval_items=16)
            _, t, trainer = build(cfg)
            for b in BASELINES:
                v = run_baseline(trainer, b, t.eval[:16], samples=4)
                res.setdefault(f"untrained {b}", []).append(v)
                print(f"{task} seed {seed} untrained {b}: {v:.3f}", flush=True)
    lines = ["| task | method | eval reward mean ± std over seeds | per seed |", "|---|---|---|---|"]
    clean = {}
    for task, res in results.items():
        clean[task] = dict(res)
        for k, v in clean[task].items():
            lines.append(f"| {task} | {k} | {np.mean(v):.3f} ± {np.std(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |")
    table = "\n".join(lines)
    print(table)
    (out / "toy_results.json").write_text(json.dumps({"steps": args.steps, "seeds": args.seeds, "results": clean}, indent=2) + "\n")
    (out / "toy_results.md").write_text(f"# MAGRPO toy analogues\n\n{args.steps} steps, seeds {args.seeds}.\n\n{table}\n")


if __name__ == "__main__":
    main()
