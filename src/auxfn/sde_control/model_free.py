"""The model-free route: fit the unknown drift with a neural ODE, learn control on the fit.

Paper (rebuttal, cell-fate network): observe trajectories of the uncontrolled, noise-free
system, fit dx/dt = f̂(x) with a neural ODE (``torchdiffeq``; MLP 6 -> 50 tanh -> 6, L1 loss on
short windows), then learn AS control on the fitted model and evaluate it on the true one.
(The official pipeline saved f̂'s *values* and used them as states; here the fitted network
itself is the drift of the model the controller is trained on.)

    f_hat = fit_neural_ode(ts, xs)               # xs: (T, n_traj, d) observed states
    model = fitted_system(f_hat, domain)         # a ControlledSDE with drift f_hat
    result = train(cfg, system=model)            # AS / ES on the model
    true_sde.with_controller(result.controller)  # evaluate on the true system
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from auxfn.sde_control.controllers import mlp
from auxfn.sde_control.systems import Box, ControlledSDE

__all__ = ["NeuralDrift", "fit_neural_ode", "fitted_system", "model_free_control", "observe"]


class NeuralDrift(nn.Module):
    """f̂(x) = MLP(x), the right-hand side of a neural ODE (``forward(t, x)`` for torchdiffeq)."""

    def __init__(self, dim: int, hidden: Sequence[int] = (50,), activation: str = "tanh"):
        super().__init__()
        self.dim = dim
        self.net = mlp(dim, hidden, dim, activation)

    def forward(self, t, x: Tensor) -> Tensor:
        return self.net(x)


def fit_neural_ode(
    ts: Tensor, xs: Tensor, *, hidden: Sequence[int] = (50,), iters: int = 500, lr: float = 1e-2,
    batch_time: int = 10, batch_size: int = 20, seed: int = 0, method: str = "rk4",
) -> tuple[NeuralDrift, list[float]]:
    """Fit f̂ to observed trajectories ``xs`` (T, n_traj, d) at times ``ts`` (T,).

    Each step draws ``batch_size`` windows of ``batch_time`` consecutive observations,
    integrates f̂ from the window's first state with ``torchdiffeq.odeint`` and minimises the
    mean absolute error over the window. Returns f̂ and the loss history.
    """
    from torchdiffeq import odeint

    if ts.ndim != 1 or xs.ndim != 3 or xs.shape[0] != ts.shape[0]:
        raise ValueError(f"ts must be (T,) and xs (T, n_traj, d) with the same T, got {tuple(ts.shape)}, {tuple(xs.shape)}")
    if not 2 <= batch_time <= ts.shape[0]:
        raise ValueError(f"batch_time must be in [2, {ts.shape[0]}], got {batch_time}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    f_hat = NeuralDrift(xs.shape[2], hidden).to(xs.dtype)
    opt = torch.optim.Adam(f_hat.parameters(), lr=lr)
    T, n_traj, _ = xs.shape
    losses = []
    for _ in range(iters):
        start = torch.randint(0, T - batch_time + 1, (batch_size,), generator=gen)
        which = torch.randint(0, n_traj, (batch_size,), generator=gen)
        idx = start.unsqueeze(0) + torch.arange(batch_time).unsqueeze(1)  # (batch_time, B)
        target = xs[idx, which.unsqueeze(0)]  # (batch_time, B, d)
        t_win = ts[:batch_time] - ts[0]  # uniform observation grid: every window has these offsets
        pred = odeint(f_hat, target[0], t_win, method=method)
        loss = (pred - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return f_hat, losses


def fitted_system(f_hat: NeuralDrift, domain: Box, *, equilibrium: Tensor | None = None, name: str = "fitted") -> ControlledSDE:
    """A ControlledSDE whose drift is the fitted f̂, shifted so that its equilibrium is the origin.

    ``equilibrium``: the target x* in the fitted model's coordinates (default 0); the drift is
    f̂(z + x*) - f̂(x*), so the origin is exactly an equilibrium of the model.
    """
    for p in f_hat.parameters():
        p.requires_grad_(False)
    eq = torch.zeros(f_hat.dim) if equilibrium is None else torch.as_tensor(equilibrium)

    def f0(z: Tensor) -> Tensor:
        e = eq.to(z).unsqueeze(0)
        # f̂(x*) in the same batch as f̂(z + x*): the drift at z = 0 is then exactly 0
        w = next(f_hat.parameters())
        out = f_hat(0.0, torch.cat([z + e, e]).to(w.dtype)).to(z.dtype)  # the fit keeps its own dtype
        return out[:-1] - out[-1:]

    return ControlledSDE(f_hat.dim, f0=f0, domain=domain, name=name)


def observe(sde: ControlledSDE, x0: Tensor, ts: Tensor, *, method: str = "rk4") -> Tensor:
    """Noise-free, uncontrolled trajectories of ``sde`` (error coordinates): (T, n, d) from ``x0`` (n, d)."""
    from torchdiffeq import odeint

    with torch.no_grad():
        return odeint(lambda t, z: sde.f0(z), x0, ts, method=method)


def model_free_control(
    true_sde: ControlledSDE, cfg, *, x0_obs: Tensor, ts: Tensor, fit: dict | None = None, out=None,
    eval_x0: Tensor | None = None, certify_samples: int = 20000,
) -> dict:
    """The whole model-free route on a system whose drift the learner never calls.

    1. observe noise-free uncontrolled trajectories of ``true_sde`` from ``x0_obs`` at ``ts``;
    2. fit f̂ with :func:`fit_neural_ode` (keyword arguments ``fit``);
    3. train ``cfg`` (AS, e.g. pinning) on :func:`fitted_system` (the model only);
    4. evaluate the learned controller on the true system: held-out violation rate of the learned
       condition, and paired simulations controlled vs uncontrolled (``cfg.eval_*``).

    Returns a dict with the fit (``fit/*``), training (``train/*``) and true-system (``true/*``)
    figures, plus the fitted model and the controller under ``"model"`` and ``"controller"``.
    """
    import time

    from auxfn.sde_control.evaluation import compare
    from auxfn.sde_control.training import certify, train

    xs = observe(true_sde, x0_obs, ts)
    t0 = time.perf_counter()
    f_hat, losses = fit_neural_ode(ts, xs, **(fit or {}))
    fit_time = time.perf_counter() - t0
    model = fitted_system(f_hat, true_sde.domain)
    res = train(cfg, system=model, out=out, evaluate=False)
    # drift error of the fit on fresh states of the training box (relative to the true drift's scale)
    gen = torch.Generator().manual_seed(cfg.seed + 4242)
    with torch.no_grad():
        zt = true_sde.domain.sample(4000, generator=gen, dtype=xs.dtype)
        err = (model.f0(zt) - true_sde.f0(zt)).norm(dim=1).mean() / true_sde.f0(zt).norm(dim=1).mean()
    out_d: dict = {
        "fit/final_l1": losses[-1], "fit/time_s": fit_time, "fit/relative_drift_error_box": float(err),
        "train/iters_to_zero": res.summary["iters_to_zero"], "train/time_s": res.summary["train_time_s"],
        "train/heldout_violation_rate_model": res.summary.get("heldout_violation_rate"),
        "model": model, "controller": res.controller, "run_dir": res.run_dir,
    }
    controlled = true_sde.with_controller(res.controller)
    if certify_samples:
        out_d["true/heldout_violation_rate"] = certify(cfg, controlled, None, certify_samples, seed=cfg.seed + 777)
    if cfg.eval_paths:
        x0 = eval_x0 if eval_x0 is not None else true_sde.default_x0(cfg.eval_paths)
        metrics, _ = compare({"controlled": controlled, "uncontrolled": true_sde.with_controller(None)}, x0,
                             T=cfg.eval_T, dt=cfg.eval_dt, eps=cfg.eps, seed=cfg.eval_seed, blowup=cfg.blowup)
        out_d.update({f"true/{name}/{k}": v for name, m in metrics.items() for k, v in m.items()})
    return out_d
