"""The current whole-sequence Function against an earlier version of ``auxfn/jslds/fused.py``, interleaved.

    git show 89a5e25:src/auxfn/jslds/fused.py > /tmp/fused_before.py
    python benchmarks/jslds/bench_compare_fused.py --baseline /tmp/fused_before.py [--threads 1] [--repeats 15]

GRU, T=25, 3-bit flip-flop batches at (n=100, B=256) and (n=64, B=64): the median seconds per training
step (forward, backward, clipping, Adam) of the JSLDS on the current path, of the JSLDS on the baseline
file's ``sequence_forward`` (same models, same batches, one step of each in turn) and of the plain RNN on
the current path, in wall seconds and in CPU seconds of the calling thread (``time.thread_time``; with
one thread all the work runs there, and CPU time is less sensitive than wall time to other jobs taking
the core, though not to their cache pollution). Prints ``baseline / current`` and ``current JSLDS / RNN``; writes results.json into
--out (default benchmarks/jslds/results/compare_fused).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import make, median, train_step  # noqa: E402

import auxfn.jslds.fused as current  # noqa: E402
from auxfn.jslds import FlipFlopTask, GRUCell  # noqa: E402


def load_baseline(path: Path):
    spec = importlib.util.spec_from_file_location("jslds_fused_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True, help="an earlier auxfn/jslds/fused.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compare_fused")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_baseline(args.baseline)
    new_fn = current.sequence_forward
    task = FlipFlopTask()
    rows = []
    for n, B in ((100, 256), (64, 64)):
        g = torch.Generator().manual_seed(0)
        batches = [task.sample(B, g) for _ in range(4)]
        systems = {"jslds": (*make(GRUCell, n), new_fn, True), "jslds_baseline": (*make(GRUCell, n), base.sequence_forward, True),
                   "rnn": (*make(GRUCell, n), new_fn, False)}
        times = {k: [] for k in systems}
        cpu = {k: [] for k in systems}
        try:
            for i in range(args.repeats + 3):
                for k, (model, opt, fn, jslds) in systems.items():
                    current.sequence_forward = fn  # JSLDS._forward_sequence looks it up at each call
                    t0, c0 = time.perf_counter(), time.thread_time()
                    train_step(model, opt, batches[i % 4], jslds)
                    if i >= 3:
                        times[k].append(time.perf_counter() - t0)
                        cpu[k].append(time.thread_time() - c0)
        finally:
            current.sequence_forward = new_fn
        med = {k: median(v) for k, v in times.items()}
        mcpu = {k: median(v) for k, v in cpu.items()}
        row = {"n": n, "B": B, "threads": args.threads, **{f"{k}_s": v for k, v in med.items()},
               "baseline_over_current": med["jslds_baseline"] / med["jslds"], "jslds_over_rnn": med["jslds"] / med["rnn"],
               **{f"{k}_cpu_s": v for k, v in mcpu.items()},
               "baseline_over_current_cpu": mcpu["jslds_baseline"] / mcpu["jslds"], "jslds_over_rnn_cpu": mcpu["jslds"] / mcpu["rnn"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(),
           "baseline": str(args.baseline), "repeats": args.repeats, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
