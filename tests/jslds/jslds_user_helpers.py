"""A user's own cell and task, importable by "module:callable" paths (used by test_jslds_user.py)."""

from __future__ import annotations

import torch
from torch import nn


class LeakyTanhCell(nn.Module):
    """F(h, x) = (1 - alpha) h + alpha tanh(h W + x U + b): no analytic JVP, only the (h, x) call."""

    def __init__(self, n_state: int, n_input: int, alpha: float = 0.5):
        super().__init__()
        self.n_state, self.n_input, self.alpha = n_state, n_input, alpha
        g = torch.Generator().manual_seed(11)
        self.W = nn.Parameter(0.9 * torch.randn(n_state, n_state, generator=g) / n_state**0.5)
        self.U = nn.Parameter(torch.randn(n_input, n_state, generator=g) / n_input**0.5)
        self.b = nn.Parameter(torch.zeros(n_state))

    def forward(self, h, x):
        return (1 - self.alpha) * h + self.alpha * torch.tanh(h @ self.W + x @ self.U + self.b)


def make_cell(n_state: int, n_input: int) -> nn.Module:
    return LeakyTanhCell(n_state, n_input)


class HoldFirstTask:
    """Output, at every step after the first, the sign of the first step's input (1 input, 1 output)."""

    n_input, n_output, T = 1, 1, 8

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        first = torch.where(torch.rand(batch_size, generator=generator) < 0.5, -1.0, 1.0)
        x = torch.zeros(batch_size, self.T, 1)
        x[:, 0, 0] = first
        y = first.view(-1, 1, 1).expand(batch_size, self.T, 1).clone()
        mask = torch.ones(batch_size, self.T, dtype=torch.bool)
        mask[:, 0] = False
        return x, y, mask


def make_task() -> HoldFirstTask:
    return HoldFirstTask()


not_callable = 3
