"""The generation phase alone, A/B in one process: the fast decoding path, the lean sampler on the model's forward, ``generate``.

Ways to draw G = 4 completions of one prompt from the same GPT-2 (dropout 0, train mode as
in the trainer; EOS suppressed, so every completion has the full length; temperature 0.7,
top-p 0.9, one torch thread):

- ``fast``: :func:`auxfn.magrpo.sampling.lean_generate` with the hand-written forward
  (:class:`auxfn.magrpo.fastdecode.FastDecoder`, the default where it applies);
- ``lean``: the same sampling loop on the model's own forward with the preallocated
  key/value cache (the default backend before the fast path);
- ``lean, growing cache``: the same with transformers' ``DynamicCache`` (``torch.cat`` per step);
- ``hf generate``: ``model.generate(num_return_sequences=G)``, what the per-sequence
  reference style calls;

and for two agents (two models of the same configuration, prompts of different lengths):
``2 agents joint`` (one stacked decoding loop, what the trainer does), ``2 agents fast``
(one fast call per agent) and ``2 agents hf generate``.

The variants alternate within each round (``--rounds`` rounds, after one untimed round), so
a load that changes during the run weighs on all of them alike; the table gives the median
seconds per call and the ratios of medians. Writes results/generate_ab.{json,md}.

    python benchmarks/magrpo/bench_generate.py [--rounds 5]
    python benchmarks/magrpo/bench_generate.py --profile      # where the decoding time goes (9.5M)
"""

# ruff: noqa: B023  (the variant closures are called only within their own loop iteration)
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

SIZES = {"gpt2-w64-l2 / 32 tok": (64, 2, 2, 32), "gpt2-w256-l12 (~9.5M) / 128 tok": (256, 12, 4, 128)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="instead: torch.profiler's top operators of one lean call per cache kind at 9.5M")
    args = ap.parse_args()

    import torch

    from auxfn.magrpo import sampling
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm

    torch.set_num_threads(1)
    tok = char_tokenizer()
    enc = tok(["short note on cats:"], return_tensors="pt")
    G = 4
    real_prealloc = sampling._preallocate
    results = {}
    load_start = list(os.getloadavg())
    for size, (hidden, layers, heads, T) in SIZES.items():
        model, model2 = (tiny_causal_lm(tok, arch="gpt2", hidden_size=hidden, num_layers=layers, num_heads=heads, seed=s, dropout=0.0)
                         for s in (0, 1))
        for m in (model, model2):
            m.generation_config.suppress_tokens = [tok.eos_token_id]
        kw = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=0.7, top_p=0.9, suppress_tokens=[tok.eos_token_id])

        def lean(model=model, T=T, fast=False, enc=enc):
            return sampling.lean_generate(model, enc["input_ids"].expand(G, -1), enc["attention_mask"].expand(G, -1), max_new_tokens=T,
                                          fast=fast, **kw)

        def fast(T=T):
            return lean(fast=True)

        pair = tok(["short note on cats:"] * G + ["long note on cats:"] * G, return_tensors="pt", padding=True)

        def joint(T=T):
            return sampling.lean_generate([model, model2], pair["input_ids"], pair["attention_mask"], max_new_tokens=T, fast=True, **kw)

        enc2 = tok(["long note on cats:"], return_tensors="pt")

        def two_fast():
            return lean(fast=True), lean(model=model2, fast=True, enc=enc2)

        def lean_growing(lean=lean):
            sampling._preallocate = lambda cache, n: cache
            try:
                return lean()
            finally:
                sampling._preallocate = real_prealloc

        def hf(model=model, T=T, enc=enc):
            with torch.no_grad():
                return model.generate(**enc, do_sample=True, max_new_tokens=T, num_return_sequences=G, top_k=None, temperature=0.7, top_p=0.9,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

        def two_hf():
            return hf(), hf(model=model2, enc=enc2)

        variants = {"fast": fast, "lean": lean, "lean, growing cache": lean_growing, "hf generate": hf,
                    "2 agents joint": joint, "2 agents fast": two_fast, "2 agents hf generate": two_hf}
        if args.profile:
            if layers < 12:
                continue
            from torch.profiler import ProfilerActivity, profile

            for name in ("lean", "fast"):
                variants[name]()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    variants[name]()
                total = sum(e.self_cpu_time_total for e in prof.key_averages())
                print(f"{size}, {name}: self CPU {total / 1e6:.3f} s; top operators (share of self CPU time):")
                for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]:
                    print(f"  {e.key:50s} {100 * e.self_cpu_time_total / total:5.1f} %  ({e.count} calls)")
            return
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.rounds + 1):
            for name, f in variants.items():
                t0 = time.perf_counter()
                f()
                if r:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[size] = {"median_s": med, "times_s": times, "params": sum(p.numel() for p in model.parameters())}
        print(size, {k: round(v, 4) for k, v in med.items()}, flush=True)
    lines = ["| model / new tokens | median s per call: fast / lean / lean growing cache / hf generate | lean / fast | hf generate / fast | "
             "2 agents: joint / fast x2 / hf generate x2 | fast x2 / joint | hf x2 / joint |",
             "|---|---|---|---|---|---|---|"]
    for size, r in results.items():
        m = r["median_s"]
        lines.append(f"| {size} | {m['fast']:.4f} / {m['lean']:.4f} / {m['lean, growing cache']:.4f} / {m['hf generate']:.4f} | "
                     f"{m['lean'] / m['fast']:.2f}x | {m['hf generate'] / m['fast']:.2f}x | "
                     f"{m['2 agents joint']:.4f} / {m['2 agents fast']:.4f} / {m['2 agents hf generate']:.4f} | "
                     f"{m['2 agents fast'] / m['2 agents joint']:.2f}x | {m['2 agents hf generate'] / m['2 agents joint']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    meta = {"rounds": args.rounds, "G": G, "threads": 1, "command": " ".join(["python", *sys.argv]),
            "load_average_at_start": load_start, "load_average_at_end": list(os.getloadavg())}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "generate_ab.json").write_text(json.dumps({"settings": meta, "results": results}, indent=1) + "\n")
    (out / "generate_ab.md").write_text(f"# Generation phase A/B\n\nSettings: {json.dumps(meta)}\n\n{table}\n")


if __name__ == "__main__":
    main()
