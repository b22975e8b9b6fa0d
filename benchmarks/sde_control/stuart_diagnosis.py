"""Why the learned AS control of the 39-d Stuart–Landau network diverged at dt = 1e-4: the gains it learns.

    .venv/bin/python benchmarks/sde_control/stuart_diagnosis.py VARIANT [--iters N]

VARIANT: ``normalised`` (the preset before this diagnosis: elementwise AS loss, residual
normalised by x_j^4), ``official`` (elementwise, not normalised: the official code's loss, now
the preset), ``vector`` (eq. (3) in vector form, normalised). Otherwise the ``paper`` preset. Trains, then reports the diffusion gains k = NN(x) of u = NN(x) ⊙ x on
the training states and along simulated paths, k·sqrt(dt) (Euler–Maruyama of multiplicative
noise k x dB needs k sqrt(dt) well below 1), and the simulation at dt = 1e-4 and 1e-5.
Writes results/stuart_<variant>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from auxfn.sde_control import preset, simulate, train
from auxfn.sde_control.metrics import summarize

OUT = Path(__file__).parent / "results"
VARIANTS = {"normalised": {"as_form": "elementwise", "as_normalize": True},
            "official": {"as_form": "elementwise", "as_normalize": False},
            "vector": {"as_form": "vector", "as_normalize": True}}


def gains(ctrl, x: torch.Tensor) -> dict:
    with torch.no_grad():
        k = ctrl.net(x.to(next(ctrl.parameters()).dtype)).abs()
    return {"max": float(k.max()), "p99": float(k.flatten().quantile(0.99)), "median": float(k.median())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--T", type=float, default=6.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = dataclasses.replace(preset("stuart", "as", "paper"), max_iters=args.iters, eval_paths=0,
                              certify_samples=20000, **VARIANTS[args.variant])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, out=Path(tmp) / "run")
    out = {"variant": args.variant, "config": {"as_form": cfg.as_form, "as_normalize": cfg.as_normalize,
                                                  "alpha": cfg.alpha, "iters": args.iters},
           "train_s": time.perf_counter() - t0,
           **{k: res.summary[k] for k in ("iters_to_zero", "final_violation_rate_train", "heldout_violation_rate")}}
    sde = res.sde
    ctrl = res.controller
    out["gain_train_states"] = gains(ctrl, sde.domain.sample(5000, generator=torch.Generator().manual_seed(1)))
    x0 = sde.default_x0(20, generator=torch.Generator().manual_seed(0))
    for dt in (1e-4, 1e-5):
        n = round(args.T / dt)
        t0 = time.perf_counter()
        tr = simulate(sde, x0, dt=dt, n_steps=n, record_every=max(1, n // 600), seed=0)
        m = summarize(tr, eps=cfg.eps)
        xs = tr.xs.reshape(-1, sde.dim)
        xs = xs[torch.isfinite(xs).all(-1)]
        g = gains(ctrl, xs)
        out[f"dt={dt:g}"] = {"sim_s": time.perf_counter() - t0, "gain_on_paths": g,
                             "max_k_sqrt_dt": g["max"] * math.sqrt(dt),
                             **{k: m[k] for k in ("tau_mean_norm", "tau_per_path", "success_rate", "diverged",
                                                  "final_mean_norm", "energy")}}
        print(args.variant, dt, out[f"dt={dt:g}"], flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / f"stuart_{args.variant}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
