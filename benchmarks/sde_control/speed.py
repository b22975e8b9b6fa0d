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
        res = train(cfg, out=Path(tmp) / "run")
    s = res.summary
    out = {k: s[k] for k in ("iters", "iters_to_zero", "stopped_early", "reached_zero", "train_time_s",
                             "final_loss", "heldout_violation_rate", "iters_to_loss_1e-3", "time_to_loss_1e-3_s")}
    out["lr_schedule"] = cfg.lr_schedule
    out["loss_curve"] = [r["loss/total"] for r in res.history]
    out["violation_curve"] = [r["loss/violation_rate"] for r in res.history]
    return out


def plot_loss_curves(res: dict) -> Path:
    """Training loss and violation rate per step of the three harmonic learners (the paper's loss figure)."""
    from auxfn.core.plotting import save_figure, subplots

    fig, (a1, a2) = subplots(1, 2, width=4.2, height=3.2)
    for key, label in (("as_harmonic_quick", "AS"), ("es_icnn_harmonic_paper", "ES-ICNN"),
                       ("es_quad_harmonic_paper", "ES-quad")):
        a1.plot([max(v, 1e-12) for v in res[key]["loss_curve"]], label=label)
        a2.plot(res[key]["violation_curve"], label=label)
    a1.set(xlabel="step", ylabel="loss (zero drawn at 1e-12)", yscale="log", title="harmonic oscillator")
    a2.set(xlabel="step", ylabel="violation rate (training states)")
    a1.legend()
    return save_figure(fig, OUT, "loss_curves_harmonic")


def _sim_setup(system, hidden, paths, **kw):
    torch.manual_seed(0)
    sde0 = make_system(system, **kw)
    u = ZeroPreservingMLP(sde0.dim, hidden)
    with torch.no_grad():
        for p in u.parameters():
            p.mul_(0.1)
    sde = sde0.with_controller(u)
    x0 = sde0.default_x0(paths, generator=torch.Generator().manual_seed(0))
    return sde, x0


def bench_sim(system, hidden, n_steps, paths=20, **kw) -> dict:
    """Both engines in the same process on the same model, x0 and noise, interleaved (fast, reference, fast)."""
    sde, x0 = _sim_setup(system, hidden, paths, **kw)
    res = {"system": system, "d": sde.dim, "paths": paths, "steps": n_steps}
    for engine in ("fast", "reference"):
        simulate(sde, x0, dt=1e-4, n_steps=100, engine=engine)  # warm-up
    times = {"fast": [], "reference": []}
    for engine in ("fast", "reference", "fast"):
        t0 = time.perf_counter()
        tr = simulate(sde, x0, dt=1e-4, n_steps=n_steps, record_every=100, engine=engine)
        times[engine].append(time.perf_counter() - t0)
        res[f"{engine}_diverged"] = tr.n_diverged
    for engine, ts in times.items():
        t = min(ts)
        res[f"{engine}_s"] = t
        res[f"{engine}_path_steps_per_s"] = paths * n_steps / t
        res[f"{engine}_us_per_path_step"] = t / (paths * n_steps) * 1e6
    res["speedup"] = res["reference_s"] / res["fast_s"]
    return res


def bench_compile(K: int = 10, n_steps: int = 20000, paths: int = 20) -> dict:
    """torch.compile (inductor) of K unrolled Euler steps of the harmonic oscillator, a route we measured and did
    not adopt: compile time, throughput and the largest difference to the eager chunk."""
    sde, x0 = _sim_setup("harmonic", (6, 6), paths)
    sde = sde.double()
    parts = sde.lean_parts()
    dt = 1e-4

    def chunk(z, dW):
        hi = torch.zeros_like(z)
        for k in range(K):
            F, G, _ = parts(z)
            z = torch.addcmul(torch.add(z, F, alpha=dt), G, dW[k])
            hi = torch.maximum(hi, z.abs())
        return z, hi

    dW = torch.randn(K, paths, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * dt**0.5
    with torch.no_grad():
        c = torch.compile(chunk, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        c(x0, dW)
        compile_s = time.perf_counter() - t0
        z = x0.clone()
        n = max(1, n_steps // K)
        t0 = time.perf_counter()
        for _ in range(n):
            z, _ = c(z, dW)
        run_s = time.perf_counter() - t0
        diff = float((chunk(x0, dW)[0] - c(x0, dW)[0]).abs().max())
    return {"K": K, "compile_s": compile_s, "path_steps_per_s": paths * K * n / run_s, "max_abs_diff_vs_eager": diff}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile of unrolled Euler steps (minutes)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    res = {"es_step": [bench_es_step(2, 10 if q else 30, 1 if q else 3), bench_es_step(3, 10 if q else 30, 1 if q else 3)]}
    res["as_harmonic_quick"] = bench_train("harmonic", "as", "quick")
    res["es_icnn_harmonic_paper"] = bench_train("harmonic", "es-icnn")
    res["es_quad_harmonic_paper"] = bench_train("harmonic", "es-quad")
    res["es_icnn_harmonic_constant_lr"] = bench_train("harmonic", "es-icnn", lr_schedule="constant")
    res["es_quad_harmonic_constant_lr"] = bench_train("harmonic", "es-quad", lr_schedule="constant")
    res["simulation"] = [bench_sim("harmonic", (6, 6), 5000 if q else 20000),
                         bench_sim("stuart", (80,), 1000 if q else 5000, n=20),
                         bench_sim("harmonic", (6, 6), 1000 if q else 5000, paths=1000)]
    if args.compile:
        res["compile"] = bench_compile()
    OUT.mkdir(exist_ok=True)
    plot_loss_curves(res)
    (OUT / "speed.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# sde_control speed (1 torch thread, CPU)", "",
             "## One ES-ICNN step, N = 500 (forward + backward + Adam)", "",
             "| d | ours (s) | one backward per entry (s) | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['d']} | {r['ours_s']:.4f} | {r['per_entry_s']:.3f} | {r['speedup']:.0f}x |" for r in res["es_step"]]
    lines += ["", "## Training to stop (harmonic oscillator)", "",
              "| run | lr schedule | steps | steps to zero violation | training time (s) | steps to loss < 1e-3 | "
              "time to loss < 1e-3 (s) | held-out violation rate (20 000 states) |",
              "|---|---|---|---|---|---|---|---|"]
    for key in ("as_harmonic_quick", "es_icnn_harmonic_paper", "es_quad_harmonic_paper", "es_icnn_harmonic_constant_lr",
                "es_quad_harmonic_constant_lr"):
        r = res[key]
        t1e3 = r["time_to_loss_1e-3_s"]
        lines.append(f"| {key} | {r['lr_schedule']} | {r['iters']} | {r['iters_to_zero']} | {r['train_time_s']:.3f} | "
                     f"{r['iters_to_loss_1e-3']} | {'-' if t1e3 is None else f'{t1e3:.3f}'} | "
                     f"{r['heldout_violation_rate']:.4f} |")
    lines += ["", "Official scripts on the same kind of machine (reference figures from the issue): AS 3.4–3.9 s "
              "(185 steps of 13.4 ms) to zero loss; ES-ICNN 0.96–0.99 s per step, 169 steps, about 167 s to stop "
              "(loss < 1e-3); ES-quad 0.37 s per step, about 60 s.",
              "", "## Simulation throughput (Euler–Maruyama, float64, MLP controller, same model/x0/noise)", "",
              "| system | d | paths | steps | fast engine path-steps/s | reference loop path-steps/s | speed-up | "
              "fast µs per path-step | diverged (fast / reference) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['d']} | {r['paths']} | {r['steps']} | {r['fast_path_steps_per_s']:.3g} | "
              f"{r['reference_path_steps_per_s']:.3g} | {r['speedup']:.2f}x | {r['fast_us_per_path_step']:.2f} | "
              f"{r['fast_diverged']} / {r['reference_diverged']} |" for r in res["simulation"]]
    lines += ["", "Official generator: about 100 µs per path-step with a network controller (one path at a time). "
              "Goal: >= 1e6 path-steps/s with 20 paths."]
    if "compile" in res:
        c = res["compile"]
        lines += ["", f"torch.compile of {c['K']} unrolled steps (harmonic, 20 paths, not adopted): compile "
                  f"{c['compile_s']:.1f} s, {c['path_steps_per_s']:.3g} path-steps/s, largest difference to the eager "
                  f"chunk {c['max_abs_diff_vs_eager']:.3g}."]
    text = "\n".join(lines) + "\n"
    (OUT / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
