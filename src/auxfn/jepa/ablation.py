"""The ablation grid: training modes x seeds x environments, each trained and audited.

``run_grid`` trains every cell with :func:`auxfn.jepa.training.train` and collects the
audit's headline numbers into ``results.json`` and ``results.md`` (one row per cell,
then means and standard deviations over seeds). Each finished cell is written at once
to ``cells/<env>-<mode>-s<seed>.json``; a second call with the same base config skips
those cells (resume after an interruption). ``workers > 1`` runs cells in that many
processes (spawned, one torch thread each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from auxfn.jepa.losses import MODES

__all__ = ["ENV_SETTINGS", "run_grid"]

# name -> JEPAConfig overrides
ENV_SETTINGS: dict[str, dict[str, Any]] = {
    "counting-slots": {"env": "counting", "nuisance": "slots"},
    "counting-resample": {"env": "counting", "nuisance": "resample"},
    "gridworld-bg": {"env": "gridworld", "distractor": "bg_colour"},
}

COLUMNS = [
    ("n_classes", "classes"), ("n_separated_classes", "separated"), ("n_clusters", "clusters"), ("cluster_class_ari", "cluster/class ARI"),
    ("n_collapsed_pairs", "collapsed pairs"), ("n_collapsed_pairs_median_scale", "collapsed (median scale)"), ("centroid_acc_heldout", "centroid acc"),
    ("probe/class", "class probe"), ("nuisance_probe", "nuisance probe (mean)"), ("rankme", "RankMe"),
    ("premise/dyn_mean", "L_dyn"), ("premise/aux_mean", "L_p"), ("wall_s", "wall s"),
]


def _config_key(cfg_dict: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _run_cell(base_dict: dict[str, Any], env: str, mode: str, seed: int, out: str, quiet: bool) -> dict[str, Any]:
    """Train and audit one cell; returns its row (also used in worker processes)."""
    from auxfn.core.config import from_dict
    from auxfn.jepa.training import JEPAConfig, train

    base = from_dict(JEPAConfig, base_dict)
    cfg = dataclasses.replace(base, mode=mode, seed=int(seed), **ENV_SETTINGS[env])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = train(cfg, out=Path(out) / "runs" / f"{env}-{mode}-s{seed}-{int(time.time())}", quiet=quiet)
    s = res.summary
    nuis = [v for k, v in s.items() if k.startswith("probe/nuisance:")]
    row = {"env": env, "mode": mode, "seed": int(seed), "wall_s": time.perf_counter() - t0, "load_start": load0, "load_end": os.getloadavg()[0],
           "nuisance_probe": float(np.mean(nuis)) if nuis else float("nan"), "run_dir": str(res.run_dir), "config_key": _config_key(base_dict)}
    row.update({k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return row


def _line(row: dict[str, Any]) -> str:
    return (f"{row['env']:18s} {row['mode']:10s} seed {row['seed']}: separated {row['n_separated_classes']}/{row['n_classes']}, clusters {row['n_clusters']}, "
            f"collapsed {row['n_collapsed_pairs']}, centroid acc {row['centroid_acc_heldout']:.3f}, {row['wall_s']:.1f} s (load {row['load_start']:.1f})")


def run_grid(modes=MODES, seeds=(0, 1, 2), envs=tuple(ENV_SETTINGS), out: str | Path = "benchmarks/jepa/results", base=None, quiet: bool = True, log=print, workers: int = 1, run: bool = True) -> dict[str, Any]:
    """Train and audit every (env, mode, seed); write results.json and results.md into ``out``.

    Cells already in ``out/cells`` with the same base config are not run again; with
    ``run=False`` nothing is trained and the tables are built from the finished cells.
    """
    from auxfn.jepa.training import PRESETS

    base = base or PRESETS["quick"].config
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    bad_env = [e for e in envs if e not in ENV_SETTINGS]
    if bad_env:
        raise ValueError(f"unknown env setting {bad_env[0]!r}; choose from {', '.join(ENV_SETTINGS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    base_dict = dataclasses.asdict(base)
    key = _config_key(base_dict)
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    todo = []
    # seed-major order: every (env, mode) gets its first seed before any gets a second, so
    # an interrupted grid still covers every cell of the table
    for seed in seeds:
        for env in envs:
            for mode in modes:
                f = cells_dir / f"{env}-{mode}-s{seed}.json"
                if f.exists():
                    row = json.loads(f.read_text())
                    if row.get("config_key") == key:
                        done[(env, mode, int(seed))] = row
                        continue
                todo.append((env, mode, int(seed)))
    if not run:
        todo = []
    if done:
        log(f"{len(done)} cells already done in {cells_dir}, {len(todo)} to run")
    t_grid = time.perf_counter()

    def record(row: dict[str, Any]) -> None:
        f = cells_dir / f"{row['env']}-{row['mode']}-s{row['seed']}.json"
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1, default=float) + "\n")
        tmp.replace(f)
        done[(row["env"], row["mode"], row["seed"])] = row
        log(_line(row))

    if workers == 1:
        for env, mode, seed in todo:
            record(_run_cell(base_dict, env, mode, seed, str(out), quiet))
    elif todo:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_cell, base_dict, env, mode, seed, str(out), quiet) for env, mode, seed in todo]
            for fut in as_completed(futures):
                record(fut.result())
    rows = [done[(e, m, int(s))] for e in envs for m in modes for s in seeds if (e, m, int(s)) in done]
    agg = []
    for env in envs:
        for mode in modes:
            cell = [r for r in rows if r["env"] == env and r["mode"] == mode]
            if not cell:
                continue
            agg.append({"env": env, "mode": mode, "n_seeds": len(cell), **{k: (float(np.mean([r.get(k, np.nan) for r in cell])), float(np.std([r.get(k, np.nan) for r in cell]))) for k, _ in COLUMNS}})
    result = {"config": base_dict, "seeds": list(seeds), "workers": workers, "grid_wall_s_this_call": time.perf_counter() - t_grid,
              "sum_cell_wall_s": float(sum(r["wall_s"] for r in rows)), "rows": rows, "aggregate": agg}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = [
        "# P-JEPA ablation grid", "",
        f"Base config: {json.dumps({k: v for k, v in base_dict.items() if k in ('steps', 'batch_size', 'lr', 'c_p', 'img', 'latent_dim', 'arch')})}; seeds {list(seeds)}.",
        "Mean ± std over seeds.", "",
        "| env | mode | seeds | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for a in agg:
        lines.append(f"| {a['env']} | {a['mode']} | {a['n_seeds']} | " + " | ".join(f"{a[k][0]:.3g} ± {a[k][1]:.2g}" for k, _ in COLUMNS) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return result
