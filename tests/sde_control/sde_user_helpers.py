"""A user's own system as an importable factory (tests add this folder to sys.path)."""

import torch

from auxfn.sde_control import Box, ControlledSDE

A = torch.tensor([[0.5, 1.0], [-1.0, 0.5]])  # an unstable spiral: <x, Ax> = 0.5 |x|^2


def make_spiral() -> ControlledSDE:
    return ControlledSDE(dim=2, f0=lambda z: z @ A.to(z).T, g0=None, noise_type="scalar",
                         domain=Box([-5.0, -5.0], [5.0, 5.0]), name="spiral")


def not_a_system():
    return {"dim": 2}
