"""The ablation grid: training modes x seeds x environments, each trained and audited.

``run_grid`` trains every cell with :func:`auxfn.jepa.training.train` and collects the
audit's headline numbers into ``results.json`` and ``results.md`` (one row per cell,
then means and standard deviations over seeds).
"""

from __future__ import annotations

import dataclasses
import json
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
    ("n_classes", "classes"), ("n_separated_classes", "separated"), ("n_clusters", "clusters"),
    ("n_collapsed_pairs", "collapsed pairs"), ("n_collapsed_pairs_median_scale", "collapsed (median scale)"), ("centroid_acc_heldout", "centroid acc"),
    ("probe/class", "class probe"), ("nuisance_probe", "nuisance probe (mean)"), ("rankme", "RankMe"),
    ("premise/dyn_mean", "L_dyn"), ("premise/aux_mean", "L_p"), ("wall_s", "wall s"),
]


def run_grid(modes=MODES, seeds=(0, 1, 2), envs=tuple(ENV_SETTINGS), out: str | Path = "benchmarks/jepa/results", base=None, quiet: bool = True, log=print) -> dict[str, Any]:
    """Train and audit every (env, mode, seed); write results.json and results.md into ``out``."""
    from auxfn.jepa.training import PRESETS, train

    base = base or PRESETS["quick"].config
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    bad_env = [e for e in envs if e not in ENV_SETTINGS]
    if bad_env:
        raise ValueError(f"unknown env setting {bad_env[0]!r}; choose from {', '.join(ENV_SETTINGS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for env in envs:
        for mode in modes:
            for seed in seeds:
                cfg = dataclasses.replace(base, mode=mode, seed=int(seed), **ENV_SETTINGS[env])
                t0 = time.perf_counter()
                res = train(cfg, out=out / "runs" / f"{env}-{mode}-s{seed}-{int(time.time())}", quiet=quiet)
                s = res.summary
                nuis = [v for k, v in s.items() if k.startswith("probe/nuisance:")]
                row = {"env": env, "mode": mode, "seed": int(seed), "wall_s": time.perf_counter() - t0, "nuisance_probe": float(np.mean(nuis)) if nuis else float("nan")}
                row.update({k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
                rows.append(row)
                log(f"{env:18s} {mode:10s} seed {seed}: separated {row['n_separated_classes']}/{row['n_classes']}, clusters {row['n_clusters']}, "
                    f"collapsed {row['n_collapsed_pairs']}, centroid acc {row['centroid_acc_heldout']:.3f}, {row['wall_s']:.1f} s")
    agg = []
    for env in envs:
        for mode in modes:
            cell = [r for r in rows if r["env"] == env and r["mode"] == mode]
            agg.append({"env": env, "mode": mode, **{k: (float(np.mean([r[k] for r in cell])), float(np.std([r[k] for r in cell]))) for k, _ in COLUMNS}})
    result = {"config": dataclasses.asdict(base), "seeds": list(seeds), "rows": rows, "aggregate": agg}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = [
        "# P-JEPA ablation grid", "",
        f"Base config: {json.dumps({k: v for k, v in dataclasses.asdict(base).items() if k in ('steps', 'batch_size', 'lr', 'c_p', 'img', 'latent_dim', 'arch')})}; seeds {list(seeds)}.",
        "Mean ± std over seeds.", "",
        "| env | mode | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for a in agg:
        lines.append(f"| {a['env']} | {a['mode']} | " + " | ".join(f"{a[k][0]:.3g} ± {a[k][1]:.2g}" for k, _ in COLUMNS) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return result
