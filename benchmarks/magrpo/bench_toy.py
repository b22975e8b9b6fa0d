"""Toy-scale analogues of the paper's claims, over 3 seeds (CPU, tiny models, no download).

For each task (length-ratio, coop-sum) and seed: train a pair with MAGRPO (aligned), and for
length-ratio also with cross joint actions; evaluate the trained pair and the four baselines
of the untrained start (naive concatenation, sequential, one-round discussion, single
agent) on the held-out prompts (mean of sampled joint actions). Prints a table and writes
results/toy_results.json + results/toy_results.md.

For the coding tasks (aux-code, aux-code-mt) every run starts with the supervised warm-up
(``--warmup-steps``); the baselines use the same warmed-up agents, and "warm-up only" is
the pair before MAGRPO. aux-code-mt trains with two turns (turn-2 prompts carry the
sandbox's verdict) and is compared with single-turn training of the same budget in
optimizer steps, both scored on the final turn's reward. coop-sum is also run with a
format warm-up ("MAGRPO after warm-up").

    python benchmarks/magrpo/bench_toy.py [--steps 60] [--code-steps 40] [--code-lr 5e-5] [--seeds 0 1 2] [--tasks ...]
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
    ap.add_argument("--code-steps", type=int, default=40)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--code-lr", type=float, default=None, help="MAGRPO learning rate on the coding tasks (default: the CLI's CODE_LR)")
    ap.add_argument("--tasks", nargs="+", default=["length-ratio", "coop-sum", "coop-sum-warmup", "aux-code", "aux-code-mt"])
    args = ap.parse_args()

    import torch

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.baselines import BASELINES, run_baseline
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.train import TrainConfig, build, train

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from auxfn.magrpo.cli import CODE_LR

    code = MAGRPOConfig(num_generations=8, max_completion_length=32, learning_rate=args.code_lr or CODE_LR, temperature=1.0, top_p=1.0,
                        max_steps=args.code_steps)
    base = MAGRPOConfig(num_generations=8, max_completion_length=16, learning_rate=3e-3, temperature=1.0, top_p=1.0, max_steps=args.steps)
    settings = {
        "length-ratio": [("MAGRPO aligned", base), ("MAGRPO cross (G=4, 16 joint)", dataclasses.replace(base, num_generations=4, joint_mode="cross"))],
        "coop-sum": [("MAGRPO aligned", dataclasses.replace(base, max_completion_length=4))],
        "coop-sum-warmup": [("MAGRPO after warm-up", dataclasses.replace(base, max_completion_length=4))],
        "aux-code": [("MAGRPO aligned", code)],
        "aux-code-mt": [("MAGRPO 2 turns (G=4)", dataclasses.replace(code, num_generations=4, num_turns=2)),
                        ("MAGRPO 1 turn (G=4), scored on turn 2", dataclasses.replace(code, num_generations=4, num_turns=2))],
    }
    settings = {k: v for k, v in settings.items() if k in args.tasks}
    results: dict = {}
    curves: dict = {}
    for name, variants in settings.items():
        task = name.removesuffix("-warmup")
        coding = task.startswith("aux-code")
        warm = args.warmup_steps if coding or name.endswith("-warmup") else 0
        res = results.setdefault(name, {})
        for seed in args.seeds:
            for label, tcfg in variants:
                one_turn = "1 turn" in label
                cfg = TrainConfig(task=task, trainer=dataclasses.replace(tcfg, seed=seed), eval_items=16, eval_samples=4,
                                  checkpoint_every=10**6, warmup_steps=warm)
                if one_turn:  # train single-turn on aux-code, then score with the two-turn protocol
                    cfg1 = dataclasses.replace(cfg, task="aux-code", trainer=dataclasses.replace(cfg.trainer, num_turns=1, num_generations=4))
                    r = train(cfg1, out=out / "runs" / f"{name}-1turn-seed{seed}")
                    _, _, tr2 = build(cfg, [a for a in r.trainer.agents])
                    after = tr2.evaluate(greedy=False, num_samples=cfg.eval_samples)["eval/reward"]
                else:
                    r = train(cfg, out=out / "runs" / f"{name}-{label.split()[1]}-seed{seed}")
                    after = r.summary["eval_reward_after"]
                res.setdefault(label, []).append(after)
                curves.setdefault(f"{name} / {label}", []).append([row["reward"] for row in r.trainer.log_history])
                if warm and label == variants[0][0]:
                    res.setdefault("warm-up only (before MAGRPO)", []).append(r.summary["eval_reward_before"])
                    for k, v in r.summary.items():
                        if k.startswith("valid_code_rate"):
                            res.setdefault(k, []).append(v)
                print(f"{name} seed {seed} {label}: eval {r.summary['eval_reward_before']:.3f} -> {after:.3f}", flush=True)
            if task == "aux-code-mt":
                continue  # the baselines are single-turn protocols: reported on aux-code
            seed_everything(seed)
            cfg = TrainConfig(task=task, trainer=dataclasses.replace(variants[0][1], seed=seed), eval_items=16, warmup_steps=warm)
            tok, t, trainer = build(cfg)
            if warm:
                from auxfn.magrpo.train import run_warmup

                run_warmup(cfg, tok, t, trainer)
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
    _figure(curves, out)
    (out / "toy_results.json").write_text(json.dumps({"steps": args.steps, "code_steps": args.code_steps, "warmup_steps": args.warmup_steps,
                                                      "code_lr": args.code_lr or CODE_LR,
                                                      "seeds": args.seeds, "results": clean}, indent=2) + "\n")
    (out / "toy_results.md").write_text(f"# MAGRPO toy analogues\n\n{args.steps} steps, seeds {args.seeds}.\n\n{table}\n")


def _figure(curves: dict, out: Path) -> None:
    """Training reward per step (mean over seeds, 5-step moving mean), one panel per run kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    if not n:
        return
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, (name, runs) in zip(axes[0], curves.items()):
        L = min(len(r) for r in runs)
        m = np.mean([r[:L] for r in runs], 0)
        k = 5
        smooth = np.convolve(m, np.ones(k) / k, mode="valid") if L >= k else m
        ax.plot(m, alpha=0.3)
        ax.plot(np.arange(len(smooth)) + (L - len(smooth)), smooth)
        ax.set_title(name, fontsize=7)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("joint reward (train)")
    fig.tight_layout()
    fig.savefig(out / "toy_reward_curves.png", dpi=110)


if __name__ == "__main__":
    main()
