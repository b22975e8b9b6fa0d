"""Task generators: semantics and statistics (seeded; tolerances are > 5 standard errors)."""

from __future__ import annotations

import pytest
import torch

from auxfn.jslds import ContextIntegrationTask, FlipFlopTask, StaticChannels


def test_flipflop_targets_are_the_latest_pulse_starting_at_minus_one():
    task = FlipFlopTask(n_bits=3, T=25, settle=5)
    g = torch.Generator().manual_seed(0)
    pulses = task.pulses(16, g)
    x, y, mask = task.encode(pulses)
    assert x.shape == (16, 25, 6) and y.shape == (16, 25, 3) and mask.shape == (16, 25)
    # channels [b0-, b0+, b1-, b1+, ...]
    torch.testing.assert_close(x[..., 1::2] - x[..., 0::2], pulses)
    assert (x.sum(-1) <= 3).all() and ((x[..., 0::2] * x[..., 1::2]) == 0).all()
    state = -torch.ones(16, 3)
    for t in range(25):
        state = torch.where(pulses[:, t] != 0, pulses[:, t], state)
        assert torch.equal(y[:, t], state)
    assert not mask[:, :5].any() and mask[:, 5:].all()


def test_flipflop_modes_pulse_statistics():
    g = torch.Generator().manual_seed(1)
    N = 4000 * 25 * 3
    official = FlipFlopTask(mode="official").pulses(4000, g)
    rate = (official != 0).float().mean().item()
    assert abs(rate - 2 / 3) < 5 * (2 / 9 / N) ** 0.5
    assert abs((official == 1).float().mean().item() - 1 / 3) < 0.005
    described = FlipFlopTask(mode="described", p=0.3).pulses(4000, g)
    assert abs((described != 0).float().mean().item() - 0.3) < 5 * (0.21 / N) ** 0.5
    assert abs(described.mean().item()) < 0.005  # signs equally likely
    with pytest.raises(ValueError, match="mode"):
        FlipFlopTask(mode="paper")


def test_context_task_semantics():
    task = ContextIntegrationTask()
    g = torch.Generator().manual_seed(2)
    x, y, mask = task.sample(64, g)
    assert x.shape == (64, 25, 4) and y.shape == (64, 25, 1) and mask.all()
    ctx = task.context_of(x)
    cued = x[torch.arange(64), :, ctx]  # (B, T)
    torch.testing.assert_close(y[..., 0], torch.cumsum(cued, 1))
    # context channels are static one-hots; x* copies them and zeroes the streams
    assert torch.equal(x[:, :, 2:].sum(-1), torch.ones(64, 25))
    xs = task.x_star(x)
    assert isinstance(task.x_star, StaticChannels)
    assert torch.equal(xs[..., :2], torch.zeros(64, 25, 2)) and torch.equal(xs[..., 2:], x[..., 2:])


def test_context_bias_and_noise_statistics():
    g = torch.Generator().manual_seed(3)
    N = 200_000
    b = ContextIntegrationTask(bias_dist="normal").biases(N // 2, g).flatten()
    # official draw 0.01 * 2 * (N(0,1) - 0.5): mean -0.01, sd 0.02
    assert abs(b.mean().item() + 0.01) < 5 * 0.02 / N**0.5
    assert abs(b.std().item() - 0.02) < 0.0005
    u = ContextIntegrationTask(bias_dist="uniform").biases(N // 2, g).flatten()
    assert u.min() >= -0.01 and u.max() <= 0.01 and abs(u.mean().item()) < 5 * 0.0058 / N**0.5
    task = ContextIntegrationTask()
    x, _, _ = task.sample_fixed_bias(2000, 0.04, -0.02, 1, g)
    assert torch.equal(x[:, :, 2:], torch.tensor([0.0, 1.0]).expand(2000, 25, 2))
    noise = x[..., :2] - torch.tensor([0.04, -0.02])
    assert abs(noise.std().item() - 0.125) < 0.002  # 0.025 / sqrt(1/25) per step
    assert abs(noise.mean().item()) < 5 * 0.125 / (2000 * 50) ** 0.5
    grid = task.condition_grid()
    assert len(grid) == 36 and len(set(grid)) == 36 and (-0.009, 0.04) in grid
