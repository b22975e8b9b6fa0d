"""``compile=True`` variants against the eager default path, interleaved in one process.

    python benchmarks/jslds/bench_compile.py [--sizes 100x256 64x64] [--repeats 15] [--threads 1]
        [--variants python cpp] [--fold] [--keep-cache] [--out DIR]

For each size (GRU, T=25, u=6, 3-bit flip-flop batches) one model per system, all with the same
initial weights: the eager default path (the whole-sequence Function, ``fused=True``) and the per-step
JSLDS loss under ``torch.compile`` with inductor's Python wrapper (``python``) and with its C++
wrapper (``cpp``, ``cpp_wrapper=True``). Each compiled system's first forward + backward (tracing,
compiling both graphs, running) is timed on its own and reported as its compile time;
then all systems take training steps in turn (one step each, repeated; the median is reported), so
that load from other jobs falls on all of them alike. E runs unfolded (its own forward), as
``compile=True`` trains; ``--fold`` compiles it with its residuals folded into its weights (the
compiled function returns the total loss only: see JSLDS.__init__ for why training folds E only
eagerly).
Before any step, every compiled system's gradients are compared with the eager ones (same weights
and batch: they must agree to float32 rounding); the first step's losses are reported too.

Inductor caches compiled graphs on disk; unless ``--keep-cache``, a fresh cache folder is used so
that the compile times are cold ones. Writes results.json and results.md into --out (default
benchmarks/jslds/results/compile).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from auxfn.jslds import JSLDS, FlipFlopTask, GRUCell, LossWeights, jslds_losses

OFFICIAL_JAX = {(100, 256): 0.190, (64, 64): 0.0286}  # seconds per JSLDS step, jitted, 2-core machine
W = LossWeights(3, 1, 100, 10)


def make(n, fused=True, seed=0):
    torch.manual_seed(seed)
    model = JSLDS(GRUCell(n, 6), n_out=3, fused=fused)
    opt = torch.optim.Adam(model.parameters(), lr=0.02, eps=0.1)
    return model, opt


def step(model, opt, fn, batch) -> float:
    x, y, mask = batch
    loss = fn(x, y, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    return loss.item()


def grads(model, fn, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    fn(*batch).backward()
    out = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["100x256", "64x64"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=["python", "cpp"], choices=["python", "cpp"])
    ap.add_argument("--fold", action="store_true", help="compile E with its residuals folded into its weights")
    ap.add_argument("--keep-cache", action="store_true", help="use inductor's usual on-disk cache (warm compile times)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.keep_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="jslds_inductor_")
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / "compile"
    out.mkdir(parents=True, exist_ok=True)
    task = FlipFlopTask()
    variants = [(v, {"cpp_wrapper": v == "cpp"}) for v in args.variants]
    rows = []
    for size in args.sizes:
        n, B = (int(s) for s in size.split("x"))
        g = torch.Generator().manual_seed(0)
        batches = [task.sample(B, g) for _ in range(4)]
        em, eo = make(n)
        systems = {"eager": (em, eo, lambda x, y, mask, m=em: jslds_losses(m(x), y, mask, W)["total"])}
        ge = grads(em, systems["eager"][2], batches[0])  # at the initial weights, which every system shares
        compile_s, grad_rel = {}, {}
        for name, opts in variants:
            cm, co = make(n, fused=False)
            cm.fold_expansion = args.fold
            fn = torch.compile(lambda x, y, mask, m=cm: jslds_losses(m(x), y, mask, W)["total"], options=opts)
            t0 = time.perf_counter()
            gc = grads(cm, fn, batches[0])  # the first forward + backward compiles both graphs
            compile_s[name] = time.perf_counter() - t0
            grad_rel[name] = max(((gc[k] - ge[k]).norm() / ge[k].norm().clamp_min(1e-30)).item() for k in ge)
            print(f"n={n} B={B} {name}: compile (first forward + backward) {compile_s[name]:.1f} s, "
                  f"max relative gradient error vs eager {grad_rel[name]:.2e}", flush=True)
            systems[name] = (cm, co, fn)
        first_loss = {}
        times = {k: [] for k in systems}
        for i in range(args.repeats + 2):
            batch = batches[i % len(batches)]
            for name, (m, o, fn) in systems.items():
                t0 = time.perf_counter()
                loss = step(m, o, fn, batch)
                if i == 0:
                    first_loss[name] = loss
                if i >= 2:
                    times[name].append(time.perf_counter() - t0)
        med = {k: median(v) for k, v in times.items()}
        row = {"n": n, "B": B, "threads": args.threads, "fold": args.fold, "s_per_step": med,
               "compile_s": compile_s, "first_loss": first_loss, "max_grad_rel_err_vs_eager": grad_rel,
               "speedup_vs_eager": {k: med["eager"] / v for k, v in med.items()},
               "speedup_vs_official_jax": {k: OFFICIAL_JAX.get((n, B), float("nan")) / v for k, v in med.items()},
               "load_average": os.getloadavg()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "rows": rows,
           "cold_cache": not args.keep_cache}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    names = list(rows[0]["s_per_step"]) if rows else []
    lines = ["# JSLDS: compile=True variants vs the eager default path", "",
             f"torch {torch.__version__}, {res['date']}, {args.threads} thread(s), median of {args.repeats} interleaved "
             f"steps, {'cold' if res['cold_cache'] else 'warm'} inductor cache, E {'folded' if args.fold else 'unfolded'} "
             "when compiled", "",
             "| n | B | load | " + " | ".join(f"{k} s/step" for k in names) + " | "
             + " | ".join(f"{k} compile s" for k in names[1:]) + " | " + " | ".join(f"{k} vs eager" for k in names[1:])
             + " | " + " | ".join(f"{k} grad rel. err." for k in names[1:]) + " |",
             "|" + "---|" * (3 + len(names) + 3 * (len(names) - 1))]
    for r in rows:
        lines.append(f"| {r['n']} | {r['B']} | {r['load_average'][0]:.1f} | "
                     + " | ".join(f"{r['s_per_step'][k]:.4f}" for k in names) + " | "
                     + " | ".join(f"{r['compile_s'][k]:.0f}" for k in names[1:]) + " | "
                     + " | ".join(f"{r['speedup_vs_eager'][k]:.2f}x" for k in names[1:]) + " | "
                     + " | ".join(f"{r['max_grad_rel_err_vs_eager'][k]:.1e}" for k in names[1:]) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
