"""The P-JEPA ablation grid: modes x seeds x environments, each trained with the quick preset and audited.

    python benchmarks/jepa/ablation_grid.py --workers 2           # the whole grid (8 modes x 3 seeds x 3 envs)
    python benchmarks/jepa/ablation_grid.py --envs counting-slots --seeds 0 --steps 1500

Finished cells are kept in --out/cells/; running the same command again skips them.

Prints one line per run and writes results.json and results.md (mean ± std over seeds)
into --out (default benchmarks/jepa/results/, which is not committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from auxfn.jepa.ablation import ENV_SETTINGS, run_grid
from auxfn.jepa.losses import MODES
from auxfn.jepa.training import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--envs", nargs="+", default=list(ENV_SETTINGS), choices=list(ENV_SETTINGS))
    ap.add_argument("--steps", type=int, default=PRESETS["quick"].config.steps)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (one torch thread each)")
    ap.add_argument("--aggregate-only", action="store_true", help="train nothing; build the tables from the finished cells")
    args = ap.parse_args()
    base = dataclasses.replace(PRESETS["quick"].config, steps=args.steps, figures=False)
    t0 = time.perf_counter()
    run_grid(args.modes, args.seeds, args.envs, args.out, base=base, workers=args.workers, log=lambda s: print(s, flush=True), run=not args.aggregate_only)
    print(f"grid done in {time.perf_counter() - t0:.0f} s with {args.workers} worker(s); tables: {args.out / 'results.md'}")
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
