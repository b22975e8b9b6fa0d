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
from auxfn.sde_control.training import build_system

OUT = Path(__file__).parent / "results"

# The cell-fate controller pins gene 2 only, and x1' = 0.5 - x1 does not depend on the others and gets no
# noise: its error is 0.5 e^{-t} from the official initial state whatever the controller, so
# ||x(t)|| < 0.05 needs t > ln 10 = 2.30. The rows are simulated to T = 5 (the preset's horizon).
CELLFATE_T = 5.0

RUNS = [
    ("harmonic", "as", {}), ("harmonic", "es-icnn", {}), ("harmonic", "es-quad", {}),
    ("lorenz", "es-icnn", {}), ("lorenz", "es-quad", {}), ("lorenz", "as", {}),
    ("lorenz", "es-icnn", {"lorenz_target": "P2"}), ("lorenz", "es-quad", {"lorenz_target": "P2"}),
    ("lorenz", "as", {"lorenz_target": "P2"}),
    ("energy", "as", {}), ("pendulum", "as", {}), ("pendulum", "es-quad", {}), ("hopf", "as", {}),
    ("stuart", "as", {}), ("echo", "as", {"max_iters": 3000}),
    ("cellfate", "as", {"eval_T": CELLFATE_T}),
]


# CPU-time changes against the official settings (also in RESULTS.md): the echo-state run is capped
# at 3000 steps (official: up to 10000, stopping at zero violation).
CHANGES = {"echo": "max_iters 3000 (official <= 10000)",
           "cellfate": "simulated T = 5 at dt = 1e-5 (official T = 15 at dt = 3e-4, where every learned-control path diverges "
                       "numerically); model-free fit 1000 steps on 8 trajectories (official 2000 on one)"}

# linear diffusion gains u = k x simulated next to each learned controller (same x0, same noise);
# the harmonic oscillator has its own baseline table (u = kx for k = 1, 2, 4, 6, LQR, CLF-QP)
LINEAR_K = {"harmonic": (), "energy": (2, 6), "lorenz": (10,), "pendulum": (5, 10), "hopf": (5, 10),
            "stuart": (5,), "echo": (50,), "cellfate": (2, 5)}


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
    s["linear"] = linear_baselines(cfg)
    return s


def linear_baselines(cfg):
    """u = k x in the diffusion (the paper's linear stochastic control), on the run's x0 and noise."""
    base = build_system(cfg)
    if base.noise_type == "general":
        return {}
    x0 = base.default_x0(cfg.eval_paths, generator=torch.Generator().manual_seed(cfg.eval_seed))
    def gain(k):  # a pinning run's baseline acts on the same coordinates only
        if not cfg.pin:
            return float(k)
        K = torch.zeros(base.dim, base.dim)
        K[list(cfg.pin), list(cfg.pin)] = float(k)
        return K

    pin = f" on x{'/x'.join(str(i + 1) for i in cfg.pin)} only" if cfg.pin else ""
    systems = {f"u = {k}x{pin}": base.with_controller(LinearGain(base.dim, gain(k), trainable=False).double())
               for k in LINEAR_K.get(cfg.system, ())}
    if not systems:
        return {}
    metrics, _ = compare(systems, x0, T=cfg.eval_T, dt=cfg.eval_dt, eps=cfg.eps, seed=cfg.eval_seed, blowup=cfg.blowup)
    return metrics


def model_free_row(which):
    """Cell-fate network, model-free: fit a neural ODE to 8 observed noise-free trajectories, learn
    pinned AS control on the fit, certify and simulate on the true network."""
    from auxfn.sde_control.model_free import model_free_control
    from auxfn.sde_control.systems import CellFate

    cfg = dataclasses.replace(preset("cellfate", "as", which), eval_T=CELLFATE_T)
    true = CellFate()
    x0 = true.domain.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.linspace(0.0, 15.0, 301, dtype=torch.float64)
    iters = 1000 if which == "paper" else 300
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        r = model_free_control(true, cfg, x0_obs=x0, ts=ts, out=Path(tmp) / "mf",
                               fit=dict(iters=iters, hidden=(50,), batch_time=10, batch_size=20, lr=1e-2))
    r = {k: v for k, v in r.items() if k not in ("model", "controller", "run_dir")}
    r["wall_s"] = time.perf_counter() - t0
    r["fit_iters"] = iters
    return r


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
    ap.add_argument("--tag", default="", help="suffix of the output files (parallel runs of parts of the table)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = set(filter(None, args.only.split(",")))
    rows = []
    for system, method, kw in RUNS:
        if only and system not in only:
            continue
        s = run_one(system, method, dict(kw), args.preset)
        rows.append(s)
        print(f"{s['label']}: train {s['train_time_s']:.2f} s, zero at {s['iters_to_zero']}, "
              f"tau {fmt(s.get('controlled/tau_mean_norm'))}, success {fmt(s.get('controlled/success_rate'))}, "
              f"diverged {s.get('controlled/diverged')}", flush=True)
    mf = model_free_row(args.preset) if (not only or "cellfate" in only) else None
    if mf is not None:
        print("cellfate model-free:", {k: fmt(v) for k, v in mf.items()}, flush=True)
    base_metrics, extra = harmonic_baselines(args.preset) if (not only or "harmonic" in only) else ({}, {})
    OUT.mkdir(exist_ok=True)
    (OUT / f"reproduction{args.tag}.json").write_text(json.dumps({"preset": args.preset, "runs": rows, "harmonic_baselines": base_metrics,
                                                       "cellfate_model_free": mf, "changes": CHANGES, **extra}, indent=2, default=lambda o: None) + "\n")
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
    lines += ["", "## Linear diffusion control u = kx on the same initial states and noise", "",
              "| system | k | tau (mean norm) | tau (per path) | success | energy | final mean norm | diverged |",
              "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        for name, m in s["linear"].items():
            lines.append(f"| {s['label']} | {name} | " + " | ".join(fmt(m[k]) for k in (
                "tau_mean_norm", "tau_per_path", "success_rate", "energy", "final_mean_norm", "diverged")) + " |")
    if mf is not None:
        lines += ["", "## Cell-fate network, model-free route (neural ODE fit, pinned AS on the fit, true system)", "",
                  "| fit iters | fit L1 | fit rel. drift error (box) | fit s | steps to zero (model) | train s | "
                  "held-out viol. (true) | tau (mean norm) | tau (per path) | success | energy | diverged | "
                  "uncontrolled final mean norm |", "|" + "---|" * 13]
        lines.append("| " + " | ".join(fmt(mf.get(k)) for k in (
            "fit_iters", "fit/final_l1", "fit/relative_drift_error_box", "fit/time_s", "train/iters_to_zero", "train/time_s",
            "true/heldout_violation_rate", "true/controlled/tau_mean_norm", "true/controlled/tau_per_path",
            "true/controlled/success_rate", "true/controlled/energy", "true/controlled/diverged",
            "true/uncontrolled/final_mean_norm")) + " |")
    if CHANGES:
        lines += ["", "Changes against the official settings: " + "; ".join(f"{k}: {v}" for k, v in CHANGES.items())]
    if base_metrics:
        lines += ["", "## Harmonic oscillator baselines (same initial states and noise as the AS row)", "",
                  "| controller | tau (mean norm) | tau (per path) | success | energy | final mean norm | diverged |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in base_metrics.items():
            lines.append(f"| {name} | " + " | ".join(fmt(m[k]) for k in ("tau_mean_norm", "tau_per_path", "success_rate", "energy",
                                                                           "final_mean_norm", "diverged")) + " |")
    text = "\n".join(lines) + "\n"
    (OUT / f"reproduction{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
