"""Merge the latest results/*.md and *.json into the committed summary RESULTS.md and results.json.

    .venv/bin/python benchmarks/sde_control/collect.py --note "machine load ..."

Takes results/speed.*, results/sweeps.* and every results/reproduction*.* present (parts of the
table run in parallel with --tag). Loss curves are dropped from the JSON to keep it small.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "results"

COMMANDS = {
    "speed": ".venv/bin/python benchmarks/sde_control/speed.py",
    "sweeps": ".venv/bin/python benchmarks/sde_control/sweeps.py",
    "reproduction": ".venv/bin/python benchmarks/sde_control/reproduction.py --preset paper --only {only} --tag={tag}",
}


def _strip(o):
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k not in ("loss_curve", "violation_curve")}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--note", default="", help="machine load and other context")
    ap.add_argument("--head", default="", help="a Markdown file with the summary written above the tables")
    ap.add_argument("--logs", nargs="*", default=[], help="logs of runs cut off before writing their tables (shown verbatim)")
    args = ap.parse_args()
    parts, data = [], {}
    head = Path(args.head).read_text() if args.head else ""
    for name in (sorted(p.stem for p in OUT.glob("speed*.md")) + ["sweeps"]
                 + sorted(p.stem for p in OUT.glob("reproduction*.md"))):
        md, js = OUT / f"{name}.md", OUT / f"{name}.json"
        if not md.is_file():
            continue
        if name.startswith("reproduction"):
            only = ",".join(sorted({r["label"].split(" / ")[0].split("-")[0] for r in json.loads(js.read_text())["runs"]}))
            cmd = COMMANDS["reproduction"].format(only=only, tag=name[len("reproduction"):])
        else:
            cmd = COMMANDS.get(name, "")
            if js.is_file() and "command" in json.loads(js.read_text()):
                cmd = ".venv/bin/python " + json.loads(js.read_text())["command"]
        parts.append(f"{name}\n\nCommand: `{cmd}`\n\n" + md.read_text().replace("\n# ", "\n## ").lstrip("# ")
                     .replace("\n## ", "\n### "))
        if js.is_file():
            data[name] = _strip(json.loads(js.read_text()))
    diag = sorted(OUT.glob("stuart_*.json"))
    if diag:
        rows = [json.loads(p.read_text()) for p in diag]
        lines = ["stuart_diagnosis", "", "Command: `.venv/bin/python benchmarks/sde_control/stuart_diagnosis.py VARIANT "
                 "--iters N --T T` (one per row)", "",
                 "Learned diffusion gains k = NN(x) of u = NN(x) ⊙ x (39-d Stuart–Landau, AS, 5000 states, α = 0.75): "
                 "on 5000 fresh training-box states and along the simulated paths (20 paths), and the simulation at "
                 "two steps (Euler–Maruyama needs k·sqrt(dt) well below 1).", "",
                 "| variant | AS form | normalised | steps | train s | held-out viol. | k max / p99 / median (box) | "
                 "dt | k max / p99 / median (paths) | max k sqrt(dt) | tau (mean norm) | success | diverged | "
                 "final mean norm |", "|" + "---|" * 14]
        for r in rows:
            for key in [k for k in r if k.startswith("dt=")]:
                m, gb, gp = r[key], r["gain_train_states"], r[key]["gain_on_paths"]
                lines.append(f"| {r['variant']} | {r['config']['as_form']} | {r['config']['as_normalize']} | "
                             f"{r['config']['iters']} | {r['train_s']:.0f} | {r['heldout_violation_rate']:.2g} | "
                             f"{gb['max']:.3g} / {gb['p99']:.3g} / {gb['median']:.3g} | {key[3:]} | "
                             f"{gp['max']:.3g} / {gp['p99']:.3g} / {gp['median']:.3g} | {m['max_k_sqrt_dt']:.3g} | "
                             f"{m['tau_mean_norm']:.4g} | {m['success_rate']:.2f} | {m['diverged']} | "
                             f"{m['final_mean_norm']:.3g} |")
        parts.append("\n".join(lines) + "\n")
        data["stuart_diagnosis"] = rows
    for log in args.logs:
        text = Path(log).read_text().strip()
        parts.append(f"Cut off before its table: `{Path(log).name}` (one line per finished row)\n\n```\n{text}\n```")
        data.setdefault("cut_off_logs", {})[Path(log).name] = text.splitlines()
    date = datetime.date.today().isoformat()
    text = (f"# sde_control benchmark results ({date})\n\n{args.note}\n\n{head}\n\n" + "\n\n## ".join([""] + parts)).strip() + "\n"
    (HERE / "RESULTS.md").write_text(text)
    (HERE / "results.json").write_text(json.dumps({"date": date, "note": args.note, **data}, indent=1) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
