"""The expansion network E(a): the auxiliary function that proposes expansion points."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ExpansionNet"]


class ExpansionNet(nn.Module):
    """Residual tanh MLP of constant width n: ``z <- tanh(z + z W_l + b_l)`` for each layer l.

    All weights start at zero, so at initialisation ``E(a) = tanh(tanh(a))`` (two layers),
    close to the identity for small states: the expansion point starts at the JSLDS state
    itself and training moves it onto fixed points of F (the R_e term).
    """

    def __init__(self, n_state: int, n_layers: int = 2, *, zero_init: bool = True):
        super().__init__()
        if n_state < 1 or n_layers < 1:
            raise ValueError(f"n_state and n_layers must be >= 1, got {n_state}, {n_layers}")
        self.n_state = n_state
        self.layers = nn.ModuleList(nn.Linear(n_state, n_state) for _ in range(n_layers))
        if zero_init:
            for layer in self.layers:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.shape[-1] != self.n_state:
            raise ValueError(f"ExpansionNet: a must have last dimension {self.n_state}, got {tuple(a.shape)}")
        z = a
        for layer in self.layers:
            z = torch.tanh(z + layer(z))
        return z
