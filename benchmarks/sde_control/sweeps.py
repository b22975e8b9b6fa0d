"""α-sweep (AS) and b-sweep (ES-quad) on the inverted pendulum, official hyper_a / hyper_b settings.

    .venv/bin/python benchmarks/sde_control/sweeps.py [--quick]

Training: 500 states in U(-10, 10)^2, lr 0.01, at most 1000 steps, stop at zero violation; AS with
the official unnormalised vector loss and a 2x ReLU(6) net; ES-quad with V = x^T diag(l + N(x)^2) x
(tanh(6), l = 0.01) and a 2x ReLU(6) controller. Evaluation: from (-5, 5), 5 paired seeds,
dt = 1e-4, T = 2 (quick: dt = 1e-3), mean final |theta| and diverged paths.
Writes results/sweeps.json, results/sweeps.md and results/sweeps.png.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from auxfn.sde_control import ControlConfig, simulate, train

OUT = Path(__file__).parent / "results"


def one(cfg: ControlConfig, dt: float, T: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, out=Path(tmp) / "run", evaluate=False)
    x0 = torch.tensor([[-5.0, 5.0]], dtype=torch.float64).expand(5, 2).clone()
    # 5 seeds = 5 paths with independent noise, shared by every value of the sweep (paired)
    tr = simulate(res.sde, x0, dt=dt, n_steps=round(T / dt), seed=0, record_every=round(T / dt))
    theta = tr.xs[-1, :, 0].abs()
    s = res.summary
    return {"iters": s["iters"], "reached_zero": s["reached_zero"], "final_violation_rate": s["final_violation_rate_train"],
            "heldout_violation_rate": s.get("heldout_violation_rate"), "train_time_s": s["train_time_s"],
            "mean_final_abs_theta": float(theta[torch.isfinite(theta)].mean()) if torch.isfinite(theta).any() else math.inf,
            "diverged": tr.n_diverged}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dt, T = (1e-3, 2.0) if args.quick else (1e-4, 2.0)
    iters = 300 if args.quick else 1000
    common = dict(system="pendulum", n_samples=500, hidden=(6, 6), lr=0.01, max_iters=iters, seed=2,
                  certify_samples=20000, eval_paths=0, checkpoint_every=10000)
    alphas = [round(a, 2) for a in np.arange(0.05, 0.951, 0.1 if args.quick else 0.05)]
    bs = [round(b, 2) for b in np.arange(1.0, 3.01, 0.2 if args.quick else 0.1)]
    out = {"alpha": {}, "b": {}}
    for a in alphas:
        cfg = ControlConfig(method="as", alpha=a, as_normalize=False, **common)
        out["alpha"][a] = one(cfg, dt, T)
        print("alpha", a, out["alpha"][a], flush=True)
    for b in bs:
        cfg = ControlConfig(method="es-quad", b=b, lyap_hidden=(6,), quad_l=0.01, **common)
        out["b"][b] = one(cfg, dt, T)
        print("b", b, out["b"][b], flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "sweeps.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Pendulum sweeps ({'quick' if args.quick else 'full'}; dt = {dt:g}, T = {T})", ""]
    for key, name in (("alpha", "AS, alpha"), ("b", "ES-quad, b")):
        lines += [f"## {name}", "", f"| {key} | steps | zero violation | train viol. | held-out viol. | mean final abs(theta) | diverged |",
                  "|---|---|---|---|---|---|---|"]
        for v, r in out[key].items():
            lines.append(f"| {v} | {r['iters']} | {r['reached_zero']} | {r['final_violation_rate']:.4f} | "
                         f"{r['heldout_violation_rate']:.4f} | {r['mean_final_abs_theta']:.3g} | {r['diverged']} |")
        lines.append("")
    text = "\n".join(lines)
    (OUT / "sweeps.md").write_text(text)
    from auxfn.sde_control.plots import plot_sweep

    # log scale (mean final |theta| spans many decades; zeros are drawn at 1e-12); the dotted lines
    # mark the official scripts' thresholds (alpha 0.60-0.65; b window 1.9-2.3)
    def pos(v):
        return max(float(v), 1e-12) if v is not None and math.isfinite(v) else float("nan")

    for key, marks in (("alpha", (0.6, 0.65)), ("b", (1.9, 2.3))):
        rows = out[key].values()
        plot_sweep(list(out[key]), {"mean final |theta| (T = 2)": [pos(r["mean_final_abs_theta"]) for r in rows],
                                    "train violation rate": [pos(r["final_violation_rate"]) for r in rows],
                                    "held-out violation rate": [pos(r["heldout_violation_rate"]) for r in rows]},
                   OUT, xlabel=key, name=f"sweep_{key}", logy=True, marks=marks)
    print(text)


if __name__ == "__main__":
    main()
