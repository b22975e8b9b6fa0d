"""Matplotlib helpers: the Agg backend (no display needed), one house style, ``save_figure``.

Import this module (not ``matplotlib.pyplot`` directly) in method code that draws, so
figures look alike across methods and never need a screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["COLORS", "plt", "save_figure", "subplots"]

# Colour-blind safe cycle (Okabe & Ito), used for every method's figures.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": matplotlib.cycler(color=COLORS),
}
matplotlib.rcParams.update(STYLE)


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 4.2, height: float = 3.2, **kwargs: Any):
    """``plt.subplots`` with a panel size in inches (the figure grows with the grid)."""
    kwargs.setdefault("figsize", (width * ncols, height * nrows))
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Any, run: Any, name: str) -> Path:
    """Save ``fig`` as ``<figures dir>/<name>.png`` and close it; returns the path.

    ``run`` is a :class:`auxfn.core.runs.Run` (its ``figures/``) or a folder.
    """
    folder = Path(getattr(run, "figures_dir", run))
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem if name.endswith(".png") else name
    if not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"figure name must be a plain file name, got {name!r}")
    path = folder / f"{stem}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
