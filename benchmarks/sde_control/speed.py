"""Speed: one ES step (vectorised generator vs one backward pass per batch entry), AS time to
zero violation, ES time to stop, and simulation throughput.

    .venv/bin/python benchmarks/sde_control/speed.py [--quick]

Prints a table and writes results/speed.json and results/speed.md next to this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from auxfn.sde_control import (
    ICNNLyapunov,
    ZeroPreservingMLP,
    generator,
    make_system,
    preset,
    simulate,
    train,
)
from auxfn.sde_control.losses import es_loss

OUT = Path(__file__).parent / "results"


def es_step_ours(V, u, sde, x, opt, b=2.1):
    F, G, _ = sde.drift_and_diffusion(x)
    t = generator(V, x, F, sde.dense(G))
    loss = es_loss(t.V, t.LV, t.VG, b)["total"]
    opt.zero_grad()
    loss.backward()
    opt.step()


def es_step_per_entry(V, u, sde, x, opt, b=2.1):
    """The official approach, re-implemented for this comparison only: gradient and Hessian of
    the batch sum Σ_i V(x_i) with respect to the whole (N, d) batch, the Hessian one backward
    pass per entry (N·d passes, each row of length N·d, no graph), then a loop over samples
    slicing each d×d diagonal block."""
    N, d = x.shape
    xg = x.clone().requires_grad_(True)
    Vs = V(xg)
    (Vx,) = torch.autograd.grad(Vs.sum(), xg, create_graph=True)
    flat = Vx.reshape(-1)
    rows = [torch.autograd.grad(flat[i], xg, retain_graph=True)[0].reshape(-1) for i in range(N * d)]
    H = torch.stack(rows)  # (N d, N d)
    Vx = Vx.detach()
    F, G, _ = sde.drift_and_diffusion(x)
    losses = []
    for r in range(N):
        h = H[r * d:(r + 1) * d, r * d:(r + 1) * d]
        g = G[r]
        LV = Vx[r] @ F[r] + 0.5 * g @ h @ g
        VG = Vx[r] @ g
        losses.append(torch.relu(b * LV / Vs[r] - VG**2 / Vs[r] ** 2))
    loss = torch.stack(losses).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def time_it(fn, n):
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def bench_es_step(d: int, n_ours: int, n_theirs: int) -> dict:
    torch.manual_seed(0)
    sde0 = make_system("harmonic" if d == 2 else "lorenz")
    hidden = (6, 6, 1) if d == 2 else (12, 12, 12, 1)
    V = ICNNLyapunov(d, hidden)
    u = ZeroPreservingMLP(d, (6, 6) if d == 2 else (10, 10))
    sde = sde0.with_controller(u)
    x = sde0.domain.sample(500)
    opt = torch.optim.Adam(list(V.parameters()) + list(u.parameters()), lr=1e-4)
    ours = time_it(lambda: es_step_ours(V, u, sde, x, opt), n_ours)
    theirs = time_it(lambda: es_step_per_entry(V, u, sde, x, opt), n_theirs)
    return {"d": d, "N": 500, "ours_s": ours, "per_entry_s": theirs, "speedup": theirs / ours}


def bench_train(system, method, which="paper", **kw) -> dict:
    cfg = dataclasses.replace(preset(system, method, which), eval_paths=0, certify_samples=20000, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        s = train(cfg, out=Path(tmp) / "run").summary
    return {k: s[k] for k in ("iters", "iters_to_zero", "stopped_early", "reached_zero", "train_time_s",
                              "final_loss", "heldout_violation_rate")}


def bench_sim(system, hidden, n_steps, paths=20, **kw) -> dict:
    torch.manual_seed(0)
    sde0 = make_system(system, **kw)
    u = ZeroPreservingMLP(sde0.dim, hidden)
    with torch.no_grad():
        for p in u.parameters():
            p.mul_(0.1)
    sde = sde0.with_controller(u)
    x0 = sde0.default_x0(paths, generator=torch.Generator().manual_seed(0))
    simulate(sde, x0, dt=1e-4, n_steps=100)
    t0 = time.perf_counter()
    simulate(sde, x0, dt=1e-4, n_steps=n_steps, record_every=100)
    dt = time.perf_counter() - t0
    return {"system": system, "d": sde0.dim, "paths": paths, "steps": n_steps, "seconds": dt,
            "path_steps_per_s": paths * n_steps / dt, "us_per_path_step": dt / (paths * n_steps) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    res = {"es_step": [bench_es_step(2, 10 if q else 30, 1 if q else 3), bench_es_step(3, 10 if q else 30, 1 if q else 3)]}
    res["as_harmonic_quick"] = bench_train("harmonic", "as", "quick")
    res["es_icnn_harmonic_paper"] = bench_train("harmonic", "es-icnn")
    res["es_quad_harmonic_paper"] = bench_train("harmonic", "es-quad")
    res["simulation"] = [bench_sim("harmonic", (6, 6), 5000 if q else 20000),
                         bench_sim("harmonic", (6, 6), 2000 if q else 5000, paths=1000),
                         bench_sim("stuart", (80,), 2000 if q else 10000, n=20),
                         bench_sim("stuart", (80,), 500 if q else 2000, paths=1000, n=20)]
    OUT.mkdir(exist_ok=True)
    (OUT / "speed.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# sde_control speed (1 torch thread, CPU)", "",
             "## One ES-ICNN step, N = 500 (forward + backward + Adam)", "",
             "| d | ours (s) | one backward per entry (s) | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['d']} | {r['ours_s']:.4f} | {r['per_entry_s']:.3f} | {r['speedup']:.0f}x |" for r in res["es_step"]]
    lines += ["", "## Training to stop (harmonic oscillator)", "",
              "| run | steps | steps to zero violation | stopped early | training time (s) | held-out violation rate |",
              "|---|---|---|---|---|---|"]
    for key in ("as_harmonic_quick", "es_icnn_harmonic_paper", "es_quad_harmonic_paper"):
        r = res[key]
        lines.append(f"| {key} | {r['iters']} | {r['iters_to_zero']} | {r['stopped_early']} | {r['train_time_s']:.3f} | "
                     f"{r['heldout_violation_rate']:.4f} |")
    lines += ["", "Official scripts on the same kind of machine (reference figures from the issue): AS 3.4–3.9 s "
              "(185 steps of 13.4 ms); ES-ICNN 0.96–0.99 s per step, about 167 s to stop; ES-quad 0.37 s per step, about 60 s.",
              "", "## Simulation throughput (Euler–Maruyama, float64, MLP controller)", "",
              "| system | d | paths | steps | seconds | path-steps/s | µs per path-step |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['d']} | {r['paths']} | {r['steps']} | {r['seconds']:.2f} | {r['path_steps_per_s']:.3g} | "
              f"{r['us_per_path_step']:.2f} |" for r in res["simulation"]]
    lines += ["", "Official generator: about 100 µs per path-step with a network controller (one path at a time)."]
    text = "\n".join(lines) + "\n"
    (OUT / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
