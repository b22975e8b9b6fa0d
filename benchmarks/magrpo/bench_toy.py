"""Toy-scale analogues of the paper's claims, over 3 seeds (CPU, tiny models, no download).

For each task (length-ratio, coop-sum) and seed: train a pair with MAGRPO (aligned), and for
length-ratio also with cross joint actions; evaluate the trained pair and the four baselines
of the untrained start (naive concatenation, sequential, one-round discussion, single
agent) on the held-out prompts (mean of sampled joint actions). Prints a table and writes
results/toy_results.json + results/toy_results.md.

For the coding tasks (aux-code, aux-code-mt) every run starts with the supervised warm-up
(``--warmup-steps``); the baselines use the same warmed-up agents, and "warm-up only" is
the pair before MAGRPO. aux-code-mt compares two-turn with single-turn MAGRPO like for
like: both arms start from the same two-turn warm-up (turn-1 and turn-2 templates, same
seed, so the same warmed-up pair: the "before" rows of the two arms must agree), both
take the same number of optimizer steps and sample the same number of completions per
agent and step (two turns with G = 4: 4 + 4 x 4 = 20; one turn: G = 20), and both are
scored with the two-turn protocol on the final turn's reward. The single-turn arm trains
on turn-1 prompts only (the paper's single-turn setting). coop-sum is also run with a
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
        # same warm-up, same optimizer steps, same completions per step (2 turns, G=4: 4 + 16 = 20; 1 turn: G=20)
        "aux-code-mt": [("MAGRPO 2 turns (G=4)", dataclasses.replace(code, num_generations=4, num_turns=2)),
                        ("MAGRPO 1 turn (G=20), scored on turn 2", dataclasses.replace(code, num_generations=20, num_turns=2))],
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
                if one_turn:
                    r = _single_turn_arm(cfg, tcfg.num_generations)
                    after = r.summary["eval_reward_after"]
                    res.setdefault("before MAGRPO (1-turn arm)", []).append(r.summary["eval_reward_before"])
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
                wl = r.summary.get("warmup_loss/agent_0")
                print(f"{name} seed {seed} {label}: eval {r.summary['eval_reward_before']:.3f} -> {after:.3f}"
                      + (f" (warm-up loss agent 0: {wl:.6f})" if wl is not None else ""), flush=True)
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


def _single_turn_arm(cfg, G: int):
    """Single-turn MAGRPO from the two-turn warm-up of ``cfg`` (an aux-code-mt config), scored on turn 2.

    Repeats :func:`auxfn.magrpo.train.train`'s order of seeding, building, warm-up and the
    "before" evaluation, so the warmed-up pair (and the random state) is the one the two-turn
    arm starts from; then trains with one turn and G samples per agent, and evaluates with
    the two-turn protocol. Returns an object with ``summary`` and ``trainer`` like ``train``.
    """
    import dataclasses
    import types

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.train import _eval, build, run_warmup

    seed_everything(cfg.trainer.seed)
    tok, task, tr_mt = build(cfg)
    extra = run_warmup(cfg, tok, task, tr_mt)
    before = _eval(tr_mt, cfg)
    one = dataclasses.replace(cfg, task="aux-code", trainer=dataclasses.replace(cfg.trainer, num_turns=1, num_generations=G))
    _, _, tr1 = build(one, list(tr_mt.agents))
    tr1.train()
    _, _, tr_eval = build(cfg, list(tr1.agents))
    after = _eval(tr_eval, cfg)
    return types.SimpleNamespace(summary={"eval_reward_before": before, "eval_reward_after": after, **extra}, trainer=tr1)


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
