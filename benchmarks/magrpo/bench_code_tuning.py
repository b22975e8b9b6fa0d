"""Does MAGRPO improve on the supervised warm-up on aux-code? A small sweep from one warm-up per seed.

For each seed: build the two tiny Llama agents, score them at random init, run the template
warm-up once, score again, then for every variant start from a copy of the warmed-up agents
(fresh AdamW; with ``beta > 0`` the KL reference is the warmed-up pair) and train
``--steps`` MAGRPO steps. Every score is the mean joint reward (max 4.0) of
``--eval-samples`` sampled joint actions on each of the 16 held-out problems, drawn with one
fixed generator seed per evaluation so that variants are compared on the same random stream.
Writes results/code_tuning.json + results/code_tuning.md.

    python benchmarks/magrpo/bench_code_tuning.py [--steps 40] [--seeds 0 1 2] [--variants base lr5e-5 ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    # the previous setting: lr 2e-4, G=8, one prompt per step, sequence-sum loss, no KL
    "base": {},
    "lr5e-5": {"learning_rate": 5e-5},
    "lr5e-5 group-scaled": {"learning_rate": 5e-5, "scale_rewards": "group"},
    "lr2e-4 beta0.1": {"beta": 0.1},
    "lr5e-5 2 prompts/step": {"learning_rate": 5e-5, "prompts_per_step": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    import torch

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.cli import CODE_LR
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.train import TrainConfig, build, run_warmup

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = MAGRPOConfig(num_generations=8, max_completion_length=32, learning_rate=CODE_LR, temperature=1.0, top_p=1.0, max_steps=args.steps)

    def score(trainer, seed: int) -> float:
        torch.manual_seed(10_000 + seed)  # same sampling stream for every evaluation of this seed
        return trainer.evaluate(greedy=False, num_samples=args.eval_samples)["eval/reward"]

    res: dict[str, list[float]] = {}
    curves: dict[str, list[list[float]]] = {}
    for seed in args.seeds:
        seed_everything(seed)
        cfg = TrainConfig(task="aux-code", trainer=dataclasses.replace(base, seed=seed), eval_items=16, eval_samples=args.eval_samples,
                          warmup_steps=args.warmup_steps)
        tok, task, trainer = build(cfg)
        res.setdefault("random init", []).append(score(trainer, seed))
        t0 = time.perf_counter()
        run_warmup(dataclasses.replace(cfg, eval_samples=1, eval_items=1), tok, task, trainer)
        warm_s = time.perf_counter() - t0
        warm = [copy.deepcopy(a) for a in trainer.agents]
        res.setdefault("warm-up only", []).append(score(trainer, seed))
        print(f"seed {seed}: init {res['random init'][-1]:.3f}, warm-up {res['warm-up only'][-1]:.3f} ({warm_s:.0f} s)", flush=True)
        for name in args.variants:
            tcfg = dataclasses.replace(base, seed=seed, **VARIANTS[name])
            vcfg = dataclasses.replace(cfg, trainer=tcfg)
            seed_everything(seed)
            _, _, tr = build(vcfg, [copy.deepcopy(a) for a in warm])
            t0 = time.perf_counter()
            rows = [tr.step() for _ in range(args.steps)]
            sec = (time.perf_counter() - t0) / args.steps
            after = score(tr, seed)
            res.setdefault(f"MAGRPO {name}", []).append(after)
            curves.setdefault(name, []).append([r["reward"] for r in rows])
            k = min(10, len(rows))
            first = np.mean([r["reward"] for r in rows[:k]])
            last = np.mean([r["reward"] for r in rows[-k:]])
            print(f"seed {seed} {name}: eval {res['warm-up only'][-1]:.3f} -> {after:.3f} (train reward first/last {k}: {first:.3f} -> {last:.3f}; {sec:.2f} s/step)",
                  flush=True)
    lines = [f"{args.steps} MAGRPO steps after {args.warmup_steps} warm-up steps; eval = mean joint reward (max 4) of "
             f"{args.eval_samples} sampled joint actions x 16 held-out problems; seeds {args.seeds}.", "",
             "| setting | eval reward mean ± std over seeds | gain over warm-up (mean ± std) | per seed |", "|---|---|---|---|"]
    w = np.array(res["warm-up only"])
    for k, v in res.items():
        v = np.array(v)
        gain = f"{np.mean(v - w[: len(v)]):+.3f} ± {np.std(v - w[: len(v)]):.3f}" if k.startswith("MAGRPO") else ""
        lines.append(f"| {k} | {v.mean():.3f} ± {v.std():.3f} | {gain} | {', '.join(f'{x:.3f}' for x in v)} |")
    table = "\n".join(lines)
    print(table)
    (out / "code_tuning.json").write_text(json.dumps({"steps": args.steps, "warmup_steps": args.warmup_steps, "seeds": args.seeds,
                                                      "eval_samples": args.eval_samples, "variants": {k: VARIANTS[k] for k in args.variants},
                                                      "results": res, "train_reward_curves": curves}, indent=1) + "\n")
    (out / "code_tuning.md").write_text(f"# MAGRPO on aux-code: settings sweep from one warm-up per seed\n\n{table}\n")


if __name__ == "__main__":
    main()
