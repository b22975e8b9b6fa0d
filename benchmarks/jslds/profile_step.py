"""Where the time of one default JSLDS training step goes (torch.profiler), per size and thread count.

    python benchmarks/jslds/profile_step.py [--threads 1 2] [--steps 5] [--out DIR] [--baseline OLD_FUSED_PY]

GRU, T=25, u=6, o=3, 3-bit flip-flop batches at (n=100, B=256) and (n=64, B=64), the default
whole-sequence path (``auxfn.jslds.fused``). The profiler's self CPU time of every op is put into
one of: matmul (mm, addmm, bmm), pointwise (elementwise math, activations, copies and fills),
allocation (empty, empty_like, new_empty, zeros), reductions, optimizer (Adam, clipping: ops under
their record_function ranges), and the rest; "Python / dispatch" is the step's wall time minus the
sum of all ops' self times. Ops per time step counts the aten ops issued inside the sequence
Function's forward and backward, divided by T. Writes profile.json / profile.md into --out
(default benchmarks/jslds/results/profile).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from auxfn.jslds import JSLDS, FlipFlopTask, GRUCell, LossWeights, jslds_losses

sys.path.insert(0, str(Path(__file__).parent))
W_JSLDS = LossWeights(3, 1, 100, 10)
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::baddbmm"}
ALLOC = {"aten::empty", "aten::empty_like", "aten::new_empty", "aten::zeros", "aten::new_zeros", "aten::empty_strided",
         "aten::zeros_like", "aten::ones", "aten::new_ones"}
REDUCE = {"aten::sum", "aten::mean", "aten::mse_loss", "aten::norm", "aten::linalg_vector_norm", "aten::max", "aten::stack"}
VIEW = {"aten::view", "aten::slice", "aten::select", "aten::t", "aten::transpose", "aten::as_strided", "aten::unsqueeze",
        "aten::split", "aten::unbind", "aten::reshape", "aten::expand", "aten::narrow", "aten::permute", "aten::detach",
        "aten::alias", "aten::_unsafe_view", "aten::squeeze", "aten::split_with_sizes", "aten::chunk", "aten::numpy_T",
        "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type"}


def category(name: str) -> str:
    if name in MATMUL:
        return "matmul"
    if name in ALLOC:
        return "allocation"
    if name in REDUCE:
        return "reduction"
    if name in VIEW:
        return "views"
    if name.startswith("aten::"):
        return "pointwise"
    return "other"


def one_step(model, opt, batch):
    x, y, mask = batch
    with record_function("step/forward+loss"):
        loss = jslds_losses(model(x), y, mask, W_JSLDS)["total"]
    opt.zero_grad(set_to_none=True)
    with record_function("step/backward"):
        loss.backward()
    with record_function("step/optimizer"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()


def profile_size(n: int, B: int, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = JSLDS(GRUCell(n, 6), n_out=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02, eps=0.1)
    task = FlipFlopTask()
    batch = task.sample(B, torch.Generator().manual_seed(0))
    T = batch[0].shape[1]
    for _ in range(3):
        one_step(model, opt, batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step(model, opt, batch)
    wall_plain = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            one_step(model, opt, batch)
        wall_prof = (time.perf_counter() - t0) / steps
    events = prof.events()
    # optimizer ops: those inside the "step/optimizer" range
    opt_ranges = [(e.time_range.start, e.time_range.end) for e in events if e.name == "step/optimizer"]
    seq_ranges = {"forward": [], "backward": []}
    for e in events:
        if e.name == "_Sequence":
            seq_ranges["forward"].append((e.time_range.start, e.time_range.end))
        elif e.name.startswith("_SequenceBackward"):
            seq_ranges["backward"].append((e.time_range.start, e.time_range.end))

    def inside(e, ranges):
        return any(a <= e.time_range.start and e.time_range.end <= b for a, b in ranges)

    cats: dict[str, float] = {}
    ops_in_seq = {"forward": 0, "backward": 0}
    total_self = 0.0
    per_op: dict[str, list[float]] = {}
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CPU or e.name.startswith("step/"):
            continue
        self_us = e.self_cpu_time_total
        total_self += self_us
        c = "optimizer" if inside(e, opt_ranges) else category(e.name)
        cats[c] = cats.get(c, 0.0) + self_us
        parent = e.cpu_parent
        top_level = parent is None or not parent.name.startswith("aten::")  # not an op called by another op
        if e.name.startswith("aten::") and top_level and c not in ("optimizer", "views"):
            for k, r in seq_ranges.items():
                if inside(e, r):
                    ops_in_seq[k] += 1
        rec = per_op.setdefault(e.name, [0.0, 0])
        rec[0] += self_us
        rec[1] += 1
    wall_us = wall_prof * steps * 1e6
    cats["python/dispatch (wall - ops)"] = max(0.0, wall_us - total_self)
    top = sorted(per_op.items(), key=lambda kv: -kv[1][0])[:15]
    return {
        "n": n, "B": B, "threads": threads, "T": T, "seconds_per_step": wall_plain, "seconds_per_step_profiled": wall_prof,
        "fraction": {k: v / wall_us for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "seconds": {k: v / 1e6 / steps for k, v in cats.items()},
        "aten_ops_per_time_step": {k: v / steps / T for k, v in ops_in_seq.items()},
        "top_ops": [{"op": k, "ms_per_step": v[0] / 1e3 / steps, "calls_per_step": v[1] / steps} for k, v in top],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "profile")
    ap.add_argument("--baseline", type=Path, default=None, help="profile an earlier auxfn/jslds/fused.py instead")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.baseline is not None:
        from bench_compare_fused import load_baseline

        import auxfn.jslds.fused as current

        current.sequence_forward = load_baseline(args.baseline).sequence_forward
    rows = []
    for threads in args.threads:
        for n, B in ((100, 256), (64, 64)):
            r = profile_size(n, B, threads, args.steps)
            rows.append(r)
            print(json.dumps(r), flush=True)
    import os

    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "rows": rows}
    (args.out / "profile.json").write_text(json.dumps(res, indent=2) + "\n")
    cats = sorted({k for r in rows for k in r["fraction"]})
    lines = [f"torch {torch.__version__}, {res['date']}, load average {res['load_average']}", "",
             "| threads | n | B | s/step | s/step profiled | " + " | ".join(cats) + " | non-view aten ops / time step fwd | bwd |",
             "|---" * (7 + len(cats)) + "|"]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['n']} | {r['B']} | {r['seconds_per_step']:.4f} | {r['seconds_per_step_profiled']:.4f} | "
                     + " | ".join(f"{100 * r['fraction'].get(c, 0):.0f}%" for c in cats)
                     + f" | {r['aten_ops_per_time_step']['forward']:.0f} | {r['aten_ops_per_time_step']['backward']:.0f} |")
    for r in rows:
        lines += ["", f"Top ops, threads {r['threads']}, n={r['n']}, B={r['B']}: "
                  + "; ".join(f"{o['op']} {o['ms_per_step']:.1f} ms ({o['calls_per_step']:.0f} calls)" for o in r["top_ops"][:10])]
    (args.out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
