"""Why does MAGRPO after a warm-up lose reward (coop-sum) or gain nothing measurable (aux-code)?

For each seed: build the two tiny Llama agents, run the task's supervised warm-up once, then
train every variant for ``--steps`` MAGRPO steps from a copy of the warmed-up pair (fresh
AdamW; with ``beta > 0`` the KL reference is the warmed-up pair). Per run it records

- the eval reward (mean joint reward of ``--eval-samples`` sampled joint actions on each of
  the 16 held-out items, one fixed sampling seed per evaluation);
- ``no-signal steps``: the fraction of steps whose G joint rewards were all equal, so every
  advantage was 0 and no agent received a gradient (a policy that has become deterministic
  on its prompts stays there: nothing pushes it back);
- the step from which every later step had no signal ("stuck from"), if any.

With ``--noise-evals K`` it also scores the warmed-up pair K times with different sampling
seeds: the spread of those scores is the evaluation's own noise, against which a gain over
the warm-up has to be judged.

    python benchmarks/magrpo/bench_collapse.py --task coop-sum [--steps 60] [--seeds 0 1 2] [--variants ...]
    python benchmarks/magrpo/bench_collapse.py --task aux-code --steps 40 --variants lr5e-5 --noise-evals 5
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
    # coop-sum: the setting of the toy table is lr 3e-3, G = 8, beta = 0
    "lr3e-3": {"learning_rate": 3e-3},
    "lr1e-3": {"learning_rate": 1e-3},
    "lr3e-4": {"learning_rate": 3e-4},
    "lr3e-3 beta0.1": {"learning_rate": 3e-3, "beta": 0.1},
    "lr3e-3 G16": {"learning_rate": 3e-3, "num_generations": 16},
    "lr3e-3 group-scaled": {"learning_rate": 3e-3, "scale_rewards": "group"},
    # aux-code: the best settings of the earlier sweep
    "lr5e-5": {"learning_rate": 5e-5},
    "lr5e-5 beta0.1": {"learning_rate": 5e-5, "beta": 0.1},
    "lr1e-5": {"learning_rate": 1e-5},
}
TASKS = {  # task: (default variants, completion length, warm-up steps)
    "coop-sum": (["lr3e-3", "lr1e-3", "lr3e-4", "lr3e-3 beta0.1", "lr3e-3 G16", "lr3e-3 group-scaled"], 4, 200),
    "aux-code": (["lr5e-5", "lr5e-5 beta0.1", "lr1e-5"], 32, 200),
}


STUCK_MIN = 5  # a run is "stuck" when at least this many final steps in a row had no signal


def render(task: str, steps: int, warm_steps: int, eval_samples: int, seeds: list[int], names: list[str], rows_out: list[dict]) -> str:
    """The Markdown table of one run (also from a saved JSON: ``--render results/collapse_<task>.json``)."""
    lines = [f"{task}: {steps} MAGRPO steps after {warm_steps} warm-up steps, G = 8 unless named; eval = mean joint reward of "
             f"{eval_samples} sampled joint actions x 16 held-out items; seeds {seeds}. A run is stuck when its last "
             f"{STUCK_MIN} or more steps all had no signal.", "",
             "| setting | eval mean ± std | gain over warm-up (mean ± std) | no-signal steps (mean) | runs stuck | per seed |",
             "|---|---|---|---|---|---|"]
    for name in ["warm-up only", *names]:
        rs = [r for r in rows_out if r["variant"] == name]
        ev = np.array([r["eval"] for r in rs])
        if name == "warm-up only":
            lines.append(f"| {name} | {ev.mean():.3f} ± {ev.std():.3f} | | | | {', '.join(f'{x:.3f}' for x in ev)} |")
            continue
        g = np.array([r["gain"] for r in rs])
        stuck = [r["stuck_from_step"] for r in rs if r["stuck_from_step"] is not None and steps - r["stuck_from_step"] + 1 >= STUCK_MIN]
        lines.append(f"| {name} | {ev.mean():.3f} ± {ev.std():.3f} | {g.mean():+.3f} ± {g.std():.3f} | {np.mean([r['no_signal_fraction'] for r in rs]):.2f} | "
                     f"{len(stuck)}/{len(rs)}{' (from step ' + ', '.join(map(str, stuck)) + ')' if stuck else ''} | "
                     f"{', '.join(f'{x:.3f}' for x in ev)} |")
    noise = [r["noise_evals"] for r in rows_out if r["variant"] == "warm-up only" and r["noise_evals"]]
    if noise:
        lines += ["", "Evaluation noise: the warmed-up pair re-scored with different sampling seeds, std per seed: "
                  + ", ".join(f"{np.std(n):.3f}" for n in noise) + f" (mean {np.mean([np.std(n) for n in noise]):.3f})."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=list(TASKS), default="coop-sum")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--noise-evals", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--render", metavar="JSON", help="print the table of a saved run and exit")
    args = ap.parse_args()
    if args.render:
        d = json.loads(Path(args.render).read_text())
        a = d["args"]
        print(render(a["task"], a["steps"], TASKS[a["task"]][2], a["eval_samples"], a["seeds"], list(d["variants"]), d["rows"]))
        return
    names, length, warm_steps = TASKS[args.task]
    names = args.variants or names

    import torch

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.train import TrainConfig, build, run_warmup

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = MAGRPOConfig(num_generations=8, max_completion_length=length, temperature=1.0, top_p=1.0, max_steps=args.steps)

    def score(trainer, stream: int) -> float:
        torch.manual_seed(stream)
        return trainer.evaluate(greedy=False, num_samples=args.eval_samples)["eval/reward"]

    rows_out: list[dict] = []
    for seed in args.seeds:
        seed_everything(seed)
        cfg = TrainConfig(task=args.task, trainer=dataclasses.replace(base, seed=seed), eval_items=16, eval_samples=args.eval_samples,
                          warmup_steps=warm_steps)
        tok, task, trainer = build(cfg)
        run_warmup(dataclasses.replace(cfg, eval_samples=1, eval_items=1), tok, task, trainer)
        warm = [copy.deepcopy(a) for a in trainer.agents]
        before = score(trainer, 10_000 + seed)
        noise = [score(trainer, 20_000 + 100 * seed + k) for k in range(args.noise_evals)]
        rows_out.append({"seed": seed, "variant": "warm-up only", "eval": before, "noise_evals": noise})
        print(f"seed {seed}: warm-up {before:.3f}" + (f"; re-scored {len(noise)}x: {np.mean(noise):.3f} ± {np.std(noise):.3f}" if noise else ""), flush=True)
        for name in names:
            tcfg = dataclasses.replace(base, seed=seed, **VARIANTS[name])
            seed_everything(seed)
            _, _, tr = build(dataclasses.replace(cfg, trainer=tcfg), [copy.deepcopy(a) for a in warm])
            t0 = time.perf_counter()
            log = [tr.step() for _ in range(args.steps)]
            sec = (time.perf_counter() - t0) / args.steps
            dead = [r["reward_std"] == 0.0 for r in log]
            stuck = next((t for t in range(len(dead)) if all(dead[t:])), None)
            after = score(tr, 10_000 + seed)
            row = {"seed": seed, "variant": name, "eval": after, "gain": after - before, "no_signal_fraction": float(np.mean(dead)),
                   "stuck_from_step": None if stuck is None else stuck + 1, "train_reward": [r["reward"] for r in log],
                   "kl_last": log[-1]["kl"], "seconds_per_step": sec}
            rows_out.append(row)
            print(f"seed {seed} {name}: eval {before:.3f} -> {after:.3f}; no-signal steps {row['no_signal_fraction']:.2f}; "
                  f"stuck from {row['stuck_from_step']}; {sec:.2f} s/step", flush=True)
    table = render(args.task, args.steps, warm_steps, args.eval_samples, args.seeds, names, rows_out)
    print(table)
    (out / f"collapse_{args.task}.json").write_text(json.dumps({"args": vars(args), "variants": {k: VARIANTS[k] for k in names}, "rows": rows_out},
                                                              indent=1) + "\n")
    (out / f"collapse_{args.task}.md").write_text(f"# MAGRPO after warm-up on {args.task}: collapse diagnosis\n\n{table}\n")


if __name__ == "__main__":
    main()
