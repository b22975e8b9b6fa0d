"""The native kernel's co-training sums against passes over the trajectories, interleaved in one process.

    python benchmarks/jslds/bench_loss_sums.py [--threads 1] [--repeats 60] [--out DIR]

GRU, T=25, 3-bit flip-flop batches at (n=100, B=256) and (n=64, B=64), JSLDS training steps (forward,
backward, clipping, fused Adam) on the native kernel (``native=True``), two models with the same
weights and batches, one step of each in turn:

- ``sums``: the default: ``jslds_losses`` reads the fixed-point and approx totals the kernel computed
  in its forward loop, and the kernel's backward adds their gradients;
- ``passes``: the same kernel, with the trajectories' record of those totals dropped, so that both
  terms are computed from the (T, B, n) trajectories (one pass forward, difference, negation and
  accumulation backward), as before the kernel computed them.

Prints and writes the median seconds per step and ``passes / sums`` (results.json, results.md) into
--out (default benchmarks/jslds/results/loss_sums). Both arms must give the same loss (checked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import W_JSLDS, make  # noqa: E402

from auxfn.jslds import FlipFlopTask, GRUCell, jslds_losses  # noqa: E402
from auxfn.jslds.native import load_native  # noqa: E402


def step(model, opt, batch, use_sums: bool) -> float:
    x, y, mask = batch
    tr = model(x, run_jslds=True)
    if not use_sums:
        tr._sums = {}  # no recorded totals: jslds_losses passes over the trajectories
    loss = jslds_losses(tr, y, mask, W_JSLDS)["total"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=60, help="steps per arm at n=64 (a quarter of them at paper size)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loss_sums")
    args = ap.parse_args()
    if not load_native():
        sys.exit("the native kernel could not be built: nothing to compare")
    torch.set_num_threads(args.threads)
    rows = []
    for n, B, repeats in ((64, 64, args.repeats), (100, 256, max(8, args.repeats // 4))):
        task = FlipFlopTask(n_bits=3, T=25)
        g = torch.Generator().manual_seed(0)
        batches = [task.sample(B, g) for _ in range(10)]
        arms = {"sums": make(GRUCell, n, native=True), "passes": make(GRUCell, n, native=True)}
        times: dict[str, list[float]] = {"sums": [], "passes": []}
        for r in range(repeats + 4):
            losses = {}
            for name in ("sums", "passes") if r % 2 == 0 else ("passes", "sums"):
                model, opt = arms[name]
                t0 = time.perf_counter()
                losses[name] = step(model, opt, batches[r % 10], name == "sums")
                if r >= 4:  # the first steps warm the buffers up
                    times[name].append(time.perf_counter() - t0)
            if abs(losses["sums"] - losses["passes"]) > 1e-4 * abs(losses["passes"]):
                sys.exit(f"the two arms disagree at step {r}: {losses}")
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"n": n, "B": B, "threads": args.threads, "steps": repeats, "sums_s": med["sums"],
               "passes_s": med["passes"], "passes_over_sums": med["passes"] / med["sums"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| threads | n | B | steps per arm | kernel sums s/step | passes s/step | passes / sums |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['n']} | {r['B']} | {r['steps']} | {r['sums_s']:.4f} | {r['passes_s']:.4f} | "
              f"{r['passes_over_sums']:.3f} |" for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
