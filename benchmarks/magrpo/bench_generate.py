"""The generation phase alone, A/B in one process: the lean sampler vs Hugging Face ``generate``.

Three ways to draw G = 4 completions of one prompt from the same GPT-2 (EOS suppressed, so
every completion has the full length; temperature 0.7, top-p 0.9, one torch thread):

- ``lean``: :func:`auxfn.magrpo.sampling.lean_generate` with its preallocated key/value cache;
- ``lean, growing cache``: the same loop with transformers' ``DynamicCache`` (``torch.cat``
  per step), i.e. the sampler before the preallocated cache;
- ``hf generate``: ``model.generate(num_return_sequences=G)``, what the per-sequence
  reference style calls.

The variants alternate within each round (``--rounds`` rounds, after one untimed round), so
a load that changes during the run weighs on all of them alike; the table gives the median
seconds per call and the ratios of medians. Writes results/generate_ab.{json,md}.

    python benchmarks/magrpo/bench_generate.py [--rounds 5]
    python benchmarks/magrpo/bench_generate.py --profile      # where the decoding time goes (9.5M)
"""

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
        model = tiny_causal_lm(tok, arch="gpt2", hidden_size=hidden, num_layers=layers, num_heads=heads, seed=0)
        model.generation_config.suppress_tokens = [tok.eos_token_id]

        def lean(model=model, T=T):
            return sampling.lean_generate(model, enc["input_ids"].expand(G, -1), enc["attention_mask"].expand(G, -1), max_new_tokens=T,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=0.7, top_p=0.9,
                                          suppress_tokens=[tok.eos_token_id])

        def lean_growing(lean=lean):
            sampling._preallocate = lambda cache, n: cache
            try:
                return lean()
            finally:
                sampling._preallocate = real_prealloc

        def hf(model=model, T=T):
            with torch.no_grad():
                return model.generate(**enc, do_sample=True, max_new_tokens=T, num_return_sequences=G, top_k=None, temperature=0.7, top_p=0.9,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

        variants = {"lean": lean, "lean, growing cache": lean_growing, "hf generate": hf}
        if args.profile:
            if layers < 12:
                continue
            from torch.profiler import ProfilerActivity, profile

            for name in ("lean, growing cache", "lean"):
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
    lines = ["| model / new tokens | median s per call: lean / lean growing cache / hf generate | hf generate / lean | growing / preallocated |",
             "|---|---|---|---|"]
    for size, r in results.items():
        m = r["median_s"]
        lines.append(f"| {size} | {m['lean']:.3f} / {m['lean, growing cache']:.3f} / {m['hf generate']:.3f} | "
                     f"{m['hf generate'] / m['lean']:.2f}x | {m['lean, growing cache'] / m['lean']:.2f}x |")
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
