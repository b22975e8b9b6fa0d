"""Seconds per MAGRPO training step: our batched trainer vs a per-sequence implementation, and vs TRL.

Rows: ``ours`` and ``per-sequence`` with 2 agents; ``ours-1agent`` (MAGRPO with one agent,
i.e. GRPO) and ``trl-grpo`` (TRL's ``GRPOTrainer``, beta = 0, one prompt x G = 4
completions per step, same model, temperature 0.7, top-p 0.9, EOS suppressed) with one
agent.

The per-sequence variant is written here only, in the style of the reference library:
one ``generate`` per agent with ``num_return_sequences=G``, then one forward pass per
completion on prompt + completion (tokens after EOS included, as the library does), one
backward per completion, one AdamW step per agent. Same models, same settings: 2 agents,
G = 4, aligned, single turn, a constant reward (so both variants do identical work).

All models are built with dropout 0 (residual, embedding and attention; as Qwen-class
models have), in every arm: ours, per-sequence and TRL sample and update the same function,
and our fast decoding path (which refuses active dropout) applies.

Each (variant, size) runs in its own subprocess so the peak resident memory (ru_maxrss)
is its own. Prints a table and writes results.json + results.md next to this file
(under results/).

    python benchmarks/magrpo/bench_speed.py [--steps N] [--device cpu] [--sizes 9.5M] [--tag _10m]

Without options it runs both sizes: 8 timed steps per variant on the tiny model, 2 at 9.5M;
ours and per-sequence each in two processes of half the steps, in the order ours,
per-sequence, per-sequence, ours (every process times its steps after one warm-up step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    # name: (hidden, layers, heads, new tokens)
    "gpt2-w64-l2 / 32 tok": (64, 2, 2, 32),
    "gpt2-w256-l12 (~9.5M) / 128 tok": (256, 12, 4, 128),
}
# timed steps per variant and size unless --steps is given
DEFAULT_STEPS = {"gpt2-w64-l2 / 32 tok": 8, "gpt2-w256-l12 (~9.5M) / 128 tok": 2}


PHASES = {"generate": 0.0, "update": 0.0}


def _per_sequence_step(agents, opts, tok, prompts, G, new_tokens):
    import torch

    for agent, opt, prompt in zip(agents, opts, prompts):
        enc = tok([prompt], return_tensors="pt")
        t0 = time.perf_counter()
        with torch.no_grad():
            out = agent.generate(**enc, do_sample=True, max_new_tokens=new_tokens, num_return_sequences=G, top_k=None,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, temperature=0.7, top_p=0.9)
        t1 = time.perf_counter()
        PHASES["generate"] += t1 - t0
        P = enc["input_ids"].shape[1]
        adv = torch.randn(G)  # stands in for the group advantages: the cost does not depend on values
        opt.zero_grad()
        for g in range(G):
            seq = out[g : g + 1]
            logits = agent(seq[:, :-1]).logits[:, P - 1 :]
            logp = torch.log_softmax(logits, -1).gather(-1, seq[:, P:].unsqueeze(-1)).sum()
            (-adv[g] * logp / G).backward()
        opt.step()
        PHASES["update"] += time.perf_counter() - t1


def run_one(variant: str, size: str, steps: int, device: str) -> dict:
    import torch

    from auxfn.core.seeding import seed_everything
    from auxfn.magrpo.config import MAGRPOConfig
    from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm
    from auxfn.magrpo.trainer import MAGRPOTrainer

    torch.set_num_threads(1)
    seed_everything(0)
    hidden, layers, heads, new_tokens = SIZES[size]
    tok = char_tokenizer()
    # dropout 0 in every arm (as Qwen-class models have), so all arms sample and update the same function
    agents = [tiny_causal_lm(tok, arch="gpt2", hidden_size=hidden, num_layers=layers, num_heads=heads, seed=i, dropout=0.0).to(device)
              for i in range(2)]
    n_params = sum(p.numel() for p in agents[0].parameters())
    # suppress EOS so every completion has exactly new_tokens tokens in both variants
    for a in agents:
        a.generation_config.suppress_tokens = [tok.eos_token_id]
    prompts = ["short note on cats:", "long note on cats:"]
    data = [{"x": 0}]
    if variant == "trl-grpo":
        return _trl_row(agents[0], tok, prompts[0], new_tokens, steps, n_params, size)
    if variant == "ours-1agent":
        cfg = MAGRPOConfig(num_agents=1, num_generations=4, max_completion_length=new_tokens, learning_rate=1e-4, max_steps=10**6)
        tr = MAGRPOTrainer(agents[:1], cfg, data, lambda a: [float(len(x)) for x in a], [lambda _: prompts[0]], processing_class=tok)
        step = tr.step
    elif variant == "ours":
        cfg = MAGRPOConfig(num_generations=4, max_completion_length=new_tokens, learning_rate=1e-4, max_steps=10**6)
        tr = MAGRPOTrainer(agents, cfg, data, lambda a, b: [float(len(x)) for x in a], [lambda _: prompts[0], lambda _: prompts[1]], processing_class=tok)
        step = tr.step
        from auxfn.magrpo import trainer as trainer_mod

        real_gen, real_joint, real_upd = trainer_mod.generate_group, trainer_mod.generate_joint, tr._update_agent

        def gen(*a, **k):
            t0 = time.perf_counter()
            out = real_gen(*a, **k)
            PHASES["generate"] += time.perf_counter() - t0
            return out

        def joint(*a, **k):  # all agents in one decoding loop (the default where the agents allow it)
            t0 = time.perf_counter()
            out = real_joint(*a, **k)
            PHASES["generate"] += time.perf_counter() - t0
            return out

        def upd(*a, **k):
            t0 = time.perf_counter()
            out = real_upd(*a, **k)
            PHASES["update"] += time.perf_counter() - t0
            return out

        real_upd_joint = tr._update_joint

        def upd_joint(*a, **k):  # all agents through one stacked forward and backward (the default where allowed)
            t0 = time.perf_counter()
            out = real_upd_joint(*a, **k)
            PHASES["update"] += time.perf_counter() - t0
            return out

        trainer_mod.generate_group, trainer_mod.generate_joint, tr._update_agent, tr._update_joint = gen, joint, upd, upd_joint
    else:
        opts = [torch.optim.AdamW(a.parameters(), lr=1e-4) for a in agents]
        step = lambda: _per_sequence_step(agents, opts, tok, prompts, 4, new_tokens)  # noqa: E731
    step()  # warm-up
    PHASES.update(generate=0.0, update=0.0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    per_step = []
    for _ in range(steps):
        t1 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        per_step.append(time.perf_counter() - t1)
    sec = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "size": size, "params": n_params, "new_tokens": new_tokens, "seconds_per_step": sec,
            "generate_s_per_step": PHASES["generate"] / steps, "update_s_per_step": PHASES["update"] / steps,
            "min_seconds_per_step": min(per_step), "peak_memory_mib": peak,
            "memory_kind": "cuda max allocated" if device.startswith("cuda") else "process max RSS"}


def _trl_row(agent, tok, prompt: str, new_tokens: int, steps: int, n_params: int, size: str) -> dict:
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    ds = Dataset.from_dict({"prompt": [prompt] * (4 * (steps + 2))})
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=4, num_generations=4, max_completion_length=new_tokens,
            learning_rate=1e-4, beta=0.0, temperature=0.7, top_p=0.9, top_k=0, max_steps=steps + 1, logging_steps=10**6,
            save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0,
            generation_kwargs={"suppress_tokens": [tok.eos_token_id]}, disable_tqdm=True, gradient_checkpointing=False,
        )
        trainer = GRPOTrainer(model=agent, reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
                              args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
        trainer.train()
    sec = sum(times[1:]) / len(times[1:])  # the first step is the warm-up
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": "trl-grpo", "size": size, "params": n_params, "new_tokens": new_tokens, "seconds_per_step": sec,
            "min_seconds_per_step": min(times[1:]),
            "generate_s_per_step": float("nan"), "update_s_per_step": float("nan"), "peak_memory_mib": peak,
            "memory_kind": "process max RSS", "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 8 for the tiny model, 2 at 9.5M)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "SIZE"))
    ap.add_argument("--sizes", nargs="+", default=None, help="run only the sizes whose name contains one of these strings (default: all)")
    ap.add_argument("--tag", default="", help="suffix of the result files: speed_results<tag>.json/.md")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.steps or DEFAULT_STEPS[args.one[1]], args.device)))
        return
    t_start, load_start = time.perf_counter(), list(os.getloadavg())
    rows = []
    sizes = [s for s in SIZES if args.sizes is None or any(k in s for k in args.sizes)]
    def one(variant: str, size: str, steps: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--steps", str(steps), "--device", args.device, "--one", variant, size],
                             capture_output=True, text=True, check=True)
        r = {**json.loads(out.stdout.strip().splitlines()[-1]), "steps": steps}
        print(f"{size:34s} {variant:13s} {r['seconds_per_step']:.3f} s/step (generate {r['generate_s_per_step']:.3f}, "
              f"update {r['update_s_per_step']:.3f})  peak {r['peak_memory_mib']:.0f} MiB", flush=True)
        return r

    def merge(parts: list[dict]) -> dict:
        """One row from several processes of one variant: means weighted by steps, min of minima, max of peaks."""
        n = sum(r["steps"] for r in parts)
        row = dict(parts[0])
        for k in ("seconds_per_step", "generate_s_per_step", "update_s_per_step"):
            row[k] = sum(r[k] * r["steps"] for r in parts) / n
        row.update(steps=n, min_seconds_per_step=min(r["min_seconds_per_step"] for r in parts),
                   peak_memory_mib=max(r["peak_memory_mib"] for r in parts), processes=len(parts),
                   seconds_per_step_by_process=[r["seconds_per_step"] for r in parts])
        return row

    for size in sizes:
        steps = args.steps or DEFAULT_STEPS[size]
        # ours and per-sequence in A B B A order (half the steps each), so that a load that
        # drifts linearly during the run weighs on both alike
        half = max(1, steps // 2)
        parts: dict[str, list[dict]] = {"ours": [], "per-sequence": []}
        for order in (("ours", "per-sequence"), ("per-sequence", "ours")):
            for variant in order:
                parts[variant].append(one(variant, size, half))
        rows += [merge(parts["ours"]), merge(parts["per-sequence"])]
        for variant in ("ours-1agent", "trl-grpo"):
            rows.append(one(variant, size, steps))
    lines = ["| model / new tokens | params | s/step ours / per-seq | speed-up (step) | min s/step ours / per-seq | update s ours / per-seq | speed-up (update) | generate s ours / per-seq | peak MiB ours / per-seq |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        o, p = [r for r in rows if r["size"] == size and r["variant"] in ("ours", "per-sequence")]
        lines.append(f"| {size} | {o['params']:,} | {o['seconds_per_step']:.3f} / {p['seconds_per_step']:.3f} | "
                     f"{p['seconds_per_step'] / o['seconds_per_step']:.2f}x | {o['min_seconds_per_step']:.3f} / {p['min_seconds_per_step']:.3f} | "
                     f"{o['update_s_per_step']:.3f} / {p['update_s_per_step']:.3f} | "
                     f"{p['update_s_per_step'] / o['update_s_per_step']:.2f}x | {o['generate_s_per_step']:.3f} / {p['generate_s_per_step']:.3f} | "
                     f"{o['peak_memory_mib']:.0f} / {p['peak_memory_mib']:.0f} |")
    lines += ["", "One agent (GRPO): ours vs TRL GRPOTrainer", "", "| model / new tokens | s/step ours-1agent / TRL | TRL / ours | peak MiB ours / TRL |", "|---|---|---|---|"]
    for size in sizes:
        o, t = [r for r in rows if r["size"] == size and r["variant"] in ("ours-1agent", "trl-grpo")]
        lines.append(f"| {size} | {o['seconds_per_step']:.3f} / {t['seconds_per_step']:.3f} | {t['seconds_per_step'] / o['seconds_per_step']:.2f}x | "
                     f"{o['peak_memory_mib']:.0f} / {t['peak_memory_mib']:.0f} |")
    table = "\n".join(lines)
    print(table)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    meta = {"device": args.device, "steps": {s: args.steps or DEFAULT_STEPS[s] for s in sizes}, "agents": 2, "G": 4, "threads": 1,
            "command": " ".join(["python", *sys.argv]), "wall_s": round(time.perf_counter() - t_start, 1),
            "load_average_at_start": load_start, "load_average_at_end": list(os.getloadavg())}
    (out_dir / f"speed_results{args.tag}.json").write_text(json.dumps({"settings": meta, "rows": rows}, indent=2) + "\n")
    (out_dir / f"speed_results{args.tag}.md").write_text(f"# MAGRPO step time\n\nSettings: {json.dumps(meta)}\n\n{table}\n")


if __name__ == "__main__":
    main()
