"""Cost of one quick-preset run, split into training steps and the final audit, for a few variants.

    python benchmarks/jepa/profile_quick.py [--steps 300] [--repeats 2]

Variants (run interleaved, ``--repeats`` rounds, so a change in machine load hits all of
them alike): the quick preset (16x16, batch 128, one torch thread), 32x32 images, two
torch threads, batch 64. For each: training seconds per 100 steps, the audit's seconds
(16 renders per state, no figures) and the ratio to the quick preset. A full quick run
costs about 15 x (s / 100 steps) + audit. Writes results/profile.json and profile.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from auxfn.jepa.training import PRESETS, train

VARIANTS = {
    "quick (16x16, batch 128, 1 thread)": {},
    "32x32 images": {"img": 32},
    "2 torch threads": {"threads": 2},
    "batch 64": {"batch_size": 64},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    base = dataclasses.replace(PRESETS["quick"].config, steps=args.steps, figures=False, checkpoint_every=args.steps)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    loads = []
    for r in range(args.repeats):
        for name, over in VARIANTS.items():
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            res = train(dataclasses.replace(base, **over), out=args.out / "profile_runs" / f"{r}-{len(times[name])}-{int(time.time() * 1e3)}")
            total = time.perf_counter() - t0
            train_s = res.summary["time/train_s"]
            times[name].append((train_s, total - train_s))
            print(f"round {r} {name:36s} train {train_s:6.1f} s, audit+write {total - train_s:5.1f} s (load {loads[-1]:.1f})", flush=True)
    ref = min(t for t, _ in times[next(iter(VARIANTS))])
    rows = []
    for name, ts in times.items():
        best_train, best_audit = min(t for t, _ in ts), min(a for _, a in ts)
        rows.append({"variant": name, "s_per_100_steps": 100 * best_train / args.steps, "audit_s": best_audit, "ratio_to_quick": best_train / ref})
    result = {"steps": args.steps, "repeats": args.repeats, "load_avg_seen": [min(loads), max(loads)], "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| variant | s / 100 steps (best of repeats) | ratio to quick | audit + write s |", "|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['s_per_100_steps']:.2f} | {r['ratio_to_quick']:.2f} | {r['audit_s']:.1f} |" for r in rows]
    (args.out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f}")


if __name__ == "__main__":
    main()
