"""Fixed-point finder on systems with known fixed points; linearisation baselines; spectra."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auxfn.jslds import GRUCell, VanillaRNNCell
from auxfn.jslds.analysis import (
    find_fixed_points,
    line_attractor_subspace,
    nearest_fixed_point_linearization,
    relative_error,
    selection_projections,
)

X_STAR = 0.9575040240772687  # the positive root of x = tanh(2 x)


class DiagTanh(nn.Module):
    """F(h, x) = tanh(h diag(2, 0.5) + x b): fixed points (0, 0) saddle, (+-X_STAR, 0) stable."""

    def __init__(self):
        super().__init__()
        self.n_state, self.n_input = 2, 1
        self.w = nn.Parameter(torch.tensor([2.0, 0.5], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([[0.3, -0.2]], dtype=torch.float64))

    def forward(self, h, x):
        return torch.tanh(h * self.w + x @ self.b)


def test_finder_recovers_known_fixed_points_and_leaves_the_model_alone():
    cell = DiagTanh()
    before = {k: v.detach().clone() for k, v in cell.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    init = torch.cat([torch.rand(60, 2, generator=g, dtype=torch.float64) * 3 - 1.5,
                      torch.tensor([[1e-3, 0.4], [-1e-3, -0.7]], dtype=torch.float64)])
    fps = find_fixed_points(cell, init, torch.zeros(1, dtype=torch.float64), lr=0.02, max_iters=3000,
                            q_tol=1e-12, unique_tol=1e-4, eigenvectors=True)
    order = fps.points[:, 0].argsort()
    pts = fps.points[order]
    want = torch.tensor([[-X_STAR, 0.0], [0.0, 0.0], [X_STAR, 0.0]], dtype=torch.float64)
    assert len(fps) == 3, fps.points
    torch.testing.assert_close(pts, want, rtol=0, atol=1e-7)
    # eigenvalues: 2(1 - X*^2) and 0.5 at the stable points, 2 and 0.5 at the saddle
    ev = fps.eigvals[order].real
    torch.testing.assert_close(ev[1], torch.tensor([2.0, 0.5], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(ev[2], torch.tensor([0.5, 2 * (1 - X_STAR**2)], dtype=torch.float64), rtol=0, atol=1e-6)
    assert [fps.stability()[i] for i in order.tolist()] == ["stable", "saddle-1", "stable"]
    # left eigenvectors: left @ J = diag(lambda) left and left @ right = I
    J = fps.J_h.to(torch.complex128)
    torch.testing.assert_close(fps.left @ J, torch.diag_embed(fps.eigvals) @ fps.left)
    torch.testing.assert_close(fps.left @ fps.right, torch.eye(2, dtype=torch.complex128).expand(3, 2, 2))
    # the user's model is untouched: flags, gradients and values
    assert all(p.requires_grad for p in cell.parameters())
    assert all(p.grad is None for p in cell.parameters())
    for k, v in cell.state_dict().items():
        assert torch.equal(v, before[k])


def test_filters_drop_non_converged_outliers_and_duplicates():
    cell = DiagTanh()
    init = torch.tensor([[0.5, 0.3], [0.7, -0.2], [0.6, 0.1]], dtype=torch.float64)
    few = find_fixed_points(cell, init, torch.zeros(1, dtype=torch.float64), max_iters=2, q_tol=1e-12, newton_steps=0)
    assert len(few) == 0  # two Adam steps are not enough to converge
    # ... but from near a fixed point, Newton refinement converges quadratically
    near = torch.tensor([[0.9, 0.1], [0.95, 0.0], [0.96, 0.01]], dtype=torch.float64)
    newton = find_fixed_points(cell, near, torch.zeros(1, dtype=torch.float64), max_iters=2, q_tol=1e-28, unique_tol=None)
    assert len(newton) == 3 and (newton.points - torch.tensor([X_STAR, 0.0], dtype=torch.float64)).abs().max() < 1e-13
    many = find_fixed_points(cell, init, torch.zeros(1, dtype=torch.float64), lr=0.02, max_iters=3000, q_tol=1e-12, unique_tol=None)
    one = find_fixed_points(cell, init, torch.zeros(1, dtype=torch.float64), lr=0.02, max_iters=3000, q_tol=1e-12, unique_tol=1e-4)
    assert len(many) == 3 and len(one) == 1
    far = find_fixed_points(cell, init, torch.zeros(1, dtype=torch.float64), lr=0.02, max_iters=3000, q_tol=1e-12,
                            outlier_distance_scale=1e-3)
    assert len(far) == 0


def test_finder_on_gru_returns_true_fixed_points_and_matching_jacobians():
    torch.manual_seed(0)
    cell = GRUCell(8, 3, recurrent_scale=2.0, generator=torch.Generator().manual_seed(1)).double()
    init = torch.randn(20, 8, dtype=torch.float64)
    fps = find_fixed_points(cell, init, torch.zeros(3, dtype=torch.float64), lr=0.02, max_iters=1500, q_tol=1e-18)
    assert len(fps) >= 1
    torch.testing.assert_close(cell(fps.points, fps.x_star), fps.points, rtol=0, atol=2e-9)
    jac = torch.func.vmap(torch.func.jacrev(lambda h, x: cell(h[None], x[None])[0]))(fps.points, fps.x_star)
    torch.testing.assert_close(fps.J_h, jac, rtol=1e-10, atol=1e-10)


def test_linearization_is_exact_for_a_linear_system():
    """For F(h, x) = h A + x B with x* = 0, the only fixed point is 0 and its linearisation is F itself."""
    g = torch.Generator().manual_seed(2)

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_state, self.n_input = 4, 2
            self.A = nn.Parameter(0.5 * torch.randn(4, 4, generator=g, dtype=torch.float64) / 2)
            self.B = nn.Parameter(torch.randn(2, 4, generator=g, dtype=torch.float64))

        def forward(self, h, x):
            return h @ self.A + x @ self.B

    cell = Lin()
    fps = find_fixed_points(cell, torch.randn(5, 4, generator=g, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                            lr=0.05, max_iters=3000, q_tol=1e-14, unique_tol=1e-4)
    assert len(fps) == 1 and fps.points.abs().max() < 1e-6
    x = torch.randn(3, 7, 2, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    hs, h = [], h0
    for t in range(7):
        h = cell(h, x[:, t])
        hs.append(h)
    H = torch.stack(hs, 1)
    for mode in ("one_step", "free"):
        approx = nearest_fixed_point_linearization(fps, H, x, h0, mode=mode)
        assert relative_error(approx, H) < 1e-5  # exact up to the found point's error (~1e-7)
    # a nonlinear cell: one-step-ahead is closer than free-running, and both are positive
    van = VanillaRNNCell(4, 2, recurrent_scale=1.5, generator=g).double()
    vf = find_fixed_points(van, torch.randn(50, 4, generator=g, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                           lr=0.02, max_iters=2000, q_tol=1e-12)
    assert len(vf) >= 1
    hs, h = [], h0
    for t in range(7):
        h = van(h, x[:, t])
        hs.append(h)
    H = torch.stack(hs, 1)
    e1 = relative_error(nearest_fixed_point_linearization(vf, H, x, h0, mode="one_step"), H)
    assert 0 < e1 < 10


def test_relative_error_definition_and_shapes():
    true = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    approx = torch.tensor([[[3.0, 4.0 + 5.0], [1.0, 0.5]]])
    torch.testing.assert_close(relative_error(approx, true), torch.tensor((1.0 + 0.5) / 2))
    with pytest.raises(ValueError, match="batch, time, n"):
        relative_error(approx[0], true[0])


def test_selection_projections_and_subspace():
    g = torch.Generator().manual_seed(3)
    K, n, u = 5, 6, 2
    R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    vals = torch.linspace(1.0, 0.1, n, dtype=torch.float64)
    J = (R @ torch.diag(vals) @ R.T).expand(K, n, n)
    right = R.to(torch.complex128).expand(K, n, n)
    left = torch.linalg.inv(right)
    Jx = torch.randn(K, n, u, generator=g, dtype=torch.float64)
    proj = selection_projections(left, Jx, top=1)
    torch.testing.assert_close(proj[:, 0, :].real, torch.einsum("n,knu->ku", R[:, 0], Jx))
    torch.testing.assert_close(left @ J.to(torch.complex128), torch.diag_embed(vals.to(torch.complex128)).expand(K, n, n) @ left)
    W = torch.randn(n, u, generator=g, dtype=torch.float64)
    Q = line_attractor_subspace(right, vals.to(torch.complex128).expand(K, n), W)
    assert Q.shape == (n, 1 + u)
    torch.testing.assert_close(Q.T @ Q, torch.eye(1 + u, dtype=torch.float64))
    assert abs(abs(Q[:, 0] @ R[:, 0]) - 1) < 1e-12
