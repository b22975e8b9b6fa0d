"""Controllers with u(0) = 0 by construction, so the origin stays an equilibrium of the SDE.

- :class:`ZeroPreservingMLP`: u(x) = NN(x) ⊙ x, the paper's form (a state-dependent diagonal gain);
- :class:`DifferenceMLP`: u(x) = NN(x) - NN(0);
- :class:`LinearGain`: u(x) = K x (the ES-linear baseline, LQR and linear sweeps);
- :class:`PinnedMLP`: pinning control on a few coordinates, u_P = NN(x_P) ⊙ x_P, 0 elsewhere.

All map (B, d) -> (B, d); with ``noise_dim=m`` > 1 (general noise) the MLPs return (B, d, m).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DifferenceMLP", "LinearGain", "PinnedMLP", "ZeroPreservingMLP", "mlp"]

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP ``n_in -> hidden... -> n_out`` with ``activation`` between layers."""
    if activation not in _ACTS:
        raise ValueError(f"activation must be one of {sorted(_ACTS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        if h < 1:
            raise ValueError(f"hidden sizes must be positive, got {tuple(hidden)}")
        layers += [nn.Linear(width, h), _ACTS[activation]()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _check(x: Tensor, dim: int, who: str) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: x must have shape (batch, {dim}), got {tuple(x.shape)}")


class ZeroPreservingMLP(nn.Module):
    """u(x) = NN(x) ⊙ x (paper, all AS/ES controllers): u(0) = 0 and u = O(‖x‖) near 0."""

    def __init__(self, dim: int, hidden: Sequence[int] = (6, 6), activation: str = "relu", noise_dim: int = 1):
        super().__init__()
        self.dim, self.noise_dim = dim, noise_dim
        self.net = mlp(dim, hidden, dim * noise_dim, activation)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "ZeroPreservingMLP")
        out = self.net(x)
        if self.noise_dim == 1:
            return out * x
        return out.view(-1, self.dim, self.noise_dim) * x.unsqueeze(-1)


class DifferenceMLP(nn.Module):
    """u(x) = NN(x) - NN(0): u(0) = 0 with a full (not diagonal) dependence on x."""

    def __init__(self, dim: int, hidden: Sequence[int] = (6, 6), activation: str = "relu", noise_dim: int = 1):
        super().__init__()
        self.dim, self.noise_dim = dim, noise_dim
        self.net = mlp(dim, hidden, dim * noise_dim, activation)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "DifferenceMLP")
        # NN(0) evaluated in the same batch as NN(x), so that u(0) is exactly 0 (a separate
        # call may take another BLAS path and leave rounding noise of 1e-17)
        both = self.net(torch.cat([x, x.new_zeros(1, self.dim)]))
        out = both[:-1] - both[-1:]
        return out if self.noise_dim == 1 else out.view(-1, self.dim, self.noise_dim)


class LinearGain(nn.Module):
    """u(x) = K x with K (d, d) (trainable unless ``trainable=False``); K = k I for a scalar gain."""

    def __init__(self, dim: int, gain: float | Tensor | None = None, trainable: bool = True):
        super().__init__()
        self.dim = dim
        if gain is None:
            K = torch.empty(dim, dim)
            nn.init.uniform_(K, -1.0 / dim**0.5, 1.0 / dim**0.5)
        elif isinstance(gain, (int, float)):
            K = float(gain) * torch.eye(dim)
        else:
            K = torch.as_tensor(gain, dtype=torch.float32).clone()
            if K.shape != (dim, dim):
                raise ValueError(f"LinearGain: gain must have shape ({dim}, {dim}), got {tuple(K.shape)}")
        if trainable:
            self.K = nn.Parameter(K)
        else:
            self.register_buffer("K", K)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "LinearGain")
        return x @ self.K.to(x.dtype).T


class PinnedMLP(nn.Module):
    """Pinning control: u_P(x) = NN(x_P) ⊙ x_P on the coordinates P = ``pin``, u = 0 on the others.

    The controller sees and acts on the pinned coordinates only (the cell-fate experiment
    pins gene 2: ``pin=(1,)``). u(0) = 0 by construction. Scalar or diagonal noise (B, d).
    """

    def __init__(self, dim: int, pin: Sequence[int], hidden: Sequence[int] = (6, 6), activation: str = "relu"):
        super().__init__()
        pin = tuple(int(i) for i in pin)
        if not pin or len(set(pin)) != len(pin) or any(not 0 <= i < dim for i in pin):
            raise ValueError(f"PinnedMLP: pin must be distinct coordinates in [0, {dim}), got {pin}")
        self.dim, self.pin = dim, pin
        self.register_buffer("idx", torch.tensor(pin, dtype=torch.long), persistent=False)
        self.net = mlp(len(pin), hidden, len(pin), activation)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.dim, "PinnedMLP")
        xp = x[:, self.idx]
        u = x.new_zeros(x.shape)
        u[:, self.idx] = self.net(xp) * xp
        return u
