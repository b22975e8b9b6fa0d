"""The training config (a frozen dataclass) and the named presets (paper / quick per system and method)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from auxfn.core.config import (
    ConfigError,
    check_choice,
    check_import_path,
    check_positive,
    check_range,
)

__all__ = ["METHODS", "PRESETS", "SYSTEM_NAMES", "ControlConfig", "preset"]

METHODS = ("as", "es-icnn", "es-quad", "es-linear")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
SYSTEM_NAMES = ("harmonic", "energy", "prop32", "pendulum", "hopf", "lorenz", "stuart", "echo", "cellfate")


@dataclass(frozen=True)
class ControlConfig:
    """Learn a stabilising stochastic controller (AS) or a controller plus a Lyapunov function (ES)."""

    system: str = "harmonic"
    """harmonic, energy, prop32, pendulum, hopf, lorenz, stuart, echo or cellfate. With system_factory:
    the run's name for the user's system (letters, digits, '_', '-', '.')."""
    system_factory: str = ""
    """A user's system: 'package.module:callable' returning the uncontrolled ControlledSDE (called with
    no arguments). Recorded in the run, so that simulate, eval and resume rebuild it. Empty: the
    built-in system."""
    method: str = "as"
    """as (asymptotic stabiliser), es-icnn, es-quad (ES with the ICNN / diagonal-quadratic V), es-linear (x^T P x with u = Kx)."""
    lorenz_target: str = "P1"
    """Lorenz only: P1 (origin) or P2 (6 sqrt2, 6 sqrt2, 27)."""
    n_oscillators: int = 20
    """Stuart-Landau only: n oscillators (state dimension 2n - 1)."""
    echo_dim: int = 50
    """Echo-state only: reservoir size."""
    echo_seed: int = 0
    """Echo-state only: seed of the Erdős–Rényi matrix A."""
    noise_type: str = "default"
    """default (the system's own), scalar or diagonal."""
    control_entry: str = "diffusion"
    """Where u enters: diffusion (the paper) or drift."""
    controller: str = "mul"
    """mul: u = NN(x)⊙x (paper); diff: NN(x) - NN(0); linear: u = Kx."""
    pin: tuple[int, ...] = ()
    """Pinning control (AS only): the coordinates (0-based) the controller sees and acts on, u = 0 on the
    others, and the AS loss is taken on these coordinates only (the cell-fate preset pins gene 2: (1,)).
    Empty = every coordinate."""
    hidden: tuple[int, ...] = (6, 6)
    """Controller hidden widths."""
    activation: str = "relu"
    """Controller activation: relu, tanh or softplus."""
    alpha: float = 0.75
    """AS: alpha in (0, 1) of eq. (3)."""
    as_form: str = "vector"
    """AS loss form: vector (eq. (3)) or elementwise (the official code's variant)."""
    as_normalize: bool = True
    """AS: divide the residual by |x|^4 (same zero set; the official code did not: False)."""
    b: float = 2.1
    """ES: b > 0 of the loss b LV/V - |V_x G|^2/V^2."""
    lyap_hidden: tuple[int, ...] = (6, 6, 1)
    """ES-ICNN: layer sizes of g (last = 1); ES-quad: hidden widths of N."""
    lyap_eps: float = 1e-3
    """ES: eps of eps |x|^2 (ICNN) and of P = LL^T + eps I."""
    smooth_d: float = 0.1
    """ES-ICNN: threshold d of the C^2 smooth ReLU."""
    quad_l: float = 0.01
    """ES-quad: l of x^T diag(l + N(x)^2) x."""
    hessian: str = "exact"
    """ES: exact or hutchinson trace term."""
    legacy_detached_hessian: bool = False
    """ES: reproduce the official code's detached grad/Hessian of V (reproduction switch)."""
    n_samples: int = 500
    """Training states drawn uniformly from the system's box."""
    batch_size: int = 0
    """States per step (0 = all)."""
    lr: float = 0.05
    """Adam learning rate (with lr_schedule=reset: the first step's)."""
    lr_schedule: str = "constant"
    """constant: one Adam optimiser for the whole run. reset: the official ES/AS scripts' schedule,
    Adam re-created after every step (its moments reset, so each step moves every parameter by
    about the learning rate: a sign-gradient step) with lr = lr_high while the loss is >= lr_switch_loss,
    else lr_low. Measured: the harmonic ES presets reach zero violation only with it (docs)."""
    lr_high: float = 0.1
    """lr_schedule=reset: learning rate while the loss is >= lr_switch_loss."""
    lr_low: float = 0.01
    """lr_schedule=reset: learning rate once the loss is < lr_switch_loss."""
    lr_switch_loss: float = 2.0
    """lr_schedule=reset: the loss below which lr_low is used."""
    max_iters: int = 200
    """Maximum optimizer steps."""
    stop_at_zero: bool = True
    """Stop at the first step with zero violations on the training states."""
    stop_loss: float = 0.0
    """Also stop once the loss is <= this (the official ES-ICNN script stops at 1e-3; 0 = only at zero violation)."""
    dtype: str = "float32"
    """Training dtype: float32 or float64 (simulation is always float64)."""
    seed: int = 0
    """Seed of the networks and the training states."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""
    falsifier_every: int = 0
    """Run the falsifier every this many steps (0 = off)."""
    falsifier_starts: int = 1000
    """Falsifier: random starts."""
    falsifier_steps: int = 20
    """Falsifier: gradient-ascent steps on the residual."""
    falsifier_add: int = 100
    """Falsifier: counterexamples added to the training states per round (at most)."""
    certify_samples: int = 100_000
    """Held-out random states on which the final violation rate is measured (0 = skip)."""
    eval_paths: int = 20
    """Simulated paths (paired noise) for the controlled and the uncontrolled system."""
    eval_T: float = 4.0
    """Simulation horizon."""
    eval_dt: float = 1e-3
    """Euler–Maruyama step."""
    eps: float = 0.05
    """epsilon of the convergence time tau_eps."""
    eval_seed: int = 0
    """Seed of the simulation's initial states and noise."""
    blowup: float = 1e6
    """A path whose norm exceeds this is counted as diverged."""
    threads: int = 1
    """CPU threads for torch during the run (small nets are fastest on 1; 0 = leave torch's setting)."""

    def __post_init__(self) -> None:
        if self.system_factory:
            check_import_path("system_factory", self.system_factory)
            if not _LABEL.match(self.system):
                raise ConfigError(f"config field 'system' = {self.system!r} is not a name: allowed letters, digits, '_', '-', '.'")
        else:
            check_choice("system", self.system, SYSTEM_NAMES)
        check_choice("method", self.method, METHODS)
        check_choice("lorenz_target", self.lorenz_target, ("P1", "P2"))
        check_range("n_oscillators", self.n_oscillators, 2)
        check_range("echo_dim", self.echo_dim, 2)
        check_range("echo_seed", self.echo_seed, 0)
        check_choice("noise_type", self.noise_type, ("default", "scalar", "diagonal"))
        check_choice("control_entry", self.control_entry, ("diffusion", "drift"))
        check_choice("controller", self.controller, ("mul", "diff", "linear"))
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"config field 'hidden' = {self.hidden!r} is out of range: allowed non-empty, every width >= 1")
        check_choice("activation", self.activation, ("relu", "tanh", "softplus"))
        if self.pin and (self.method != "as" or len(set(self.pin)) != len(self.pin) or min(self.pin) < 0):
            raise ConfigError(f"config field 'pin' = {self.pin!r} is not allowed: pinning needs method 'as' "
                              f"(got {self.method!r}) and distinct coordinates >= 0")
        check_range("alpha", self.alpha, 0, 1, low_open=True, high_open=True)
        check_choice("as_form", self.as_form, ("vector", "elementwise"))
        check_positive("b", self.b)
        if not self.lyap_hidden or any(h < 1 for h in self.lyap_hidden):
            raise ConfigError(f"config field 'lyap_hidden' = {self.lyap_hidden!r} is out of range: allowed non-empty, every width >= 1")
        if self.method == "es-icnn" and self.lyap_hidden[-1] != 1:
            raise ConfigError(f"config field 'lyap_hidden' = {self.lyap_hidden!r} must end with 1 for es-icnn (g's scalar output)")
        check_positive("lyap_eps", self.lyap_eps)
        check_positive("smooth_d", self.smooth_d)
        check_positive("quad_l", self.quad_l)
        check_choice("hessian", self.hessian, ("exact", "hutchinson"))
        check_range("n_samples", self.n_samples, 1)
        check_range("batch_size", self.batch_size, 0)
        check_positive("lr", self.lr)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "reset"))
        check_positive("lr_high", self.lr_high)
        check_positive("lr_low", self.lr_low)
        check_range("lr_switch_loss", self.lr_switch_loss, 0)
        check_range("stop_loss", self.stop_loss, 0)
        check_range("max_iters", self.max_iters, 1)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        check_range("seed", self.seed, 0)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        check_range("falsifier_every", self.falsifier_every, 0)
        check_range("falsifier_starts", self.falsifier_starts, 1)
        check_range("falsifier_steps", self.falsifier_steps, 1)
        check_range("falsifier_add", self.falsifier_add, 1)
        check_range("certify_samples", self.certify_samples, 0)
        check_range("eval_paths", self.eval_paths, 0)
        check_positive("eval_T", self.eval_T)
        check_positive("eval_dt", self.eval_dt)
        if self.eval_T / self.eval_dt > 5e6:
            raise ConfigError(f"config field 'eval_dt' = {self.eval_dt!r} gives more than 5e6 steps for eval_T = {self.eval_T}")
        check_positive("eps", self.eps)
        check_range("eval_seed", self.eval_seed, 0)
        check_positive("blowup", self.blowup)
        check_range("threads", self.threads, 0)


def _c(**kw) -> ControlConfig:
    return ControlConfig(**kw)


# Official hyperparameters (reference notes §2.5, §3.3, §5); quick = the same with fewer
# samples/steps and a coarser simulation step, for seconds on a CPU.
_PAPER: dict[tuple[str, str], ControlConfig] = {
    ("harmonic", "as"): _c(system="harmonic", method="as", n_samples=500, hidden=(6, 6), alpha=0.75, lr=0.05, max_iters=200, eval_T=4.0, eval_dt=1e-4, eps=0.05),
    ("harmonic", "es-icnn"): _c(system="harmonic", method="es-icnn", n_samples=500, hidden=(6, 6), lyap_hidden=(6, 6, 1),
                                b=2.1, lr=0.1, lr_schedule="reset", max_iters=200, eval_T=4.0, eval_dt=1e-4, eps=0.05, seed=10),
    ("harmonic", "es-quad"): _c(system="harmonic", method="es-quad", controller="linear", n_samples=500, lyap_hidden=(6,),
                                quad_l=0.01, b=2.1, lr=0.03, lr_schedule="reset", max_iters=200, eval_T=4.0, eval_dt=1e-4, eps=0.05,
                                seed=10),
    ("harmonic", "es-linear"): _c(system="harmonic", method="es-linear", controller="linear", n_samples=500, b=2.1,
                                  lr=0.03, max_iters=200, eval_T=4.0, eval_dt=1e-4, eps=0.05, seed=10),
    ("energy", "as"): _c(system="energy", method="as", n_samples=4000, hidden=(6,), alpha=0.9, as_form="elementwise",
                         lr=0.1, max_iters=100, eval_T=1.0, eval_dt=1e-5, eps=0.1),
    ("pendulum", "as"): _c(system="pendulum", method="as", n_samples=1000, hidden=(6,), alpha=0.5, lr=0.05,
                           max_iters=2000, stop_at_zero=False, eval_T=2.0, eval_dt=1e-4, eps=0.05, eval_paths=6),
    ("pendulum", "es-quad"): _c(system="pendulum", method="es-quad", n_samples=500, hidden=(6, 6), lyap_hidden=(6,),
                                quad_l=0.01, b=2.1, lr=0.01, max_iters=1000, eval_T=2.0, eval_dt=1e-4, eps=0.05, eval_paths=6),
    ("hopf", "as"): _c(system="hopf", method="as", n_samples=3000, hidden=(10, 10), activation="tanh", alpha=0.5,
                       as_form="elementwise", lr=0.05, max_iters=700, eval_T=1.0, eval_dt=1e-4, eps=0.05, eval_paths=30),
    ("lorenz", "es-icnn"): _c(system="lorenz", method="es-icnn", n_samples=10000, batch_size=100, hidden=(10, 10),
                              lyap_hidden=(12, 12, 12, 1), b=2.1, lr=0.03, max_iters=2000, eval_T=2.0, eval_dt=1e-5, eps=0.02),
    ("lorenz", "es-quad"): _c(system="lorenz", method="es-quad", n_samples=10000, batch_size=100, hidden=(10, 10),
                              lyap_hidden=(12, 12), quad_l=1e-3, b=2.1, lr=0.03, max_iters=2000, eval_T=2.0, eval_dt=1e-5, eps=0.02),
    ("lorenz", "as"): _c(system="lorenz", method="as", n_samples=10000, batch_size=1000, hidden=(10, 10), alpha=0.75,
                         lr=0.03, max_iters=2000, eval_T=2.0, eval_dt=1e-5, eps=0.02),
    # the official stuart loss exactly (elementwise, not normalised: normalised, the elementwise
    # condition's u_j^2 >= 2 x_j F_j / ((1 - alpha) x_j^2) drives the gains to hundreds on the paths);
    # simulated at dt = 1e-5, not the official 1e-4, where the learned gains k reach k sqrt(dt) > 1
    # on some states and Euler-Maruyama blows up (benchmarks/sde_control/RESULTS.md, stuart_diagnosis)
    ("stuart", "as"): _c(system="stuart", method="as", n_samples=5000, hidden=(80,), alpha=0.75, as_form="elementwise",
                         as_normalize=False, lr=0.01, max_iters=1000, stop_at_zero=False, eval_T=6.0, eval_dt=1e-5,
                         eps=0.05),
    ("cellfate", "as"): _c(system="cellfate", method="as", pin=(1,), n_samples=1000, hidden=(6, 6), alpha=0.9,
                           lr=0.05, max_iters=200, eval_T=5.0, eval_dt=1e-5, eps=0.05, eval_paths=10),
    ("echo", "as"): _c(system="echo", method="as", n_samples=5000, hidden=(200, 200), alpha=0.8, lr=0.03,
                       max_iters=10000, eval_T=0.2, eval_dt=1e-6, eps=0.05, eval_paths=10),
}


def _quick(cfg: ControlConfig) -> ControlConfig:
    steps = max(1, round(cfg.eval_T / cfg.eval_dt))
    dt = cfg.eval_T / min(steps, 4000)
    return dataclasses.replace(
        cfg, n_samples=min(cfg.n_samples, 1000), batch_size=min(cfg.batch_size, 500),
        max_iters=min(cfg.max_iters, 300), eval_dt=dt, certify_samples=min(cfg.certify_samples, 20000),
        checkpoint_every=max(cfg.checkpoint_every, 1000),
    )


PRESETS: dict[tuple[str, str], dict[str, ControlConfig]] = {
    key: {"paper": cfg, "quick": _quick(cfg)} for key, cfg in _PAPER.items()
}


def preset(system: str, method: str, name: str = "paper", system_factory: str = "") -> ControlConfig:
    """The ``name`` (``"paper"`` | ``"quick"``) preset of ``(system, method)``; a default-based one if the paper has none.

    ``system_factory``: a user's system ('package.module:callable'); ``system`` is then its name.
    """
    if name not in ("paper", "quick"):
        raise ConfigError(f"unknown preset {name!r}; choose paper or quick")
    if (system, method) in PRESETS:
        cfg = PRESETS[(system, method)][name]
        return dataclasses.replace(cfg, system_factory=system_factory) if system_factory else cfg
    cfg = ControlConfig(system=system, method=method, system_factory=system_factory)
    return cfg if name == "paper" else _quick(cfg)
