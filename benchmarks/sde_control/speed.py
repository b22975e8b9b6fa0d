"""Speed: one ES step (vectorised generator vs one backward pass per batch entry), AS time to
zero violation, ES time to stop, and simulation throughput (step-by-step loop, fast engine,
Picard engine, compiled engine; a window/tolerance grid of the Picard engine; the compiled
engine's unroll, float32 and the arithmetic floor of the 39-d case; optionally torch.compile of one step).

    .venv/bin/python benchmarks/sde_control/speed.py [--quick] [--threads N]
        [--only es,train,sim,grid,unroll,f32,floor,compile]

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
from auxfn.sde_control.simulation import BrownianIncrements

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
    """A system with an untrained controller of the given architecture, weights scaled by 0.1."""
    torch.manual_seed(0)
    sde0 = make_system(system, **kw)
    u = ZeroPreservingMLP(sde0.dim, hidden)
    with torch.no_grad():
        for p in u.parameters():
            p.mul_(0.1)
    sde = sde0.with_controller(u)
    x0 = sde0.default_x0(paths, generator=torch.Generator().manual_seed(0))
    return sde, x0


_TRAINED: dict = {}


def _trained_harmonic(paths):
    """The harmonic oscillator with the AS controller of the quick preset (trained here, about 0.1 s)."""
    if "sde" not in _TRAINED:
        cfg = dataclasses.replace(preset("harmonic", "as", "quick"), eval_paths=0, certify_samples=1000)
        with tempfile.TemporaryDirectory() as tmp:
            _TRAINED["sde"] = train(cfg, out=Path(tmp) / "run").sde
    sde = _TRAINED["sde"]
    return sde, sde.default_x0(paths, generator=torch.Generator().manual_seed(0))


def _max_dev(a, b) -> float:
    """Largest |a - b| / (1 + |b|) over the recorded states (NaN after divergence must agree)."""
    if not torch.equal(torch.isnan(a.xs), torch.isnan(b.xs)):
        return float("inf")
    return float(((a.xs - b.xs).abs() / (1.0 + b.xs.abs())).nan_to_num(0.0).max())


ENGINES = ("reference", "fast", "picard", "compiled")


def bench_sim(label, sde, x0, dt, n_steps, *, window=128, tol=1e-13, unroll=32, engines=ENGINES, reps=2,
              dtype=torch.float64) -> dict:
    """The engines in one process on the same model, x0 and noise, interleaved; the best of ``reps`` runs each.
    Deviations are measured against the step-by-step loop (recorded every 100 steps). The compiled engine's
    warm-up call compiles (or loads inductor's cache): its time is reported as ``compile_s``."""
    paths = x0.shape[0]
    res = {"case": label, "system": sde.name, "d": sde.dim, "paths": paths, "dt": dt, "steps": n_steps,
           "window": window, "tol": tol, "unroll": unroll, "dtype": str(dtype).replace("torch.", "")}
    kw = dict(dt=dt, record_every=100, window=window, tol=tol, unroll=unroll, dtype=dtype)
    for engine in engines:
        t0 = time.perf_counter()
        w = simulate(sde, x0, n_steps=max(200, unroll), engine=engine, **kw)  # warm-up
        if engine == "compiled":
            res["compile_s"] = time.perf_counter() - t0
            if "compile_error" in w.info:
                raise RuntimeError(f"compiled engine fell back: {w.info['compile_error']}")
    times: dict[str, list[float]] = {e: [] for e in engines}
    out = {}
    for _ in range(reps):
        for engine in engines:
            t0 = time.perf_counter()
            out[engine] = simulate(sde, x0, n_steps=n_steps, engine=engine, **kw)
            times[engine].append(time.perf_counter() - t0)
    for engine, ts in times.items():
        t = min(ts)
        res[f"{engine}_s"] = t
        res[f"{engine}_path_steps_per_s"] = paths * n_steps / t
        res[f"{engine}_diverged"] = out[engine].n_diverged
        if engine != "reference" and "reference" in out:
            res[f"{engine}_max_rel_dev"] = _max_dev(out[engine], out["reference"])
        elif engine != "fast" and "fast" in out:  # no loop in this comparison: against the fast engine
            res[f"{engine}_max_rel_dev_vs_fast"] = _max_dev(out[engine], out["fast"])
    if "picard" in out:
        res["picard_info"] = out["picard"].info
    if "compiled" in out:
        res["compiled_info"] = out["compiled"].info
        if "fast" in times:
            res["compiled_vs_fast"] = res["fast_s"] / res["compiled_s"]
    if "reference" in times and "fast" in times:
        res["fast_vs_reference"] = res["reference_s"] / res["fast_s"]
    if "picard" in times and "fast" in times:
        res["picard_vs_fast"] = res["fast_s"] / res["picard_s"]
    return res


def bench_picard_grid(n_steps, windows=(32, 64, 128, 256), tols=(1e-12, 1e-13, 1e-14)) -> list[dict]:
    """Window and tolerance of the Picard engine: harmonic oscillator, trained AS controller, 20 paths, dt = 1e-4;
    throughput relative to the fast engine measured in the same loop, deviation from the step-by-step loop."""
    sde, x0 = _trained_harmonic(20)
    kw = dict(dt=1e-4, n_steps=n_steps, record_every=100)
    ref = simulate(sde, x0, engine="reference", **kw)
    simulate(sde, x0, dt=1e-4, n_steps=200, engine="picard")
    rows = []
    for w in windows:
        for tol in tols:
            t0 = time.perf_counter()
            fast = simulate(sde, x0, engine="fast", **kw)
            tf = time.perf_counter() - t0
            t0 = time.perf_counter()
            pic = simulate(sde, x0, engine="picard", window=w, tol=tol, **kw)
            tp = time.perf_counter() - t0
            rows.append({"window": w, "tol": tol, "picard_path_steps_per_s": 20 * n_steps / tp,
                         "fast_path_steps_per_s": 20 * n_steps / tf, "picard_vs_fast": tf / tp,
                         "steps_per_sweep": pic.info["steps_per_sweep"], "fallback_steps": pic.info["fallback_steps"],
                         "max_rel_dev": _max_dev(pic, ref), "fast_max_rel_dev": _max_dev(fast, ref)})
    return rows


def bench_compile_step(n_steps: int = 20000, paths: int = 20) -> dict:
    """torch.compile (inductor) of ONE Euler step of the harmonic oscillator with the trained AS controller, called
    in a Python loop: compile time, throughput next to the eager step, largest deviation from the eager paths."""
    sde, x0 = _trained_harmonic(paths)
    sde = sde.double()
    parts = sde.lean_parts()
    dt = 1e-4

    def step(z, dw):
        F, G, _ = parts(z)
        return torch.addcmul(torch.add(z, F, alpha=dt), G, dw)

    dW = torch.randn(n_steps, paths, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * dt**0.5
    with torch.no_grad():
        c = torch.compile(step, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        c(x0, dW[0])
        compile_s = time.perf_counter() - t0
        out = {}
        for name, fn in (("eager", step), ("compiled", c), ("eager2", step)):
            z = x0.clone()
            t0 = time.perf_counter()
            for k in range(n_steps):
                z = fn(z, dW[k])
            out[name] = (time.perf_counter() - t0, z)
    eager_s = min(out["eager"][0], out["eager2"][0])
    a, b = out["compiled"][1], out["eager"][1]  # (no blow-up check here: a path may overflow in both)
    same_nan = torch.equal(torch.isfinite(a), torch.isfinite(b))
    diff = float(((a - b).abs() / (1 + b.abs()))[torch.isfinite(b)].max()) if same_nan else float("inf")
    sde.float()
    return {"compile_s": compile_s, "compiled_path_steps_per_s": paths * n_steps / out["compiled"][0],
            "eager_step_path_steps_per_s": paths * n_steps / eager_s, "max_rel_dev_vs_eager": diff,
            "steps": n_steps, "paths": paths}


def bench_unroll(q: bool) -> list[dict]:
    """Steps per compiled call: harmonic (trained AS, 20 paths, dt 1e-4) and the 39-d Stuart-Landau network, each
    next to the fast engine in the same loop; the compile time of each unroll (a fresh graph each)."""
    sde, x0 = _trained_harmonic(20)
    sl, x0s = _sim_setup("stuart", (80,), 20, n=20)
    rows = []
    for label, m, x, n, unrolls in (("harmonic", sde, x0, 5000 if q else 20000, (8, 16, 32)),
                                    ("Stuart-Landau 39-d", sl, x0s, 1000 if q else 3000, (8, 16, 32))):
        for u in unrolls:
            r = bench_sim(f"{label}, unroll {u}", m, x, 1e-4, n, unroll=u, engines=("fast", "compiled"))
            rows.append(r)
    return rows


class _CastNoise(BrownianIncrements):
    """The float64 increments of ``seed``, cast to ``dtype``: float32 runs see the same noise as float64 ones
    (a float32 generator would draw other numbers)."""

    def __init__(self, paths, m, dt, dtype, seed=0):
        super().__init__(paths, m, dt, seed=seed, dtype=torch.float64)
        self.out_dtype = dtype

    def take(self, k):
        return super().take(k).to(self.out_dtype)

    def next(self):
        return super().next().to(self.out_dtype)


def bench_f32(q: bool) -> list[dict]:
    """float32 against float64 (the default): fast and compiled engines, harmonic and 39-d, 20 paths, on the same
    increments (float64 draws, cast). Deviations of the float32 runs are taken against the float64 loop."""
    sde, x0 = _trained_harmonic(20)
    sl, x0s = _sim_setup("stuart", (80,), 20, n=20)
    rows = []
    for label, m, x, n in (("harmonic, trained AS, dt 1e-4", sde, x0, 5000 if q else 20000),
                           ("Stuart-Landau n = 20 (39-d), MLP (80) x 0.1", sl, x0s, 1000 if q else 3000)):
        ref = simulate(m, x, dt=1e-4, n_steps=n, record_every=100, engine="reference")
        for dtype in (torch.float64, torch.float32):
            r = bench_sim(label, m, x, 1e-4, n, engines=("fast", "compiled"), dtype=dtype)
            for e in ("fast", "compiled"):
                out = simulate(m, x, dt=1e-4, n_steps=n, record_every=100, engine=e, dtype=dtype,
                               noise=_CastNoise(x.shape[0], m.noise_dim, 1e-4, dtype))
                r[f"{e}_max_rel_dev_vs_f64_loop"] = _max_dev(out, ref)
            rows.append(r)
    return rows


def bench_floor() -> dict:
    """The arithmetic floor of one path-step of the 39-d case (Stuart-Landau n = 20, MLP 39-80-39 controller):
    FLOPs of the controller and the drift per path-step, and float64 matmul throughput on this CPU at the
    controller's shapes, for 20 rows (one step of 20 paths, per call: what the engines face) and for 20 480 rows
    (the same product over many rows: BLAS throughput without per-call overhead)."""
    d, h, n = 39, 80, 20
    # controller: two layers (2 d h multiply-adds each = 4 d h FLOPs), the ReLU (h), the product NN(x) * x (d)
    ctrl = 4 * d * h + h + 2 * d
    # drift (systems.StuartLandau.f0, per path): theta = dtheta U ((n-1) x n: 2 (n-1) n), cos and sin (2n, counted as
    # one FLOP each), rho cos/sin means (4n), A, B (4), P, Q (6n), drho (4n), dtheta (5n), dtheta D (2 n (n-1))
    drift = 2 * (n - 1) * n + 2 * n + 4 * n + 4 + 6 * n + 4 * n + 5 * n + 2 * n * (n - 1)
    step = 4 * d  # z + F dt + G dW (diagonal noise)
    flops = ctrl + drift + step
    out = {"d": d, "hidden": h, "controller_flops": ctrl, "drift_flops": drift, "step_flops": step,
           "flops_per_path_step": flops}
    W1 = torch.randn(d, h, dtype=torch.float64)
    W2 = torch.randn(h, d, dtype=torch.float64)
    for rows, reps in ((20, 20000), (20480, 20)):
        z = torch.randn(rows, d, dtype=torch.float64)
        a = torch.empty(rows, h, dtype=torch.float64)
        b = torch.empty(rows, d, dtype=torch.float64)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(z, W1, out=a)
                torch.mm(a, W2, out=b)
            best = min(best, (time.perf_counter() - t0) / reps)
        gflops = 4 * rows * d * h / best / 1e9
        out[f"mm_{rows}_rows_s"] = best
        out[f"mm_{rows}_rows_gflops"] = gflops
        # path-steps/s if the whole step ran at this rate
        out[f"floor_{rows}_rows_path_steps_per_s"] = gflops * 1e9 / flops
    return out


SECTIONS = ("es", "train", "sim", "grid", "unroll", "f32", "floor", "compile")


def simulation_cases(q: bool) -> list[dict]:
    sde, x0 = _trained_harmonic(20)
    cases = [bench_sim("harmonic, trained AS, dt 1e-4", sde, x0, 1e-4, 5000 if q else 20000),
             bench_sim("harmonic, trained AS, dt 1e-5 (paper's step)", sde, x0, 1e-5, 5000 if q else 20000)]
    sl, x0s = _sim_setup("stuart", (80,), 20, n=20)
    cases.append(bench_sim("Stuart-Landau n = 20 (39-d), MLP (80) x 0.1", sl, x0s, 1e-4, 1000 if q else 3000,
                           window=32))
    x0k = sde.default_x0(1000, generator=torch.Generator().manual_seed(0))
    cases.append(bench_sim("harmonic, trained AS, dt 1e-4, 1000 paths", sde, x0k, 1e-4, 1000 if q else 3000,
                           window=32))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    ap.add_argument("--only", default="es,train,sim,grid,floor",
                    help=f"comma-separated sections of {SECTIONS} (compile: torch.compile of one Euler step, ~1 min)")
    ap.add_argument("--tag", default="", help="suffix of the output files (speed<tag>.json / .md)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    only = [x for x in args.only.split(",") if x]
    bad = [x for x in only if x not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; choose from {SECTIONS}")
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    q = args.quick
    res: dict = {"command": "benchmarks/sde_control/speed.py " + " ".join(
        a for a in [("--quick" if q else ""), f"--only {args.only}", f"--tag={args.tag}" if args.tag else "",
                    f"--threads {args.threads}" if args.threads != 1 else ""] if a),
        "threads": args.threads}
    t_start = time.perf_counter()
    if "es" in only:
        res["es_step"] = [bench_es_step(2, 10 if q else 30, 1 if q else 3), bench_es_step(3, 10 if q else 30, 1 if q else 3)]
    if "train" in only:
        res["as_harmonic_quick"] = bench_train("harmonic", "as", "quick")
        res["es_icnn_harmonic_paper"] = bench_train("harmonic", "es-icnn")
        res["es_quad_harmonic_paper"] = bench_train("harmonic", "es-quad")
        res["es_icnn_harmonic_constant_lr"] = bench_train("harmonic", "es-icnn", lr_schedule="constant")
        res["es_quad_harmonic_constant_lr"] = bench_train("harmonic", "es-quad", lr_schedule="constant")
    if "sim" in only:
        res["simulation"] = simulation_cases(q)
    if "grid" in only:
        res["picard_grid"] = bench_picard_grid(5000 if q else 10000)
    if "unroll" in only:
        res["unroll"] = bench_unroll(q)
    if "f32" in only:
        res["f32"] = bench_f32(q)
    if "floor" in only:
        res["floor"] = bench_floor()
    if "compile" in only:
        res["compile_step"] = bench_compile_step(5000 if q else 20000)
    res["wall_s"] = time.perf_counter() - t_start
    OUT.mkdir(exist_ok=True)
    if "train" in only:
        plot_loss_curves(res)
    (OUT / f"speed{args.tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    text = render(res)
    (OUT / f"speed{args.tag}.md").write_text(text)
    print(text)


def render(res: dict) -> str:
    th = res.get("threads", 1)
    lines = [f"# sde_control speed ({th} torch thread{'s' if th > 1 else ''}, CPU)", "",
             f"Command: `.venv/bin/python {res['command']}`"]
    if "wall_s" in res:
        lines += ["", f"Wall time of the command: {res['wall_s']:.0f} s."]
    if "es_step" in res:
        lines += ["", "## One ES-ICNN step, N = 500 (forward + backward + Adam)", "",
                  "| d | ours (s) | one backward per entry (s) | speed-up |", "|---|---|---|---|"]
        lines += [f"| {r['d']} | {r['ours_s']:.4f} | {r['per_entry_s']:.3f} | {r['speedup']:.0f}x |" for r in res["es_step"]]
    if "as_harmonic_quick" in res:
        lines += ["", "## Training to stop (harmonic oscillator)", "",
                  "| run | lr schedule | steps | steps to zero violation | training time (s) | steps to loss < 1e-3 | "
                  "time to loss < 1e-3 (s) | held-out violation rate (20 000 states) |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in ("as_harmonic_quick", "es_icnn_harmonic_paper", "es_quad_harmonic_paper",
                    "es_icnn_harmonic_constant_lr", "es_quad_harmonic_constant_lr"):
            r = res[key]
            t1e3 = r["time_to_loss_1e-3_s"]
            lines.append(f"| {key} | {r['lr_schedule']} | {r['iters']} | {r['iters_to_zero']} | {r['train_time_s']:.3f} | "
                         f"{r['iters_to_loss_1e-3']} | {'-' if t1e3 is None else f'{t1e3:.3f}'} | "
                         f"{r['heldout_violation_rate']:.4f} |")
        lines += ["", "Official scripts on the same kind of machine (reference figures from the issue): AS 3.4–3.9 s "
                  "(185 steps of 13.4 ms) to zero loss; ES-ICNN 0.96–0.99 s per step, 169 steps, about 167 s to stop "
                  "(loss < 1e-3); ES-quad 0.37 s per step, about 60 s."]
    if "simulation" in res:
        lines += ["", "## Simulation throughput (Euler–Maruyama, float64, MLP controller; engines interleaved in one "
                  "process on the same model, x0 and noise; best of 2)", "",
                  "| case | d | paths | steps | reference loop | fast engine | Picard engine (window) | compiled engine "
                  "(unroll) | Picard / fast | compiled / fast | compile s (first call) | Picard steps per sweep | "
                  "Picard fallback steps | max rel. deviation from the loop (fast / Picard / compiled) | "
                  "diverged (ref / fast / Picard / compiled) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["simulation"]:
            info = r.get("picard_info", {})
            lines.append(
                f"| {r['case']} | {r['d']} | {r['paths']} | {r['steps']} | {r['reference_path_steps_per_s']:.3g} | "
                f"{r['fast_path_steps_per_s']:.3g} | {r['picard_path_steps_per_s']:.3g} ({r['window']}) | "
                f"{r['compiled_path_steps_per_s']:.3g} ({r['unroll']}) | "
                f"{r['picard_vs_fast']:.2f}x | {r['compiled_vs_fast']:.2f}x | {r['compile_s']:.1f} | "
                f"{info.get('steps_per_sweep', 0):.1f} | {info.get('fallback_steps', '-')} | "
                f"{r['fast_max_rel_dev']:.1e} / {r['picard_max_rel_dev']:.1e} / {r['compiled_max_rel_dev']:.1e} | "
                f"{r['reference_diverged']} / {r['fast_diverged']} / {r['picard_diverged']} / {r['compiled_diverged']} |")
        lines += ["", "Throughputs in path-steps per second. Official generator: about 100 µs per path-step with a "
                  "network controller (one path at a time). Goal: >= 1e6 path-steps/s with 20 paths. 'compile s': "
                  "the compiled engine's first (warm-up) call, which compiles, or loads inductor's on-disk cache "
                  "when an earlier process compiled the same graph."]
    if "unroll" in res:
        lines += ["", "## Compiled engine: steps per call (20 paths, dt = 1e-4, float64; fast engine in the same loop)", "",
                  "| case | compiled path-steps/s | fast path-steps/s | compiled / fast | compile s (first call) | "
                  "max rel. deviation from the fast engine |", "|---|---|---|---|---|---|"]
        for r in res["unroll"]:
            lines.append(f"| {r['case']} | {r['compiled_path_steps_per_s']:.3g} | {r['fast_path_steps_per_s']:.3g} | "
                         f"{r['compiled_vs_fast']:.2f}x | {r['compile_s']:.1f} | {r['compiled_max_rel_dev_vs_fast']:.1e} |")
    if "f32" in res:
        lines += ["", "## float32 against float64 (20 paths, dt = 1e-4; deviations against the float64 loop)", "",
                  "| case | dtype | fast path-steps/s | compiled path-steps/s (unroll) | compiled / fast | compile s | "
                  "max rel. deviation (fast / compiled) | diverged (fast / compiled) |", "|---|---|---|---|---|---|---|---|"]
        for r in res["f32"]:
            lines.append(f"| {r['case']} | {r['dtype']} | {r['fast_path_steps_per_s']:.3g} | "
                         f"{r['compiled_path_steps_per_s']:.3g} ({r['unroll']}) | {r['compiled_vs_fast']:.2f}x | "
                         f"{r['compile_s']:.1f} | {r['fast_max_rel_dev_vs_f64_loop']:.1e} / "
                         f"{r['compiled_max_rel_dev_vs_f64_loop']:.1e} | {r['fast_diverged']} / {r['compiled_diverged']} |")
    if "floor" in res:
        f = res["floor"]
        lines += ["", "## Arithmetic floor of the 39-d case (Stuart–Landau n = 20, MLP 39-80-39 controller)", "",
                  f"FLOPs per path-step: controller {f['controller_flops']}, drift {f['drift_flops']}, step "
                  f"{f['step_flops']}; total {f['flops_per_path_step']}.", "",
                  "| float64 products (39->80->39) | time per pair of products | GFLOP/s | path-steps/s if the whole step "
                  "ran at this rate |", "|---|---|---|---|",
                  f"| 20 rows (one step of 20 paths, one call each) | {f['mm_20_rows_s'] * 1e6:.2f} µs | "
                  f"{f['mm_20_rows_gflops']:.2f} | {f['floor_20_rows_path_steps_per_s']:.3g} |",
                  f"| 20 480 rows (BLAS throughput) | {f['mm_20480_rows_s'] * 1e3:.2f} ms | "
                  f"{f['mm_20480_rows_gflops']:.2f} | {f['floor_20480_rows_path_steps_per_s']:.3g} |"]
    if "picard_grid" in res:
        lines += ["", "## Picard window and tolerance (harmonic, trained AS, 20 paths, dt = 1e-4)", "",
                  "| window | tol | Picard path-steps/s | fast path-steps/s (same loop) | Picard / fast | steps per sweep | "
                  "fallback steps | max rel. deviation from the loop |", "|---|---|---|---|---|---|---|---|"]
        for r in res["picard_grid"]:
            lines.append(f"| {r['window']} | {r['tol']:.0e} | {r['picard_path_steps_per_s']:.3g} | "
                         f"{r['fast_path_steps_per_s']:.3g} | {r['picard_vs_fast']:.2f}x | {r['steps_per_sweep']:.1f} | "
                         f"{r['fallback_steps']} | {r['max_rel_dev']:.1e} |")
    if "compile_step" in res:
        c = res["compile_step"]
        lines += ["", f"torch.compile (inductor) of one Euler step (harmonic, trained AS, {c['paths']} paths, "
                  f"{c['steps']} steps): compile {c['compile_s']:.1f} s, {c['compiled_path_steps_per_s']:.3g} "
                  f"path-steps/s vs {c['eager_step_path_steps_per_s']:.3g} for the same step eager; largest relative "
                  f"deviation from the eager paths {c['max_rel_dev_vs_eager']:.1e}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
