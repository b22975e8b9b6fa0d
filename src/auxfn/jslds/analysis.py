"""Fixed points, linearisations and spectra of any cell ``F(h, x)``, co-trained or not.

- :func:`find_fixed_points`: minimise ``q(h) = 1/2 ||F(h, x*) - h||^2`` from many initial states
  jointly with Adam (Sussillo & Barak 2013; the procedure of FixedPointFinder), keep points with
  ``q < q_tol``, drop distance outliers, deduplicate, then compute Jacobians and eigen-decompositions.
  The user's module is never modified: the optimisation differentiates only with respect to the
  states (``torch.autograd.grad`` on them), so ``requires_grad``, ``.grad`` and the weights stay
  as they were.
- :func:`nearest_fixed_point_linearization`: the standard post-hoc method the paper compares
  against, ``h_t ~ h* + J_h(h*)(s_{t-1} - h*) + J_x(h*)(x_t - x*)`` about the fixed point nearest
  to ``s_{t-1}``; ``s_{t-1}`` is the true RNN state (``"one_step"``) or the approximation's own
  previous state (``"free"``).
- :func:`relative_error`: mean over trials and steps of ``||approx_t - true_t|| / ||true_t||``.
- Selection vectors, effective inputs and the line-attractor subspace (context-integration figures).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auxfn.jslds.cells import cell_dims, cell_jacobians

__all__ = [
    "FixedPoints",
    "find_fixed_points",
    "line_attractor_subspace",
    "nearest_fixed_point_linearization",
    "relative_error",
    "selection_projections",
]


@dataclass
class FixedPoints:
    """Fixed points ``h* = F(h*, x*)`` with their linearisations.

    ``points (K, n)``, ``x_star (K, u)``, ``q (K,)`` (``1/2 ||F(h*) - h*||^2``), ``J_h (K, n, n)``,
    ``J_x (K, n, u)``, ``eigvals (K, n)`` (complex, sorted by modulus, largest first).
    With ``eigenvectors=True``: ``right (K, n, n)`` whose column i is the right eigenvector of
    ``eigvals[:, i]``, and ``left (K, n, n)`` = ``right^-1``, whose row i is the matching left
    eigenvector (``left @ J_h = diag(eigvals) @ left``, ``left @ right = I``).
    """

    points: torch.Tensor
    x_star: torch.Tensor
    q: torch.Tensor
    J_h: torch.Tensor | None = None
    J_x: torch.Tensor | None = None
    eigvals: torch.Tensor | None = None
    right: torch.Tensor | None = None
    left: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-able settings of the search that produced the points (tolerances, iterations, ...)."""

    _TENSORS = ("points", "x_star", "q", "J_h", "J_x", "eigvals", "right", "left")
    _FORMAT = "auxfn.jslds.FixedPoints/1"

    def __len__(self) -> int:
        return self.points.shape[0]

    def subset(self, idx) -> FixedPoints:
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return FixedPoints(*(pick(getattr(self, f)) for f in self._TENSORS), info=dict(self.info))

    def save(self, path: str | Path) -> Path:
        """Write ``path/fixed_points.safetensors`` (the tensors; complex ones as ``.real``/``.imag``
        pairs) and ``path/fixed_points.json`` (format, shapes, which tensors are present, ``info``)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        present: dict[str, str] = {}
        for name in self._TENSORS:
            t = getattr(self, name)
            if t is None:
                continue
            t = t.detach().cpu()
            if t.is_complex():
                tensors[f"{name}.real"], tensors[f"{name}.imag"] = t.real.contiguous(), t.imag.contiguous()
                present[name] = "complex"
            else:
                tensors[name] = t.contiguous()
                present[name] = "real"
        save_file(tensors, str(path / "fixed_points.safetensors"))
        meta = {"format": self._FORMAT, "n_points": len(self), "n_state": int(self.points.shape[1]),
                "n_input": int(self.x_star.shape[1]), "tensors": present, "info": self.info}
        (path / "fixed_points.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FixedPoints:
        """Read what :meth:`save` wrote into ``path``."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_file, data_file = path / "fixed_points.json", path / "fixed_points.safetensors"
        if not meta_file.is_file() or not data_file.is_file():
            raise FileNotFoundError(f"{path} holds no saved fixed points (fixed_points.json and fixed_points.safetensors)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != cls._FORMAT:
            raise ValueError(f"{meta_file}: format {meta.get('format')!r} is not {cls._FORMAT!r}")
        data = load_file(str(data_file))
        kw: dict[str, Any] = {}
        for name, kind in meta["tensors"].items():
            if name not in cls._TENSORS:
                raise ValueError(f"{meta_file}: unknown tensor {name!r}")
            kw[name] = torch.complex(data[f"{name}.real"], data[f"{name}.imag"]) if kind == "complex" else data[name]
        fps = cls(**kw, info=meta.get("info", {}))
        if len(fps) != meta["n_points"] or fps.points.shape[1] != meta["n_state"]:
            raise ValueError(f"{path}: the tensors do not match the metadata ({meta['n_points']} points of size {meta['n_state']})")
        return fps

    def n_unstable(self, criterion: str = "modulus", tol: float = 1e-6) -> torch.Tensor:
        """Unstable directions per point: eigenvalues with ``|lambda| > 1 + tol`` (``"modulus"``,
        FixedPointFinder's convention) or ``Re lambda > 1 + tol`` (``"real"``, the notebooks')."""
        if self.eigvals is None:
            raise ValueError("eigenvalues were not computed (decompose=False)")
        if criterion not in ("modulus", "real"):
            raise ValueError(f"criterion must be 'modulus' or 'real', got {criterion!r}")
        vals = self.eigvals.abs() if criterion == "modulus" else self.eigvals.real
        return (vals > 1 + tol).sum(-1)

    def stability(self, criterion: str = "modulus", tol: float = 1e-6) -> list[str]:
        """``"stable"``, or ``"saddle-k"`` / ``"unstable"`` (all directions) per point."""
        n = self.points.shape[1]
        return ["stable" if k == 0 else ("unstable" if k == n else f"saddle-{k}") for k in self.n_unstable(criterion, tol).tolist()]

    @property
    def is_stable(self) -> torch.Tensor:
        return self.n_unstable() == 0


def _broadcast_x(x_star: torch.Tensor, N: int, u: int, name: str = "x_star") -> torch.Tensor:
    if x_star.dim() == 1:
        x_star = x_star.expand(N, -1)
    if x_star.shape != (N, u):
        raise ValueError(f"{name} must have shape ({u},) or ({N}, {u}), got {tuple(x_star.shape)}")
    return x_star.contiguous()


def _decompose(J: torch.Tensor, eigenvectors: bool):
    if eigenvectors:
        vals, vecs = torch.linalg.eig(J)
    else:
        vals, vecs = torch.linalg.eigvals(J), None
    order = vals.abs().argsort(dim=-1, descending=True)
    vals = torch.gather(vals, -1, order)
    if vecs is None:
        return vals, None, None
    vecs = torch.gather(vecs, -1, order[:, None, :].expand_as(vecs))
    return vals, vecs, torch.linalg.inv(vecs)


def _unique(points: torch.Tensor, q: torch.Tensor, tol: float) -> torch.Tensor:
    """Indices of points kept when duplicates (2-norm distance <= tol) are merged, lowest q first."""
    order = q.argsort()
    kept: list[int] = []
    kept_pts = points.new_zeros(0, points.shape[1])
    for i in order.tolist():
        if kept and torch.cdist(points[i : i + 1], kept_pts).min() <= tol:
            continue
        kept.append(i)
        kept_pts = torch.cat([kept_pts, points[i : i + 1]])
    return torch.tensor(kept, dtype=torch.long)


def find_fixed_points(
    cell: nn.Module,
    initial_states: torch.Tensor,
    x_star: torch.Tensor,
    *,
    lr: float = 0.01,
    lr_decay: float = 0.9995,
    adam_eps: float = 1e-8,
    max_iters: int = 5000,
    tol_q: float = 1e-14,
    q_tol: float = 1e-9,
    newton_steps: int = 5,
    noise_scale: float = 0.0,
    unique_tol: float | None = 1e-3,
    outlier_distance_scale: float | None = 10.0,
    jacobians: bool = True,
    decompose: bool = True,
    eigenvectors: bool = False,
    generator: torch.Generator | None = None,
) -> FixedPoints:
    """Fixed points of ``h -> F(h, x*)`` near ``initial_states: (N, n)``.

    Args:
        cell: any ``F(h, x)`` module (never modified).
        x_star: ``(u,)`` or ``(N, u)``: the constant input of each optimisation.
        lr, lr_decay, adam_eps: Adam on the states, learning rate ``lr * lr_decay^iter``.
        max_iters, tol_q: stop after ``max_iters`` or once every ``q < tol_q``.
        q_tol: keep points with ``q < q_tol``.
        newton_steps: Newton refinements after Adam, ``h <- h + (I - J_h)^-1 (F(h) - h)``, each kept
            only where it lowers q. Adam's steps stay of the order of its learning rate, so it stalls
            at q ~ n lr^2 near a fixed point; Newton converges quadratically from there. 0 turns this off.
        noise_scale: Gaussian noise added to (a copy of) the initial states.
        unique_tol: merge points closer than this (2-norm over ``[h, x*]``); None keeps all.
        outlier_distance_scale: drop points farther from the initial states' centroid than this
            many times the initial states' mean distance to it; None keeps all.
        jacobians, decompose, eigenvectors: what to compute for the kept points.
    """
    n, u = cell_dims(cell)
    if initial_states.dim() != 2 or initial_states.shape[1] != n:
        raise ValueError(f"initial_states must have shape (N, {n}), got {tuple(initial_states.shape)}")
    N = initial_states.shape[0]
    dtype = initial_states.dtype
    xs = _broadcast_x(x_star.detach().to(dtype), N, u)
    init = initial_states.detach().clone()
    if noise_scale > 0:
        init = init + noise_scale * torch.randn(init.shape, generator=generator, dtype=dtype).to(init.device)

    def F(h):
        # Gradients are taken with torch.autograd.grad with respect to the states only, so the
        # parameters' .grad and requires_grad are never touched.
        return cell(h, xs)

    h = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([h], lr=lr, eps=adam_eps)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)
    for _ in range(max_iters):
        q = 0.5 * ((F(h) - h) ** 2).sum(-1)
        if q.max().item() < tol_q:
            break
        (grad,) = torch.autograd.grad(q.sum(), h)
        h.grad = grad
        opt.step()
        sched.step()
    with torch.no_grad():
        pts = h.detach()
        q = 0.5 * ((F(pts) - pts) ** 2).sum(-1)
        eye = torch.eye(n, dtype=dtype, device=pts.device)
        for _ in range(newton_steps):
            jh, _ = cell_jacobians(cell, pts, xs)
            step, info = torch.linalg.solve_ex(eye - jh, (F(pts) - pts).unsqueeze(-1))
            cand = pts + torch.nan_to_num(step.squeeze(-1), nan=0.0, posinf=0.0, neginf=0.0)
            q_new = 0.5 * ((F(cand) - cand) ** 2).sum(-1)
            better = (info == 0) & torch.isfinite(q_new) & (q_new < q)
            pts = torch.where(better[:, None], cand, pts)
            q = torch.where(better, q_new, q)
        keep = q < q_tol
        if outlier_distance_scale is not None:
            centroid = init.mean(0)
            scale = (init - centroid).norm(dim=-1).mean().clamp_min(1e-12)
            keep &= (pts - centroid).norm(dim=-1) / scale <= outlier_distance_scale
        idx = keep.nonzero().flatten()
        if unique_tol is not None and idx.numel() > 0:
            idx = idx[_unique(torch.cat([pts[idx], xs[idx]], 1), q[idx], unique_tol)]
        info = {"n_initial_states": N, "q_tol": q_tol, "lr": lr, "lr_decay": lr_decay, "max_iters": max_iters,
                "newton_steps": newton_steps, "unique_tol": unique_tol, "outlier_distance_scale": outlier_distance_scale,
                "n_converged": int((q < q_tol).sum())}
        fps = FixedPoints(points=pts[idx], x_star=xs[idx], q=q[idx], info=info)
        if (jacobians or decompose) and len(fps):
            fps.J_h, fps.J_x = cell_jacobians(cell, fps.points, fps.x_star)
            fps.J_h, fps.J_x = fps.J_h.detach(), fps.J_x.detach()
            if decompose:
                fps.eigvals, fps.right, fps.left = _decompose(fps.J_h, eigenvectors)
    return fps


def relative_error(approx: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over trials and steps of ``||approx_t - true_t||_2 / ||true_t||_2``; both ``(B, T, n)``.

    Steps are the states after each update (1..T): the shared initial state is not counted.
    """
    if approx.shape != true.shape or approx.dim() != 3:
        raise ValueError(f"approx and true must both be (batch, time, n), got {tuple(approx.shape)} and {tuple(true.shape)}")
    return ((approx - true).norm(dim=-1) / true.norm(dim=-1).clamp_min(1e-12)).mean()


def nearest_fixed_point_linearization(
    fps: FixedPoints,
    states: torch.Tensor,
    inputs: torch.Tensor,
    h0: torch.Tensor,
    x_star: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    mode: str = "one_step",
) -> torch.Tensor:
    """Approximate RNN states ``states: (B, T, n)`` (driven by ``inputs: (B, T, u)`` from ``h0: (B, n)``)
    by linearising about the nearest fixed point at every step. Returns ``(B, T, n)``.

    Only fixed points found for the current step's ``x*`` are candidates (``x_star``: None for zeros,
    a ``(u,)`` tensor, or a callable of ``x_t`` such as the context task's ``StaticChannels``).
    """
    if mode not in ("one_step", "free"):
        raise ValueError(f"mode must be 'one_step' or 'free', got {mode!r}")
    if fps.J_h is None or len(fps) == 0:
        raise ValueError("fps holds no fixed points with Jacobians")
    B, T, n = states.shape
    u = inputs.shape[-1]
    if inputs.shape[:2] != (B, T) or fps.points.shape[1] != n or fps.x_star.shape[1] != u:
        raise ValueError(f"states (B, T, n) = {tuple(states.shape)}, inputs (B, T, u) = {tuple(inputs.shape)} and fixed points "
                         f"({fps.points.shape[1]} states, {fps.x_star.shape[1]} inputs) do not fit together")
    if h0.shape != (B, n):
        raise ValueError(f"h0 must have shape ({B}, {n}), got {tuple(h0.shape)}")
    pts, fx = fps.points.to(states.dtype), fps.x_star.to(states.dtype)
    out = []
    prev = h0
    for t in range(T):
        x_t = inputs[:, t]
        xs = torch.zeros_like(x_t) if x_star is None else (x_star(x_t) if callable(x_star) else x_star.expand_as(x_t))
        dist = torch.cdist(prev, pts)
        match = torch.cdist(xs, fx) < 1e-6
        if not match.any(1).all():
            raise ValueError(f"no fixed point was found for input expansion point {xs[~match.any(1)][0].tolist()}")
        k = dist.masked_fill(~match, float("inf")).argmin(1)
        p = pts[k]
        nxt = p + torch.einsum("bij,bj->bi", fps.J_h[k].to(states.dtype), prev - p) \
            + torch.einsum("bij,bj->bi", fps.J_x[k].to(states.dtype), x_t - xs)
        out.append(nxt)
        prev = states[:, t] if mode == "one_step" else nxt
    return torch.stack(out, 1)


def selection_projections(left: torch.Tensor, J_x: torch.Tensor, top: int = 1) -> torch.Tensor:
    """``(K, top, u)``: the top ``top`` left eigenvectors (unit norm; "selection vectors") at each
    point dotted with the effective inputs ``J_x e_j`` (the columns of ``J_x``)."""
    L = left[:, :top, :]
    L = L / L.norm(dim=-1, keepdim=True)
    return torch.einsum("ktn,knu->ktu", L, J_x.to(L.dtype))


def line_attractor_subspace(right: torch.Tensor, eigvals: torch.Tensor, w_in: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(n, 1 + u)`` from QR of [mean top right eigenvector, input weights].

    The top eigenvector is the one with the largest real eigenvalue at each point, sign-aligned
    to the first before averaging; ``w_in: (n, u)`` holds the input directions (``W_x`` columns).
    """
    top = eigvals.real.argmax(-1)
    r = right[torch.arange(right.shape[0]), :, top].real
    sign = torch.sign(r @ r[0])
    r = r * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    r1 = r.mean(0)
    q, _ = torch.linalg.qr(torch.cat([r1[:, None], w_in.to(r1.dtype)], 1))
    return q
