"""Seconds per training step of the JSLDS (fwd + bwd + clip + Adam) and of the plain RNN, in one run.

    python benchmarks/jslds/bench_speed.py [--threads 1 2] [--repeats 30] [--compile] [--out DIR]
        [--jslds-run RUN_DIR --standard-run RUN_DIR]

Sizes: GRU (n=100, B=256) and (n=64, B=64), T=25, u=6, o=3, 3-bit flip-flop batches. For each
thread count the JSLDS step and the RNN step on the default path (the whole-sequence Function with a
hand-written backward, ``auxfn.jslds.fused``), the same two with per-step autograd (``fused=False``,
the previous default), and the JSLDS with ``torch.func.jvp`` (no analytic JVP, no fused/projected
path), and the JSLDS and the RNN on the native C++ kernel (``native=True``, ``auxfn.jslds.native``;
both through the kernel, so their ratio compares like with like) are timed *interleaved* (one step
of each in turn), so that load from
other jobs hits all of them alike; the ratios are the robust figures, absolute seconds are not on a
shared machine. FLOPs per step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (one
fwd + bwd) and compared with this machine's float32 matmul throughput (a 1024^3 ``torch.mm``
measured in the same run, per thread count). ``--compile`` adds a column with the loss function
(whole unrolled per-step forward, and its backward) compiled as ``compile=True`` trains
(``auxfn.jslds.train.compile_loss``: inductor with its C++ wrapper unless ``--compile-wrapper
python``; its compile time is reported). The throughput of the largest per-step product's shape ``(3B x n) @ (n x 2n)`` is
measured too. Also: time to fixed points, one pass of E over N JSLDS states of the
co-trained model vs ``find_fixed_points`` from N RNN states of the standard model (trained runs
if given, else the presets' models at initialisation with a fixed number of finder iterations).
The native kernel's cold build time (a fresh ``TORCH_EXTENSIONS_DIR``, in a subprocess) is measured
unless ``--no-cold-build``; without a C++ compiler or ninja the native columns are left empty.
Writes results.json and results.md into --out (default benchmarks/jslds/results/speed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from auxfn.jslds import JSLDS, FlipFlopTask, GRUCell, LossWeights, jslds_losses
from auxfn.jslds.train import compile_loss

OFFICIAL_JAX = {(100, 256): 0.190, (64, 64): 0.0286}  # seconds per JSLDS step, jitted, 2-core machine


class AutogradGRU(GRUCell):
    """The same cell without its analytic JVP nor the projected/fused path: torch.func.jvp per step."""

    jvp = None
    fused_jvp_px = None
    project_inputs = None
    sequence_kind = None


def make(cell_cls, n, seed=0, fused=True, native=False):
    torch.manual_seed(seed)
    model = JSLDS(cell_cls(n, 6), n_out=3, fused=fused, native=native)
    opt = torch.optim.Adam(model.parameters(), lr=0.02, eps=0.1, fused=True)  # as train() builds it
    return model, opt


W_JSLDS, W_RNN = LossWeights(3, 1, 100, 10), LossWeights(1, 0, 0, 0)


def train_step(model, opt, batch, jslds, loss_fn=None):
    x, y, mask = batch
    w = W_JSLDS if jslds else W_RNN
    if loss_fn is None:
        loss = jslds_losses(model(x, run_jslds=jslds), y, mask, w)["total"]
    else:
        loss = loss_fn(x, y, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()


def count_flops(model, batch, jslds) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, y, mask = batch
    w = W_JSLDS if jslds else W_RNN
    with FlopCounterMode(display=False) as fc:
        loss = jslds_losses(model(x, run_jslds=jslds), y, mask, w)["total"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def matmul_gflops(size=1024, repeats=10, shape=None) -> float:
    """GFLOP/s of ``torch.mm`` for (size x size) @ (size x size), or for ``shape = (m, k, p)``."""
    m, k, p = shape or (size, size, size)
    a, b = torch.randn(m, k), torch.randn(k, p)
    torch.mm(a, b)
    repeats = repeats if shape is None else max(repeats, int(2e9 / (2 * m * k * p)))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * p * repeats / best / 1e9


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def time_interleaved(systems: dict, batches, repeats: int, warmup: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds and median CPU seconds of the calling thread (``time.thread_time``) per
    step of each system, stepping them in turn on the same batches. With one torch thread all the
    work runs on the calling thread, and its CPU time is less sensitive than wall time to other
    jobs taking the core (not to their cache pollution); with more threads it misses the others'."""
    times = {k: [] for k in systems}
    cpu = {k: [] for k in systems}
    for i in range(repeats + warmup):
        batch = batches[i % len(batches)]
        for name, (model, opt, jslds, fn) in systems.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            train_step(model, opt, batch, jslds, fn)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.thread_time() - c0)
    return {k: median(v) for k, v in times.items()}, {k: median(v) for k, v in cpu.items()}


def cold_build_seconds() -> dict:
    """Build the native kernel from scratch (an empty TORCH_EXTENSIONS_DIR) in a fresh process: the
    seconds ``load_native`` took there (compile + link + load; not the interpreter's start)."""
    import os
    import subprocess
    import sys
    import tempfile

    code = ("import json; from auxfn.jslds.native import load_native, build_info; load_native(); "
            "print(json.dumps(build_info()))")
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TORCH_EXTENSIONS_DIR=d),
                           capture_output=True, text=True, timeout=600)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"loaded": False, "reason": (r.stderr or r.stdout)[-400:], "build_seconds": None}


def time_to_fixed_points(n_states: int, jslds_run, standard_run, fp_iters: int) -> dict:
    """One pass of E over N JSLDS states (co-trained model) vs find_fixed_points from N RNN states
    (standard model), the same N."""
    from auxfn.core.seeding import make_generator
    from auxfn.jslds.analysis import find_fixed_points
    from auxfn.jslds.train import PRESETS, build_model, build_task, load_run

    if jslds_run is not None and standard_run is not None:
        _, jm, task = load_run(jslds_run)
        _, sm, _ = load_run(standard_run)
        source = f"trained runs {jslds_run} and {standard_run}"
    else:
        cfg = PRESETS["quick-flipflop"].config
        task = build_task(cfg)
        jm, sm = build_model(cfg, task), build_model(PRESETS["standard-flipflop"].config, task)
        source = "quick-flipflop / standard-flipflop models at initialisation"
    B = max(1, n_states // task.T)
    x, _, _ = task.sample(B, make_generator(3))
    with torch.no_grad():
        a = jm(x).a.flatten(0, 1)[:n_states]
        h = sm(x, run_jslds=False).h.flatten(0, 1)[:n_states]
        xs = sm.x_star(x).flatten(0, 1)[:n_states]
    t0 = time.perf_counter()
    with torch.no_grad():
        jm.expansion(a)
    t_e = time.perf_counter() - t0
    t0 = time.perf_counter()
    fps = find_fixed_points(sm.cell, h, xs, lr=0.01, max_iters=fp_iters, q_tol=sm.n_state * 2.5e-7)
    t_f = time.perf_counter() - t0
    return {"n_states": int(a.shape[0]), "source": source, "seconds_expansion_pass": t_e, "seconds_find_fixed_points": t_f,
            "fp_iters": fp_iters, "n_fixed_points_kept": len(fps), "ratio": t_f / t_e}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row (slow to compile)")
    ap.add_argument("--compile-threads", type=int, nargs="+", default=None,
                    help="thread counts at which to add the --compile column (default: every --threads value)")
    ap.add_argument("--compile-wrapper", choices=["cpp", "python"], default="cpp",
                    help="inductor wrapper of the --compile column (compile=True's default: cpp)")
    ap.add_argument("--fp-states", type=int, default=1024)
    ap.add_argument("--fp-iters", type=int, default=2000)
    ap.add_argument("--jslds-run", type=Path, default=None)
    ap.add_argument("--standard-run", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-cold-build", action="store_true", help="skip timing the native kernel's build from scratch")
    args = ap.parse_args()
    out = args.out or Path(__file__).parent / "results" / "speed"
    out.mkdir(parents=True, exist_ok=True)
    from auxfn.jslds.native import build_info, load_native

    cold = None if args.no_cold_build else cold_build_seconds()
    if cold is not None:
        print(json.dumps({"native_cold_build": cold}), flush=True)
    has_native = load_native()  # the cached build (or a build, if the cold one was skipped)
    native_load = build_info()
    task = FlipFlopTask()
    rows, peaks = [], {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks[threads] = matmul_gflops()
        for n, B in ((100, 256), (64, 64)):
            g = torch.Generator().manual_seed(0)
            batches = [task.sample(B, g) for _ in range(4)]
            systems = {
                "jslds": (*make(GRUCell, n), True, None),
                "rnn": (*make(GRUCell, n), False, None),
                "jslds_stepwise": (*make(GRUCell, n, fused=False), True, None),
                "rnn_stepwise": (*make(GRUCell, n, fused=False), False, None),
                "jslds_torch_func_jvp": (*make(AutogradGRU, n), True, None),
            }
            if has_native:
                systems["jslds_native"] = (*make(GRUCell, n, native=True), True, None)
                systems["rnn_native"] = (*make(GRUCell, n, native=True), False, None)
            compile_s = None
            compiled = args.compile and (args.compile_threads is None or threads in args.compile_threads)
            if compiled:
                cm, copt = make(GRUCell, n, fused=False)
                cm.fold_expansion = False  # as train(compile=True): see JSLDS.__init__
                fn = compile_loss(lambda x, y, mask, m=cm: jslds_losses(m(x), y, mask, W_JSLDS)["total"], args.compile_wrapper)
                t0 = time.perf_counter()
                train_step(cm, copt, batches[0], True, fn)
                compile_s = time.perf_counter() - t0
                systems["jslds_compiled"] = (cm, copt, True, fn)
            t, tc = time_interleaved(systems, batches, args.repeats)
            fj = count_flops(systems["jslds"][0], batches[0], True)
            fr = count_flops(systems["rnn"][0], batches[0], False)
            fjs = count_flops(systems["jslds_stepwise"][0], batches[0], True)
            # the largest per-step product of the JSLDS: [h; e; a - e] (3B x n) @ W_rz_h (n x 2n)
            step_mm = matmul_gflops(shape=(3 * B, n, 2 * n))
            row = {
                "threads": threads, "n": n, "B": B, "jslds_s": t["jslds"], "rnn_s": t["rnn"],
                "jslds_stepwise_s": t["jslds_stepwise"], "rnn_stepwise_s": t["rnn_stepwise"],
                "jslds_torch_func_jvp_s": t["jslds_torch_func_jvp"], "jslds_over_rnn": t["jslds"] / t["rnn"],
                "jslds_over_rnn_stepwise": t["jslds"] / t["rnn_stepwise"],
                "stepwise_jslds_over_rnn": t["jslds_stepwise"] / t["rnn_stepwise"],
                "speedup_over_stepwise": t["jslds_stepwise"] / t["jslds"],
                "official_jax_s": OFFICIAL_JAX[(n, B)], "speedup_vs_official": OFFICIAL_JAX[(n, B)] / t["jslds"],
                "jslds_gflop_per_step": fj / 1e9, "rnn_gflop_per_step": fr / 1e9, "jslds_stepwise_gflop_per_step": fjs / 1e9,
                "jslds_fraction_of_matmul_peak": fj / t["jslds"] / 1e9 / peaks[threads],
                "rnn_fraction_of_matmul_peak": fr / t["rnn"] / 1e9 / peaks[threads],
                "step_matmul_gflops": step_mm,
            }
            if has_native:
                row.update(jslds_native_s=t["jslds_native"], rnn_native_s=t["rnn_native"],
                           native_jslds_over_rnn=t["jslds_native"] / t["rnn_native"],
                           native_speedup_jslds=t["jslds"] / t["jslds_native"], native_speedup_rnn=t["rnn"] / t["rnn_native"],
                           speedup_vs_official_native=OFFICIAL_JAX[(n, B)] / t["jslds_native"])
            if threads == 1:  # CPU seconds of the one working thread (see time_interleaved)
                row.update(jslds_cpu_s=tc["jslds"], rnn_cpu_s=tc["rnn"], jslds_over_rnn_cpu=tc["jslds"] / tc["rnn"])
                if has_native:
                    row.update(jslds_native_cpu_s=tc["jslds_native"], rnn_native_cpu_s=tc["rnn_native"],
                               native_jslds_over_rnn_cpu=tc["jslds_native"] / tc["rnn_native"],
                               native_speedup_jslds_cpu=tc["jslds"] / tc["jslds_native"])
            if compiled:
                row.update(jslds_compiled_s=t["jslds_compiled"], compile_seconds=compile_s,
                           speedup_vs_official_compiled=OFFICIAL_JAX[(n, B)] / t["jslds_compiled"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    torch.set_num_threads(1)
    fp = time_to_fixed_points(args.fp_states, args.jslds_run, args.standard_run, args.fp_iters)
    print(json.dumps(fp), flush=True)
    try:
        import os

        load = os.getloadavg()
    except OSError:
        load = None
    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_end": load,
           "matmul_gflops_1024": peaks, "rows": rows, "time_to_fixed_points": fp,
           "native_cold_build": cold, "native_load": native_load}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# JSLDS training-step speed", "",
             f"torch {torch.__version__}, {res['date']}, load average at the end {load}; median of {args.repeats} "
             "interleaved steps; float32 matmul throughput (1024^3 mm): "
             + ", ".join(f"{k} thread(s) {v:.1f} GFLOP/s" for k, v in peaks.items()), "",
             "Default path = whole-sequence Function with hand-written BPTT (JSLDS and RNN); stepwise = per-step "
             "autograd (the previous default, `fused=False`).", "",
             "| threads | n | B | JSLDS s/step | RNN s/step | JSLDS/RNN | JSLDS stepwise | RNN stepwise | stepwise JSLDS/RNN "
             "| JSLDS / RNN stepwise | JSLDS, torch.func.jvp | official JAX | speed-up vs JAX "
             "| JSLDS GFLOP/step | RNN GFLOP/step | JSLDS % of mm peak | RNN % of mm peak | step-shape mm GFLOP/s |"
             + (" compiled JSLDS s/step | compile s |" if args.compile else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.compile else "")]
    for r in rows:
        line = (f"| {r['threads']} | {r['n']} | {r['B']} | {r['jslds_s']:.4f} | {r['rnn_s']:.4f} | {r['jslds_over_rnn']:.2f} | "
                f"{r['jslds_stepwise_s']:.4f} | {r['rnn_stepwise_s']:.4f} | {r['stepwise_jslds_over_rnn']:.2f} | "
                f"{r['jslds_over_rnn_stepwise']:.2f} | "
                f"{r['jslds_torch_func_jvp_s']:.4f} | {r['official_jax_s']} | {r['speedup_vs_official']:.2f} | "
                f"{r['jslds_gflop_per_step']:.3f} | {r['rnn_gflop_per_step']:.3f} | {100 * r['jslds_fraction_of_matmul_peak']:.1f} | "
                f"{100 * r['rnn_fraction_of_matmul_peak']:.1f} | {r['step_matmul_gflops']:.1f} |")
        if args.compile:
            line += (f" {r['jslds_compiled_s']:.4f} | {r['compile_seconds']:.0f} |" if "jslds_compiled_s" in r else " | |")
        lines.append(line)
    lines += ["", f"Time to fixed points ({fp['source']}), N = {fp['n_states']} states: one pass of E "
              f"{fp['seconds_expansion_pass']:.4f} s; find_fixed_points ({fp['fp_iters']} Adam iterations + Newton) "
              f"{fp['seconds_find_fixed_points']:.2f} s ({fp['ratio']:.0f}x), {fp['n_fixed_points_kept']} fixed points kept."]
    if has_native:
        lines += ["", "Native C++ kernel (`native=True`; the JSLDS and the RNN both through it), interleaved with the "
                  "columns above; speed-ups against the default path (the Python whole-sequence Function):", "",
                  "| threads | n | B | native JSLDS s/step | native RNN s/step | native JSLDS/RNN | JSLDS speed-up vs "
                  "Python Function | RNN speed-up | official JAX | native speed-up vs JAX |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['threads']} | {r['n']} | {r['B']} | {r['jslds_native_s']:.4f} | {r['rnn_native_s']:.4f} | "
                  f"{r['native_jslds_over_rnn']:.2f} | {r['native_speedup_jslds']:.2f} | {r['native_speedup_rnn']:.2f} | "
                  f"{r['official_jax_s']} | {r['speedup_vs_official_native']:.2f} |" for r in rows]
    if cold is not None:
        lines += ["", "Native kernel cold build (empty TORCH_EXTENSIONS_DIR, fresh process): "
                  + (f"{cold['build_seconds']:.1f} s" if cold.get("loaded") else f"failed ({cold.get('reason')})")
                  + f"; load of the cached build in this process: {native_load['build_seconds']:.2f} s."]
    elif not has_native:
        lines += ["", f"Native kernel not available: {native_load['reason']}"]
    cpu_rows = [r for r in rows if "jslds_cpu_s" in r]
    if cpu_rows:
        lines += ["", "CPU seconds of the working thread per step (1 thread; less sensitive to load than wall time):", "",
                  "| n | B | JSLDS CPU s/step | RNN CPU s/step | JSLDS/RNN (CPU) |", "|---|---|---|---|---|"]
        lines += [f"| {r['n']} | {r['B']} | {r['jslds_cpu_s']:.4f} | {r['rnn_cpu_s']:.4f} | {r['jslds_over_rnn_cpu']:.2f} |" for r in cpu_rows]
        if has_native:
            lines += ["", "| n | B | native JSLDS CPU s/step | native RNN CPU s/step | native JSLDS/RNN (CPU) | native JSLDS "
                      "speed-up vs Python Function (CPU) |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['n']} | {r['B']} | {r['jslds_native_cpu_s']:.4f} | {r['rnn_native_cpu_s']:.4f} | "
                      f"{r['native_jslds_over_rnn_cpu']:.2f} | {r['native_speedup_jslds_cpu']:.2f} |" for r in cpu_rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
