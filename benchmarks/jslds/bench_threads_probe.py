"""Thread placement in the GRU step: the step's matmul and pointwise shapes with 1 and 2 threads.

    python benchmarks/jslds/bench_threads_probe.py [--repeats 300] [--out DIR]

For (n=100, B=256) and (n=64, B=64), R = 3B stacked rows (RNN, expansion point, tangent; M = 2B
primal rows): median microseconds per call, 1 vs 2 threads
interleaved, of the forward gate product ``(R, n+7) @ (n+7, 2n)``, the candidate product ``(R, n+7) @
(n+7, n)``, the backward products ``(R, 2n) @ (2n, n)`` and ``(R, n) @ (n, n)``, a sigmoid over ``(M,
2n)`` and a multiply over ``(B, n)``; and the cost of one ``torch.set_num_threads`` call (what
switching between a matmul thread count and a pointwise one would cost per switch). Writes
results.json / results.md into --out (default benchmarks/jslds/results/threads_probe).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "threads_probe")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, B in ((100, 256), (64, 64)):
        R, M, m = 3 * B, 2 * B, n + 7
        ops = {
            "mm gates (R,n+7)@(n+7,2n)": (torch.mm, (torch.randn(R, m), torch.randn(m, 2 * n))),
            "mm candidate (R,n+7)@(n+7,n)": (torch.mm, (torch.randn(R, m), torch.randn(m, n))),
            "mm bwd (R,2n)@(2n,n)": (torch.mm, (torch.randn(R, 2 * n), torch.randn(2 * n, n))),
            "mm bwd (R,n)@(n,n)": (torch.mm, (torch.randn(R, n), torch.randn(n, n))),
            "sigmoid (M,2n)": (torch.sigmoid, (torch.randn(M, 2 * n),)),
            "mul (B,n)": (torch.mul, (torch.randn(B, n), torch.randn(B, n))),
        }
        times = {(k, th): [] for k in ops for th in (1, 2)}
        for _ in range(args.repeats // 10):
            for th in (1, 2):
                torch.set_num_threads(th)
                for k, (fn, a) in ops.items():
                    fn(*a)
                    t0 = time.perf_counter()
                    for _ in range(10):
                        fn(*a)
                    times[(k, th)].append((time.perf_counter() - t0) / 10)
        for k in ops:
            t1, t2 = median(times[(k, 1)]) * 1e6, median(times[(k, 2)]) * 1e6
            rows.append({"n": n, "B": B, "op": k, "us_1_thread": t1, "us_2_threads": t2, "speedup_2_threads": t1 / t2})
    t0 = time.perf_counter()
    for i in range(2000):
        torch.set_num_threads(1 + i % 2)
    switch_us = (time.perf_counter() - t0) / 2000 * 1e6
    torch.set_num_threads(1)
    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(),
           "rows": rows, "set_num_threads_us": switch_us}
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"torch {torch.__version__}, {res['date']}, load average {res['load_average']}; median of {args.repeats} calls", "",
             "| n | B | op | us, 1 thread | us, 2 threads | 2-thread speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['B']} | {r['op']} | {r['us_1_thread']:.1f} | {r['us_2_threads']:.1f} | {r['speedup_2_threads']:.2f} |" for r in rows]
    lines += ["", f"One torch.set_num_threads call: {switch_us:.1f} us"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
