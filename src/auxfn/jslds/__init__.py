"""JSLDS: RNNs co-trained with a Jacobian switching linear dynamical system (Smith et al. 2021).

The public names are imported lazily (PEP 562): ``import auxfn.jslds`` (and so ``auxfn --help``,
which imports every method's ``cli`` module) does not import torch until one of them is used.
See docs/jslds.md.
"""

from __future__ import annotations

from auxfn.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "cells": ("GRUCell", "TorchCell", "VanillaRNNCell", "cell_jacobians", "cell_jvp"),
    "expansion": ("ExpansionNet",),
    "losses": ("LossWeights", "jslds_losses"),
    "model": ("JSLDS", "StaticChannels", "Trajectories"),
    "tasks": ("ContextIntegrationTask", "FlipFlopTask"),
})
