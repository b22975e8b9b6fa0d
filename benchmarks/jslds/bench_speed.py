"""Seconds per training step of the JSLDS (fwd + bwd + Adam) and of the plain RNN, in one run.

    python benchmarks/jslds/bench_speed.py [--threads 2] [--repeats 30] [--out DIR]

Sizes: GRU (n=100, B=256) and (n=64, B=64), T=25, u=6, o=3, 3-bit flip-flop batches. Also: the
same with torch.func.jvp instead of the analytic GRU JVP, estimated FLOPs per step, and the
fraction of this machine's float32 matmul throughput (one large torch.mm) that they reach.
Writes results.json and results.md into --out (default benchmarks/jslds/results/speed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from auxfn.jslds import JSLDS, FlipFlopTask, GRUCell, LossWeights, jslds_losses

OFFICIAL_JAX = {(100, 256): 0.190, (64, 64): 0.0286}  # seconds per JSLDS step, jitted, 2-core machine


class AutogradGRU(GRUCell):
    """The same cell without its analytic JVP (nor the input-projected path): torch.func.jvp per step."""

    jvp = None
    jvp_px = None
    project_inputs = None


def flops_per_step(n: int, u: int, B: int, T: int, jslds: bool) -> float:
    """Matmul FLOPs (2 per multiply-add): GRU F = 2(3n^2 + 3nu); its JVP repeats those products;
    E = 2 layers of 2n^2; backward ~ 2x forward."""
    f = 2 * (3 * n * n + 3 * n * u)
    fwd = f + ((2 * f + 2 * 2 * n * n) if jslds else 0)
    return 3.0 * B * T * fwd


def time_step(cell_cls, n, B, jslds, repeats, seed=0):
    torch.manual_seed(seed)
    task = FlipFlopTask()
    g = torch.Generator().manual_seed(seed)
    model = JSLDS(cell_cls(n, 6), n_out=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02, eps=0.1)
    w = LossWeights(3, 1, 100, 10) if jslds else LossWeights(1, 0, 0, 0)
    times = []
    for i in range(repeats + 3):
        x, y, mask = task.sample(B, g)
        t0 = time.perf_counter()
        tr = model(x, run_jslds=jslds)
        loss = jslds_losses(tr, y, mask, w)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_gflops(size=1024, repeats=10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / "speed"
    out.mkdir(parents=True, exist_ok=True)
    peak = matmul_gflops()
    rows = []
    for n, B in ((100, 256), (64, 64)):
        t_j = time_step(GRUCell, n, B, True, args.repeats)
        t_r = time_step(GRUCell, n, B, False, args.repeats)
        t_a = time_step(AutogradGRU, n, B, True, args.repeats)
        fj, fr = flops_per_step(n, 6, B, 25, True), flops_per_step(n, 6, B, 25, False)
        rows.append({
            "n": n, "B": B, "jslds_s": t_j, "rnn_s": t_r, "jslds_torch_func_jvp_s": t_a,
            "jslds_over_rnn": t_j / t_r, "official_jax_s": OFFICIAL_JAX[(n, B)], "speedup_vs_official": OFFICIAL_JAX[(n, B)] / t_j,
            "jslds_gflop_per_step": fj / 1e9, "rnn_gflop_per_step": fr / 1e9,
            "jslds_fraction_of_matmul_peak": fj / t_j / 1e9 / peak, "rnn_fraction_of_matmul_peak": fr / t_r / 1e9 / peak,
        })
    res = {"threads": args.threads, "torch": torch.__version__, "matmul_gflops_1024": peak, "rows": rows}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# JSLDS training-step speed", "", f"torch {torch.__version__}, {args.threads} thread(s), "
             f"float32 matmul peak (1024^3 mm) {peak:.1f} GFLOP/s; median of {args.repeats} steps", "",
             "| n | B | JSLDS s/step | RNN s/step | JSLDS/RNN | JSLDS with torch.func.jvp | official JAX | speed-up vs JAX | JSLDS GFLOP/step | JSLDS % of peak | RNN % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['B']} | {r['jslds_s']:.4f} | {r['rnn_s']:.4f} | {r['jslds_over_rnn']:.2f} | "
                     f"{r['jslds_torch_func_jvp_s']:.4f} | {r['official_jax_s']} | {r['speedup_vs_official']:.2f} | "
                     f"{r['jslds_gflop_per_step']:.3f} | {100 * r['jslds_fraction_of_matmul_peak']:.1f} | {100 * r['rnn_fraction_of_matmul_peak']:.1f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
