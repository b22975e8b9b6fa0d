"""Would compiling only the pointwise blocks of the GRU step pay? Eager vs ``torch.compile`` per call.

    python benchmarks/jslds/bench_pointwise_compile.py [--threads 1] [--repeats 200] [--out DIR]

The largest pointwise blocks of one JSLDS time step of ``auxfn.jslds.fused`` (GRU, RNN and JSLDS
rows, sizes (n=100, B=256) and (n=64, B=64)), each timed as the default path runs it (eager, in place
into preallocated buffers) and as one ``torch.compile(dynamic=False, fullgraph=True)`` function
(inductor fuses it into one C++ loop; the matmuls would stay eager):

- ``fwd_candidate``: after the candidate matmul: ``c = tanh(cc)``, ``f = c + z (s - c)``,
  ``dc = (1 - c_e^2) dcc``, ``a = e + dz (e - c_e) + z_e ds + (1 - z_e) dc`` (11 eager kernels);
- ``bwd_candidate``: the backward's block before the candidate's transposed product (13 kernels).

Per block: compile seconds (first call), then the median time per call of each variant, calls
interleaved. With ``T = 25`` steps, ``saving per training step = 25 * (eager - compiled)`` for each
block so replaced. Writes results.json / results.md into --out (default
benchmarks/jslds/results/pointwise_compile).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def fwd_eager(CC, s, z, e, ds, dz, z_e, c, F, dc, a, H, M):
    CC_p, CC_t = CC[:M], CC[M:]
    c_e = c[H:]
    torch.mul(CC_p, 2.0, out=c).sigmoid_().mul_(2).sub_(1)
    torch.lerp(c, s, z, out=F)
    torch.addcmul(CC_t, c_e * CC_t, c_e, value=-1.0, out=dc)
    torch.lerp(dc, ds, z_e, out=a)
    a.addcmul_(dz, e - c_e)
    a.add_(e)


def fwd_functional(CC, s, z, e, ds, dz, z_e, H: int, M: int):
    c = 2 * torch.sigmoid(2 * CC[:M]) - 1  # tanh, as the eager path computes it (the faster form here)
    f = c + z * (s - c)
    c_e = c[H:]
    dc = (1 - c_e * c_e) * CC[M:]
    a = e + dz * (e - c_e) + z_e * ds + (1 - z_e) * dc
    return c, f, dc, a


def bwd_eager(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC_t, g_z, g_dz, gCC, H, M):
    c_e = c[H:]
    gs = gf * z
    gc = gf - gs
    torch.mul(gf, s - c, out=g_z)
    torch.mul(gd, e - c_e, out=g_dz)
    ge = gd * dz
    gc_e = gc[H:]
    gc_e.sub_(ge)
    g_z[H:].addcmul_(gd, ds - dc)
    gde = gd * z_e
    g_dc = gd - gde
    t5 = g_dc * c_e
    torch.addcmul(g_dc, t5, c_e, value=-1.0, out=gCC[M:])
    gc_e.addcmul_(t5, CC_t, value=-2.0)
    torch.addcmul(gc, gc * c, c, value=-1.0, out=gCC[:M])
    return gs, ge, gde


def bwd_functional(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC_t, H: int, M: int):
    c_e = c[H:]
    gs = gf * z
    g_z = gf * (s - c)
    g_dz = gd * (e - c_e)
    ge = gd * dz
    gc = gf * (1 - z)
    gc_e = gc[H:] - ge
    g_z_e = g_z[H:] + gd * (ds - dc)
    gde = gd * z_e
    g_dc = gd - gde
    gCC_t = g_dc * (1 - c_e * c_e)
    gc_e = gc_e - 2 * c_e * CC_t * g_dc
    gc = torch.cat([gc[:H], gc_e])
    gCC_p = gc * (1 - c * c)
    return gs, ge, gde, torch.cat([g_z[:H], g_z_e]), g_dz, torch.cat([gCC_p, gCC_t])


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def measure(n: int, B: int, threads: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    H = K = B
    M, R = H + K, H + 2 * K
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    CC, s, z = r(R, n), r(M, n), u(M, n)
    e, ds, dz = s[H:], r(K, n), r(K, n)
    z_e = z[H:]
    c, F, dc, a = torch.empty(M, n), torch.empty(M, n), torch.empty(K, n), torch.empty(K, n)
    gf, gd, g_z, g_dz, gCC = r(M, n), r(K, n), torch.empty(M, n), torch.empty(K, n), torch.empty(R, n)
    with torch.no_grad():
        fwd_c = torch.compile(fwd_functional, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        fwd_c(CC, s, z, e, ds, dz, z_e, H, M)
        fwd_compile_s = time.perf_counter() - t0
        bwd_c = torch.compile(bwd_functional, dynamic=False, fullgraph=True)
        t0 = time.perf_counter()
        bwd_c(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC[M:], H, M)
        bwd_compile_s = time.perf_counter() - t0
        # the compiled blocks compute what the eager ones do
        fwd_eager(CC, s, z, e, ds, dz, z_e, c, F, dc, a, H, M)
        cc_, f_, dc_, a_ = fwd_c(CC, s, z, e, ds, dz, z_e, H, M)
        fwd_err = max((x - y).abs().max().item() for x, y in ((c, cc_), (F, f_), (dc, dc_), (a, a_)))
        ref = bwd_eager(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC[M:], g_z, g_dz, gCC, H, M)
        got = bwd_c(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC[M:], H, M)
        bwd_err = max((x - y).abs().max().item() for x, y in zip((*ref, g_z, g_dz, gCC), got, strict=True))
        variants = {
            "fwd_eager": lambda: fwd_eager(CC, s, z, e, ds, dz, z_e, c, F, dc, a, H, M),
            "fwd_compiled": lambda: fwd_c(CC, s, z, e, ds, dz, z_e, H, M),
            "bwd_eager": lambda: bwd_eager(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC[M:], g_z, g_dz, gCC, H, M),
            "bwd_compiled": lambda: bwd_c(gf, gd, c, z, s, e, ds, dc, dz, z_e, CC[M:], H, M),
        }
        for fn in variants.values():
            fn()
        times = {k: [] for k in variants}
        for _ in range(repeats // 10):
            for k, fn in variants.items():
                times[k] += timed(fn, 10)
    med = {k: median(v) * 1e6 for k, v in times.items()}
    row = {"n": n, "B": B, "threads": threads, "us_per_call": med, "fwd_compile_s": fwd_compile_s,
           "bwd_compile_s": bwd_compile_s, "fwd_max_abs_diff": fwd_err, "bwd_max_abs_diff": bwd_err,
           "saving_per_training_step_s": 25 * ((med["fwd_eager"] - med["fwd_compiled"]) + (med["bwd_eager"] - med["bwd_compiled"])) / 1e6}
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pointwise_compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, B in ((100, 256), (64, 64)):
        row = measure(n, B, args.threads, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "rows": rows}
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"torch {torch.__version__}, {res['date']}, load average {res['load_average']}, {args.threads} thread(s), "
             f"median of {args.repeats} interleaved calls", "",
             "| n | B | fwd block eager us | compiled us | bwd block eager us | compiled us | compile s (fwd, bwd) | saving per step s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["us_per_call"]
        lines.append(f"| {r['n']} | {r['B']} | {m['fwd_eager']:.1f} | {m['fwd_compiled']:.1f} | {m['bwd_eager']:.1f} | "
                     f"{m['bwd_compiled']:.1f} | {r['fwd_compile_s']:.1f}, {r['bwd_compile_s']:.1f} | {r['saving_per_training_step_s']:.4f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
