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

    def folded(self):
        """``E`` as a function with each layer's residual folded into its weight:
        ``z + z W^T + b = z (I + W^T) + b``, one ``addmm`` and one ``tanh`` per layer.

        Equal to ``forward`` (up to rounding); the folded weights are built once, so a time loop
        that calls E at every step (``JSLDS.forward``) saves an add per layer and step, and its
        backward one node per layer and step. Differentiable in the weights.
        """
        mats = self.folded_weights()

        def E(z: torch.Tensor) -> torch.Tensor:
            for b, m in mats:
                z = torch.tanh(torch.addmm(b, z, m))
            return z

        return E

    def folded_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(b_l, M_l = I + W_l^T)]`` per layer (differentiable in the weights), as ``folded`` uses them."""
        eye = torch.eye(self.n_state, dtype=self.layers[0].weight.dtype, device=self.layers[0].weight.device)
        return [(layer.bias, eye + layer.weight.T) for layer in self.layers]
