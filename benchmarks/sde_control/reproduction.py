"""Reproduction table at CPU scale: learned controllers vs uncontrolled and linear / LQR / CLF-QP baselines.

    .venv/bin/python benchmarks/sde_control/reproduction.py [--preset quick|paper] [--only harmonic,lorenz,...]

For each (system, method) the run trains with the preset, then simulates 20 paths (10 for the
echo-state network) of the controlled and the uncontrolled system on identical noise.
Reported: training time, steps, steps to zero violation, held-out violation rate,
τ_ε (mean-norm and per-path definitions), success rate, energy E∫‖u‖², diverged paths.
Writes results/reproduction.json and results/reproduction.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from auxfn.sde_control import LinearGain, preset, train
from auxfn.sde_control.baselines import CLFQP, lqr_gain
from auxfn.sde_control.evaluation import compare
from auxfn.sde_control.systems import Harmonic

OUT = Path(__file__).parent / "results"

RUNS = [
    ("harmonic", "as", {}), ("harmonic", "es-icnn", {}), ("harmonic", "es-quad", {}),
    ("lorenz", "es-icnn", {}), ("lorenz", "es-quad", {}), ("lorenz", "as", {}),
    ("lorenz", "es-icnn", {"lorenz_target": "P2"}), ("lorenz", "es-quad", {"lorenz_target": "P2"}),
    ("lorenz", "as", {"lorenz_target": "P2"}),
    ("energy", "as", {}), ("pendulum", "as", {}), ("pendulum", "es-quad", {}), ("hopf", "as", {}),
    ("stuart", "as", {}), ("echo", "as", {}),
]


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def run_one(system, method, kw, which):
    cfg = dataclasses.replace(preset(system, method, which), **kw)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        s = train(cfg, out=Path(tmp) / "run").summary
    s["wall_s"] = time.perf_counter() - t0
    s["label"] = f"{system}{'-' + kw['lorenz_target'] if 'lorenz_target' in kw else ''} / {method}"
    s["eps"], s["T"], s["dt"] = cfg.eps, cfg.eval_T, cfg.eval_dt
    return s


def harmonic_baselines(which):
    cfg = preset("harmonic", "as", which)
    base = Harmonic()
    x0 = base.default_x0(cfg.eval_paths, generator=torch.Generator().manual_seed(cfg.eval_seed))
    A = np.array([[0.0, 1.0], [-1.0, -1.0]])
    K = lqr_gain(A, np.eye(2), 20 * np.eye(2), np.eye(2))
    systems = {f"linear diffusion u = {k}x": base.with_controller(LinearGain(2, float(k), trainable=False).double())
               for k in (1, 2, 4, 6)}
    systems["LQR (drift, Q = 20I, R = I)"] = Harmonic(control_entry="drift",
                                                      controller=LinearGain(2, torch.tensor(-K), trainable=False).double())
    systems["CLF-QP (drift, V = |x|^2/2, eps 0.1, p 10)"] = Harmonic(control_entry="drift", controller=CLFQP(base))
    metrics, _ = compare(systems, x0, T=cfg.eval_T, dt=cfg.eval_dt, eps=cfg.eps, seed=cfg.eval_seed)
    return metrics, {"K_lqr": K.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick", choices=["quick", "paper"])
    ap.add_argument("--only", default="", help="comma-separated systems")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = set(filter(None, args.only.split(",")))
    rows = []
    for system, method, kw in RUNS:
        if only and system not in only:
            continue
        s = run_one(system, method, kw, args.preset)
        rows.append(s)
        print(f"{s['label']}: train {s['train_time_s']:.2f} s, zero at {s['iters_to_zero']}, "
              f"tau {fmt(s.get('controlled/tau_mean_norm'))}, success {fmt(s.get('controlled/success_rate'))}, "
              f"diverged {s.get('controlled/diverged')}", flush=True)
    base_metrics, extra = harmonic_baselines(args.preset) if (not only or "harmonic" in only) else ({}, {})
    OUT.mkdir(exist_ok=True)
    (OUT / "reproduction.json").write_text(json.dumps({"preset": args.preset, "runs": rows, "harmonic_baselines": base_metrics,
                                                       **extra}, indent=2, default=lambda o: None) + "\n")
    head = ("| system / method | train s | steps | steps to zero | held-out viol. | eps | T | dt | "
            "tau (mean norm) | tau (per path) | success | energy | diverged | uncontrolled: tau / success / final mean norm / diverged |")
    lines = [f"# sde_control reproduction ({args.preset} presets, CPU, 1 thread)", "", head, "|" + "---|" * 14]
    for s in rows:
        lines.append("| " + " | ".join(fmt(v) for v in (
            s["label"], s["train_time_s"], s["iters"], s["iters_to_zero"], s.get("heldout_violation_rate"), s["eps"], s["T"],
            s["dt"], s.get("controlled/tau_mean_norm"), s.get("controlled/tau_per_path"), s.get("controlled/success_rate"),
            s.get("controlled/energy"), s.get("controlled/diverged"))) + " | " +
            " / ".join(fmt(s.get(f"uncontrolled/{k}")) for k in ("tau_mean_norm", "success_rate", "final_mean_norm", "diverged"))
            + " |")
    if base_metrics:
        lines += ["", "## Harmonic oscillator baselines (same initial states and noise as the AS row)", "",
                  "| controller | tau (mean norm) | tau (per path) | success | energy | final mean norm | diverged |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in base_metrics.items():
            lines.append(f"| {name} | " + " | ".join(fmt(m[k]) for k in ("tau_mean_norm", "tau_per_path", "success_rate", "energy",
                                                                           "final_mean_norm", "diverged")) + " |")
    text = "\n".join(lines) + "\n"
    (OUT / "reproduction.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
