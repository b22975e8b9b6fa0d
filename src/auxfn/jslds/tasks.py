"""Synthetic tasks of the JSLDS paper.

A task is any object with ``n_input``, ``n_output`` and
``sample(batch_size, generator) -> (x: (B, T, u), y: (B, T, o), mask: (B, T) bool)``;
``x_star`` (optional) is the task's input expansion point for ``JSLDS(x_star=...)``.

- :class:`FlipFlopTask`: the n-bit memory. Each bit has two input channels (a -1 pulse and a
  +1 pulse); the target is the most recent pulse of each bit, starting at -1; steps before
  ``settle`` are masked out. ``mode="official"`` reproduces the data the official generator
  really produced (every step of every bit is -1, 0 or +1 with probability 1/3 each, i.e.
  pulses on 2/3 of steps, whatever the notebook's ``p``); ``mode="described"`` draws a pulse
  with probability ``p`` (sign +-1 equally likely).
- :class:`ContextIntegrationTask`: two noisy streams (motion, colour), each ``bias + noise``
  with noise sd ``noise_sd / sqrt(dt)`` per step, two static one-hot context channels, and the
  running sum of the cued stream as target (no dt factor, as in the official code). The
  per-trial bias is ``bias_scale * 2 * (N(0,1) - 0.5)`` with ``bias_dist="normal"`` (what the
  official code draws: mean -bias_scale, sd 2 bias_scale) or ``bias_scale * 2 * (U(0,1) - 0.5)``
  with ``bias_dist="uniform"`` (the evident intent: uniform on +-bias_scale).
"""

from __future__ import annotations

import itertools
import math

import torch

from auxfn.jslds.model import StaticChannels

__all__ = ["CONDITION_BIASES", "ContextIntegrationTask", "FlipFlopTask"]

# The 6 x 6 fixed-bias condition grid of the context analyses (Fig. 3D-I recreation).
CONDITION_BIASES = (-0.04, -0.02, -0.009, 0.009, 0.02, 0.04)


class FlipFlopTask:
    """n-bit flip-flop (memory) task; see the module docstring for the two modes."""

    def __init__(self, n_bits: int = 3, T: int = 25, settle: int = 5, mode: str = "official", p: float = 0.3):
        if n_bits < 1 or T < 1:
            raise ValueError(f"n_bits and T must be >= 1, got {n_bits}, {T}")
        if not 0 <= settle < T:
            raise ValueError(f"settle must satisfy 0 <= settle < T = {T}, got {settle}")
        if mode not in ("official", "described"):
            raise ValueError(f"mode must be 'official' or 'described', got {mode!r}")
        if not 0 < p <= 1:
            raise ValueError(f"p must satisfy 0 < p <= 1, got {p}")
        self.n_bits, self.T, self.settle, self.mode, self.p = n_bits, T, settle, mode, p
        self.n_input, self.n_output = 2 * n_bits, n_bits
        self.x_star = None  # zeros: the notebook's choice for this task

    def pulse_probability(self) -> float:
        """Probability that a given bit receives a pulse at a given step."""
        return 2 / 3 if self.mode == "official" else self.p

    def pulses(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Signed pulses ``(B, T, n_bits)`` in {-1, 0, +1}."""
        shape = (batch_size, self.T, self.n_bits)
        if self.mode == "official":
            return torch.randint(0, 3, shape, generator=generator).float() - 1
        on = torch.rand(shape, generator=generator) < self.p
        sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
        return on * sign

    def encode(self, pulses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, mask)`` for given signed pulses ``(B, T, n_bits)``."""
        B, T, k = pulses.shape
        x = torch.stack([(pulses < -0.5).float(), (pulses > 0.5).float()], dim=-1).reshape(B, T, 2 * k)
        steps = torch.arange(T).view(1, T, 1).expand(B, T, k)
        last = torch.cummax(torch.where(pulses != 0, steps, -1), dim=1).values  # index of latest pulse
        y = torch.where(last >= 0, torch.gather(pulses, 1, last.clamp_min(0)), torch.full_like(pulses, -1.0))
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, self.settle :] = True
        return x, y, mask

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        return self.encode(self.pulses(batch_size, generator))

    def __repr__(self) -> str:
        return f"FlipFlopTask(n_bits={self.n_bits}, T={self.T}, settle={self.settle}, mode={self.mode!r}, p={self.p})"


class ContextIntegrationTask:
    """Context-dependent integration of one of two noisy streams (after Mante et al. 2013).

    Inputs ``(B, T, 4)``: [motion, colour, context=motion, context=colour]; target ``(B, T, 1)``:
    running sum of the cued stream; mask all true. ``x_star`` copies the context channels.
    """

    def __init__(self, T: int = 25, bias_scale: float = 0.01, noise_sd: float = 0.025, bias_dist: str = "normal"):
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if bias_scale < 0 or noise_sd < 0:
            raise ValueError(f"bias_scale and noise_sd must be >= 0, got {bias_scale}, {noise_sd}")
        if bias_dist not in ("normal", "uniform"):
            raise ValueError(f"bias_dist must be 'normal' or 'uniform', got {bias_dist!r}")
        self.T, self.bias_scale, self.noise_sd, self.bias_dist = T, bias_scale, noise_sd, bias_dist
        self.dt = 1.0 / T
        self.n_input, self.n_output = 4, 1
        self.x_star = StaticChannels([2, 3])

    @property
    def noise_per_step(self) -> float:
        return self.noise_sd / math.sqrt(self.dt)

    def biases(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-trial biases ``(B, 2)`` for the two streams."""
        shape = (batch_size, 2)
        draw = torch.randn(shape, generator=generator) if self.bias_dist == "normal" else torch.rand(shape, generator=generator)
        return self.bias_scale * 2.0 * (draw - 0.5)

    def build(self, biases: torch.Tensor, context: torch.Tensor, generator: torch.Generator | None = None):
        """``(x, y, mask)`` for given biases ``(B, 2)`` and contexts ``(B,)`` (0 motion, 1 colour)."""
        B = biases.shape[0]
        noise = torch.randn(B, self.T, 2, generator=generator) * self.noise_per_step
        streams = biases[:, None, :] + noise
        ctx = torch.nn.functional.one_hot(context.long(), 2).float()
        x = torch.cat([streams, ctx[:, None, :].expand(B, self.T, 2)], dim=-1)
        cued = torch.gather(streams, 2, context.long().view(B, 1, 1).expand(B, self.T, 1))
        y = torch.cumsum(cued, dim=1)
        return x, y, torch.ones(B, self.T, dtype=torch.bool)

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        biases = self.biases(batch_size, generator)
        context = (torch.rand(batch_size, generator=generator) < 0.5).long()
        return self.build(biases, context, generator)

    def sample_fixed_bias(self, batch_size: int, motion_bias: float, colour_bias: float, context: int,
                          generator: torch.Generator | None = None):
        """Trials of one condition of the fixed-bias grid (``context``: 0 motion, 1 colour)."""
        if context not in (0, 1):
            raise ValueError(f"context must be 0 (motion) or 1 (colour), got {context!r}")
        biases = torch.tensor([[motion_bias, colour_bias]]).expand(batch_size, 2)
        return self.build(biases, torch.full((batch_size,), context), generator)

    @staticmethod
    def condition_grid() -> list[tuple[float, float]]:
        """The 36 (motion bias, colour bias) pairs of the 6 x 6 grid."""
        return list(itertools.product(CONDITION_BIASES, CONDITION_BIASES))

    @staticmethod
    def context_of(x: torch.Tensor) -> torch.Tensor:
        """Context index per trial (0 motion, 1 colour) from inputs ``(B, T, 4)``."""
        return x[:, 0, 2:4].argmax(-1)

    def __repr__(self) -> str:
        return f"ContextIntegrationTask(T={self.T}, bias_scale={self.bias_scale}, noise_sd={self.noise_sd}, bias_dist={self.bias_dist!r})"
