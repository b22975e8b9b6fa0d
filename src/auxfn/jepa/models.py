"""P-JEPA's three networks: encoder E, latent transition T and auxiliary head P.

Yu et al. 2025, Fig. 1: ``z = E_φ(o)``, ``ẑ' = T_ψ(z, a)``, ``P_θ(z) ≈ p(o)``. The
encoder is trained by both the dynamics loss and the auxiliary loss with no
stop-gradient and no EMA target; :class:`JEPAModel` can also hold an EMA copy of the
encoder for the BYOL/SPR-style baseline (``mode="ema"``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["AuxHead", "Encoder", "JEPAModel", "Transition"]


def _mlp(sizes: list[int], act: type[nn.Module] = nn.Mish) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``z = E_φ(o)``: observations (B, C, H, W) in [0, 1] -> latents (B, latent_dim).

    ``arch="mlp"``: flatten, two hidden layers of width ``hidden``. ``arch="cnn"``: three
    3x3 stride-2 convolutions (``channels`` each) then a linear map; a small stand-in
    for the paper's ResNet, whose definition is not public. ``out_norm="layernorm"``
    normalises the latent (off by default, as in the paper's config: ``simnorm: false``).
    """

    def __init__(self, obs_shape: tuple[int, int, int], latent_dim: int = 32, arch: str = "mlp", hidden: int = 256, channels: int = 16, out_norm: str | None = None):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"obs_shape must be (C, H, W), got {obs_shape}")
        if arch not in ("mlp", "cnn"):
            raise ValueError(f"arch must be 'mlp' or 'cnn', got {arch!r}")
        if out_norm not in (None, "none", "layernorm"):
            raise ValueError(f"out_norm must be None or 'layernorm', got {out_norm!r}")
        self.obs_shape = tuple(int(x) for x in obs_shape)
        c, h, w = self.obs_shape
        if arch == "mlp":
            self.net = nn.Sequential(nn.Flatten(), _mlp([c * h * w, hidden, hidden, latent_dim]))
        else:
            convs = nn.Sequential(
                nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.Mish(),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.Mish(),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.Mish(), nn.Flatten(),
            )
            with torch.no_grad():
                flat = convs(torch.zeros(1, c, h, w)).shape[1]
            self.net = nn.Sequential(convs, nn.Linear(flat, latent_dim))
        self.norm = nn.LayerNorm(latent_dim) if out_norm == "layernorm" else nn.Identity()
        self.latent_dim = latent_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.ndim != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"obs must have shape (B, {', '.join(map(str, self.obs_shape))}), got {tuple(obs.shape)}")
        return self.norm(self.net(obs))


class Transition(nn.Module):
    """``ẑ' = T_ψ(z, a) = z + g([z, onehot(a)])`` (``residual=True``) or ``g([z, onehot(a)])``.

    z: (B, latent_dim); a: (B,) int64 action ids in 0..n_actions-1.
    """

    def __init__(self, latent_dim: int, n_actions: int, hidden: int = 256, residual: bool = True):
        super().__init__()
        self.latent_dim, self.n_actions, self.residual = latent_dim, n_actions, residual
        self.net = _mlp([latent_dim + n_actions, hidden, hidden, latent_dim])

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if a.shape != (z.shape[0],) or a.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"a must be an integer tensor of shape ({z.shape[0]},), got {a.dtype} {tuple(a.shape)}")
        onehot = nn.functional.one_hot(a.long(), self.n_actions).to(z.dtype)
        out = self.net(torch.cat([z, onehot], dim=1))
        return z + out if self.residual else out


class AuxHead(nn.Module):
    """``P_θ(z)``: latents (B, latent_dim) -> (B, out_dim) (values, or two-hot logits)."""

    def __init__(self, latent_dim: int, out_dim: int, hidden: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([latent_dim, hidden, hidden, out_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)


class JEPAModel(nn.Module):
    """E, T and P together (plus an EMA copy of E when ``ema=True``).

    ``aux_dim`` is the dimension k of the auxiliary target; with ``aux_loss="twohot"``
    the head outputs ``k * num_bins`` logits (TD-MPC2's symlog two-hot encoding over
    [vmin, vmax], as in the reference code).
    """

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, aux_dim: int, *, latent_dim: int = 32, arch: str = "mlp", hidden: int = 256, channels: int = 16, out_norm: str | None = None, aux_loss: str = "mse", num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0, ema: bool = False):
        super().__init__()
        if aux_loss not in ("mse", "twohot"):
            raise ValueError(f"aux_loss must be 'mse' or 'twohot', got {aux_loss!r}")
        self.obs_shape, self.n_actions, self.aux_dim = tuple(obs_shape), int(n_actions), int(aux_dim)
        self.aux_loss, self.num_bins, self.vmin, self.vmax = aux_loss, int(num_bins), float(vmin), float(vmax)
        self.encoder = Encoder(obs_shape, latent_dim, arch, hidden, channels, out_norm)
        self.transition = Transition(latent_dim, n_actions, hidden)
        self.aux_head = AuxHead(latent_dim, aux_dim * (num_bins if aux_loss == "twohot" else 1), hidden=max(32, hidden // 2))
        self.target_encoder: Encoder | None = None
        if ema:
            self.target_encoder = copy.deepcopy(self.encoder)
            self.target_encoder.requires_grad_(False)

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA step ``φ̄ <- (1 - τ) φ̄ + τ φ`` of the target encoder (no-op without one)."""
        if self.target_encoder is None:
            return
        for tgt, src in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            tgt.lerp_(src, tau)

    def predict_aux(self, z: torch.Tensor) -> torch.Tensor:
        """The head's prediction of p as values (B, k) (the two-hot expectation for ``twohot``)."""
        out = self.aux_head(z)
        if self.aux_loss == "mse":
            return out
        from auxfn.jepa.losses import two_hot_decode

        return two_hot_decode(out.view(len(z), self.aux_dim, self.num_bins), self.vmin, self.vmax)
