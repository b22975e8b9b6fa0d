"""JSLDS: RNNs co-trained with a Jacobian switching linear dynamical system (Smith et al. 2021).

The public names are imported lazily (PEP 562): ``import auxfn.jslds`` (and so ``auxfn --help``,
which imports every method's ``cli`` module) does not import torch until one of them is used.
See docs/jslds.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cells": ("GRUCell", "TorchCell", "VanillaRNNCell", "cell_jacobians", "cell_jvp"),
    "expansion": ("ExpansionNet",),
    "losses": ("LossWeights", "jslds_losses"),
    "model": ("JSLDS", "StaticChannels", "Trajectories"),
    "tasks": ("ContextIntegrationTask", "FlipFlopTask"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"auxfn.jslds.{_WHERE[name]}"), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'auxfn.jslds' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
