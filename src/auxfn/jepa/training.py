"""Training P-JEPA and its ablations on a finite deterministic MDP: ``train(cfg) -> JEPAResult``.

Data: each step draws ``batch_size`` states and actions uniformly (so every count,
cell or ring position is equally represented), draws fresh per-episode nuisances,
renders ``o = render(s)`` and ``o' = render(f(s, a))`` on the fly and computes the
auxiliary target ``p(o)``. The reference code instead collects an online replay
buffer of random-action episodes; uniform sampling gives the same support without
the target count being rare (notes §5.5).

Modes (``auxfn.jepa.losses`` has the gradient-routing table): ``joint`` (the paper's
P-JEPA), ``aux_only``, ``dyn_only``, ``random_aux`` (p = frozen random projection of
pixels), ``two_stage`` (``aux_then_dyn`` or ``dyn_then_aux``: stage 1 trains E with one
loss, stage 2 freezes E and fits the heads), and the anti-collapse baselines without
an auxiliary gradient: ``stopgrad``, ``ema``, ``vicreg``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auxfn.core.checkpoint import load_checkpoint, save_checkpoint
from auxfn.core.config import ConfigError, check_choice, check_positive, check_range, from_dict
from auxfn.core.registry import Preset
from auxfn.core.runs import Run, stop_at_step_boundary
from auxfn.core.seeding import resolve_device, seed_everything, torch_threads
from auxfn.jepa.envs import (
    CountingMDP,
    GridWorldMDP,
    RingMDP,
    TabularMDP,
    make_aux_fn,
    transition_table,
)
from auxfn.jepa.losses import MODES, jepa_losses
from auxfn.jepa.models import JEPAModel
from auxfn.jepa.user_mdp import (
    BUILTIN_ENVS,
    MDPError,
    as_tabular_mdp,
    factory_path,
    fingerprint,
    is_factory_path,
    load_factory,
    validate_mdp,
)

__all__ = ["JEPAConfig", "JEPAResult", "PRESETS", "build_env", "build_model", "load_run", "train"]


@dataclass(frozen=True)
class JEPAConfig:
    """P-JEPA on a finite deterministic MDP (Yu et al. 2025): L = L_dyn + c_p · L_p."""

    mode: str = "joint"
    """joint, aux_only, dyn_only, random_aux, two_stage, stopgrad, ema or vicreg."""
    env: str = "counting"
    """counting, gridworld, ring, or a user MDP factory 'package.module:attr' (see auxfn.jepa.user_mdp)."""
    nuisance: str = "slots"
    """Counting env: slots (deterministic pixels), resample (the paper: positions redrawn at every step) or none."""
    img: int = 16
    """Counting env image side: 16, 32 or 64."""
    max_count: int = 8
    """Counting env: largest count (states 0..max_count)."""
    grid_size: int = 5
    """GridWorld side length."""
    distractor: str = "bg_colour"
    """GridWorld: bg_colour (per-episode background colour) or none."""
    ring_n: int = 8
    """RingEnv size n."""
    aux: str = "reward"
    """Auxiliary target p: reward, dense, count (counting), goal_dist, xy (gridworld), random or none (a user MDP: its aux_kinds). random_aux forces random."""
    audit_aux: str = "reward"
    """Auxiliary function whose largest bisimulation is the audit's ground truth."""
    aux_loss: str = "mse"
    """mse (the theory) or twohot (symlog two-hot cross-entropy, the reference code)."""
    c_p: float = 5.0
    """Weight c_p of L_p (the reference config's effective ratio 10/2 = 5)."""
    random_dim: int = 16
    """Output dimension of the random pixel projection (random aux)."""
    latent_dim: int = 32
    """Latent dimension of z."""
    arch: str = "mlp"
    """Encoder: mlp or cnn."""
    hidden: int = 256
    """Hidden width of E (mlp), T and P (P uses half)."""
    out_norm: str = "none"
    """Latent normalisation: none or layernorm."""
    steps: int = 1500
    """Optimizer steps (all stages together)."""
    batch_size: int = 128
    """Transitions per step."""
    lr: float = 1e-3
    """Adam learning rate of T and P."""
    enc_lr_scale: float = 1.0
    """Encoder learning rate = lr * enc_lr_scale (the reference code uses 0.3)."""
    grad_clip: float = 200.0
    """Gradient-norm clip (the reference code: 200)."""
    ema_tau: float = 0.01
    """EMA rate of the target encoder (mode ema)."""
    vicreg_var: float = 1.0
    """Weight of VICReg's variance term (mode vicreg)."""
    vicreg_cov: float = 0.04
    """Weight of VICReg's covariance term (mode vicreg)."""
    two_stage_order: str = "aux_then_dyn"
    """two_stage: aux_then_dyn or dyn_then_aux (the encoder is frozen after stage 1)."""
    stage1_fraction: float = 0.5
    """two_stage: fraction of the steps spent in stage 1."""
    log_every: int = 50
    """Steps between metric rows."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    audit_n_render: int = 16
    """Renders per state in the final audit."""
    figures: bool = True
    """Draw the audit and loss figures at the end (matplotlib takes about a second per figure on a busy CPU)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    threads: int = 1
    """torch CPU threads (1: these small models run fastest single-threaded on a busy machine; 0 keeps torch's default)."""
    seed: int = 0
    """Seed of the weights and of the data stream."""

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        user = is_factory_path(self.env)
        if not user:
            check_choice("env", self.env, (*BUILTIN_ENVS, "a factory path 'package.module:attr'"))
        check_choice("nuisance", self.nuisance, ("slots", "resample", "none"))
        check_choice("img", self.img, (16, 32, 64))
        check_range("max_count", self.max_count, 1, 16)
        check_range("grid_size", self.grid_size, 3, 12)
        check_choice("distractor", self.distractor, ("bg_colour", "none"))
        check_range("ring_n", self.ring_n, 2, 64)
        if user:  # a user MDP's aux kinds are checked against the MDP when it is built
            for name in ("aux", "audit_aux"):
                if not isinstance(getattr(self, name), str) or not getattr(self, name):
                    raise ConfigError(f"config field {name!r} = {getattr(self, name)!r} must be the name of one of the MDP's aux kinds")
            if self.audit_aux == "random":
                raise ConfigError("config field 'audit_aux' = 'random' is not available: the ground truth needs a function of the state")
        else:
            check_choice("aux", self.aux, ("reward", "dense", "count", "goal_dist", "xy", "random", "none"))
            check_choice("audit_aux", self.audit_aux, ("reward", "dense", "count", "goal_dist", "xy", "none"))
        check_choice("aux_loss", self.aux_loss, ("mse", "twohot"))
        check_range("c_p", self.c_p, 0)
        check_range("random_dim", self.random_dim, 1, 4096)
        check_range("latent_dim", self.latent_dim, 1, 4096)
        check_choice("arch", self.arch, ("mlp", "cnn"))
        check_range("hidden", self.hidden, 1, 8192)
        check_choice("out_norm", self.out_norm, ("none", "layernorm"))
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 2)
        check_positive("lr", self.lr)
        check_positive("enc_lr_scale", self.enc_lr_scale)
        check_positive("grad_clip", self.grad_clip)
        check_range("ema_tau", self.ema_tau, 0, 1, low_open=True)
        check_range("vicreg_var", self.vicreg_var, 0)
        check_range("vicreg_cov", self.vicreg_cov, 0)
        check_choice("two_stage_order", self.two_stage_order, ("aux_then_dyn", "dyn_then_aux"))
        check_range("stage1_fraction", self.stage1_fraction, 0, 1, low_open=True, high_open=True)
        check_range("log_every", self.log_every, 1)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        check_range("audit_n_render", self.audit_n_render, 2, 1024)
        check_range("seed", self.seed, 0)
        check_range("threads", self.threads, 0, 256)
        if user:
            return
        env_aux = {"counting": ("reward", "dense", "count", "random", "none"), "gridworld": ("reward", "goal_dist", "xy", "random", "none"), "ring": ("reward", "random", "none")}[self.env]
        if self.aux not in env_aux:
            raise ConfigError(f"config field 'aux' = {self.aux!r} is not available for env {self.env!r}: choose one of {', '.join(env_aux)}")
        if self.audit_aux not in env_aux or self.audit_aux == "random":
            raise ConfigError(f"config field 'audit_aux' = {self.audit_aux!r} is not available for env {self.env!r}")

    @property
    def train_aux(self) -> str:
        """The auxiliary target actually trained on (random_aux forces the random projection)."""
        return "random" if self.mode == "random_aux" else self.aux


@dataclass
class JEPAResult:
    run_dir: Path
    summary: dict[str, Any]
    model: JEPAModel
    report: Any  # auxfn.jepa.auditing.AuditReport
    config: JEPAConfig


def build_env(cfg: JEPAConfig, mdp: Any = None) -> TabularMDP:
    """The tabular core named by ``cfg.env`` (a built-in name or a factory path), or ``mdp`` itself."""
    if mdp is not None or is_factory_path(cfg.env):
        core = as_tabular_mdp(load_factory(cfg.env) if mdp is None else mdp)
        validate_mdp(core, tuple(dict.fromkeys((cfg.train_aux, cfg.audit_aux))))
        return core
    if cfg.env == "counting":
        return CountingMDP(cfg.max_count, min(4, cfg.max_count), cfg.img, cfg.nuisance, random_dim=cfg.random_dim, random_seed=cfg.seed)
    if cfg.env == "gridworld":
        return GridWorldMDP(cfg.grid_size, distractor=cfg.distractor)
    return RingMDP(cfg.ring_n)


def _aux_dim(core: TabularMDP, cfg: JEPAConfig) -> int:
    fn = make_aux_fn(core, cfg.train_aux, cfg.random_dim, cfg.seed)
    s = np.zeros(1, dtype=np.int64)
    return int(fn(s, core.render(s, core.sample_nuisance(np.random.default_rng(0), 1))).shape[1])


def build_model(cfg: JEPAConfig, core: TabularMDP) -> JEPAModel:
    return JEPAModel(
        core.obs_shape, core.n_actions, _aux_dim(core, cfg), latent_dim=cfg.latent_dim, arch=cfg.arch,
        hidden=cfg.hidden, out_norm=None if cfg.out_norm == "none" else cfg.out_norm, aux_loss=cfg.aux_loss,
        ema=cfg.mode == "ema",
    )


class _Sampler:
    """Uniform (s, a) batches rendered on the fly; its numpy Generator state goes into checkpoints."""

    def __init__(self, core: TabularMDP, cfg: JEPAConfig, device: torch.device):
        self.core, self.cfg, self.device = core, cfg, device
        self.table = transition_table(core)
        self.aux_fn = make_aux_fn(core, cfg.train_aux, cfg.random_dim, cfg.seed)
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.seen = np.zeros(self.table.shape, dtype=bool)

    def batch(self) -> tuple[torch.Tensor, ...]:
        n, b = self.core.n_states, self.cfg.batch_size
        s = self.rng.integers(0, n, size=b)
        a = self.rng.integers(0, self.core.n_actions, size=b)
        s2 = self.table[s, a]
        nuis = self.core.sample_nuisance(self.rng, b)
        obs = self.core.render(s, nuis)
        obs2 = self.core.render(s2, self.core.next_nuisance(nuis, s, s2, self.rng))
        p = self.aux_fn(s, obs)
        self.seen[s, a] = True
        t = lambda x, dt=None: torch.as_tensor(x, dtype=dt, device=self.device)  # noqa: E731
        return t(obs), t(a, torch.int64), t(obs2), t(p, torch.float32)

    def state(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state, "seen": self.seen.astype(int).tolist()}

    def load(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.seen = np.asarray(state["seen"], dtype=bool)

    def transitions(self) -> np.ndarray:
        s, a = np.nonzero(self.seen)
        return np.stack([s, a, self.table[s, a]], axis=1)


def _stage_mode(cfg: JEPAConfig, step: int) -> str:
    """The loss mode at ``step`` (1-based): two_stage switches to 'frozen' after stage 1."""
    if cfg.mode != "two_stage":
        return cfg.mode
    first = "aux_only" if cfg.two_stage_order == "aux_then_dyn" else "dyn_only"
    return first if step <= max(1, int(round(cfg.stage1_fraction * cfg.steps))) else "frozen"


def _optimizer(model: JEPAModel, cfg: JEPAConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([
        {"params": model.encoder.parameters(), "lr": cfg.lr * cfg.enc_lr_scale},
        {"params": list(model.transition.parameters()) + list(model.aux_head.parameters()), "lr": cfg.lr},
    ])


_RESUME_MAY_CHANGE = ("steps", "log_every", "checkpoint_every", "audit_n_render", "figures", "device", "threads")


def train(cfg: JEPAConfig, *, out: str | Path | None = None, resume: str | Path | None = None, quiet: bool = True, mdp: Any = None) -> JEPAResult:
    """Train, checkpoint and audit; returns the run directory, summary, model and audit report.

    ``mdp``: a user's finite deterministic MDP (a tabular core, see
    :mod:`auxfn.jepa.user_mdp`) instead of the env ``cfg.env`` names; it is validated,
    and the run records the factory path of its class (or ``cfg.env`` when that is a
    factory path) so that audit/eval can rebuild it.

    ``resume``: a run directory to continue from its last checkpoint (``steps`` may be
    raised); the continued run draws exactly the batches the uninterrupted one would.
    Raises :class:`~auxfn.core.errors.DivergedError` when a loss becomes non-finite.
    """
    device = resolve_device(cfg.device)
    with torch_threads(cfg.threads if device.type == "cpu" else 0):
        return _train(cfg, device, out=out, resume=resume, quiet=quiet, mdp=mdp)


def _resolve_mdp(cfg: JEPAConfig, mdp: Any) -> tuple[JEPAConfig, TabularMDP, dict[str, Any] | None]:
    """The config with ``env`` naming how to rebuild the MDP, the core, and the record for mdp.json."""
    if mdp is None and not is_factory_path(cfg.env):
        return cfg, build_env(cfg), None
    if mdp is not None and not is_factory_path(cfg.env):
        path = factory_path(mdp)
        if path is None:
            raise MDPError(
                f"the MDP's class {type(mdp).__qualname__!r} is defined inside a function, so a run cannot record how to rebuild it "
                "for audit/eval: define it at module level, or set cfg.env to a factory path 'package.module:attr'"
            )
        cfg = dataclasses.replace(cfg, env=path)
    core = build_env(cfg, mdp)
    record = {
        "factory": cfg.env, "fingerprint": fingerprint(core, cfg.audit_aux),
        "n_states": int(core.n_states), "n_actions": int(core.n_actions), "obs_shape": [int(x) for x in core.obs_shape],
    }
    return cfg, core, record


def _train(cfg: JEPAConfig, device: torch.device, *, out, resume, quiet: bool, mdp: Any = None) -> JEPAResult:
    seed_everything(cfg.seed)
    cfg, core, mdp_record = _resolve_mdp(cfg, mdp)
    model = build_model(cfg, core).to(device)
    opt = _optimizer(model, cfg)
    sampler = _Sampler(core, cfg, device)
    # loss sums since the last logged row; checkpoints keep them, so a run stopped between two rows
    # (Ctrl-C stops at any step) logs the same averages after resuming
    acc: dict[str, float] = {}
    if resume is not None:
        ck = load_checkpoint(resume, {"model": model}, optimizers={"opt": opt}, config=cfg, ignore_fields=_RESUME_MAY_CHANGE, map_location=device)
        sampler.load(ck.state["sampler"])
        acc = dict(ck.state.get("log_acc", {}))
        run, start = Run.resume(resume, ck.step, config=cfg, quiet=quiet), ck.step
    else:
        name = cfg.env if mdp_record is None else cfg.env.split(":")[-1].split(".")[-1]
        run, start = Run.create("jepa", cfg, name=f"{cfg.mode}-{name}", out=out, quiet=quiet), 0
        if mdp_record is not None:
            (run.path / "mdp.json").write_text(json.dumps(mdp_record, indent=2) + "\n")

    def checkpoint(step: int) -> None:
        save_checkpoint(run.path, step, {"model": model}, optimizers={"opt": opt}, config=cfg, state={"sampler": sampler.state(), "log_acc": dict(acc)}, keep_last=2)

    t0 = time.perf_counter()
    with run, run.progress(cfg.steps, f"jepa {cfg.mode}", initial=start) as bar:
        with stop_at_step_boundary() as stop:  # Ctrl-C: stop after the current step, checkpoint there
            for step in range(start + 1, cfg.steps + 1):
                mode = _stage_mode(cfg, step)
                obs, a, obs2, p = sampler.batch()
                losses = jepa_losses(model, obs, a, obs2, p, mode=mode, c_p=cfg.c_p, vicreg_var=cfg.vicreg_var, vicreg_cov=cfg.vicreg_cov)
                if not torch.isfinite(losses["total"]):
                    raise run.diverged("loss/total", step)
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_([q for g in opt.param_groups for q in g["params"]], cfg.grad_clip)
                opt.step()
                if mode == "ema":
                    model.update_target(cfg.ema_tau)
                for k, v in losses.items():
                    acc[k] = acc.get(k, 0.0) + float(v.detach())
                acc["_n"] = acc.get("_n", 0) + 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    n = acc.pop("_n")
                    row = {f"loss/{k}": v / n for k, v in acc.items()}
                    with torch.no_grad():
                        z = model.encoder(obs)
                    row["eval/latent_std"] = float(z.std(0).mean())
                    row["time/steps_per_s"] = (step - start) / max(time.perf_counter() - t0, 1e-9)
                    run.log(step, row)
                    acc = {}
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.requested:
                    checkpoint(step)
                if stop.requested and step < cfg.steps:  # Ctrl-C: stopped at this step, checkpoint written
                    raise run.interrupted(step)
        summary, report = _finish(run, cfg, model, core, sampler.transitions(), time.perf_counter() - t0)
    return JEPAResult(run.path, summary, model, report, cfg)


def _finish(run: Run, cfg: JEPAConfig, model: JEPAModel, core: TabularMDP, transitions: np.ndarray | None, seconds: float | None = None):
    """Audit the model, write summary.json, figures and report.md."""
    from auxfn.core.plotting import save_figure, subplots
    from auxfn.jepa.auditing import audit, audit_figures

    model.eval()
    report = audit(model, core, cfg.audit_n_render, seed=cfg.seed, aux=cfg.audit_aux, train_aux=cfg.train_aux, random_dim=cfg.random_dim, random_seed=cfg.seed, transitions=transitions)
    summary = {
        "mode": cfg.mode, "env": cfg.env,
        "n_classes": report.n_classes, "n_separated_classes": report.n_separated_classes,
        "n_clusters": report.n_clusters, "n_clusters_centroids": report.collapse["n_clusters_centroids"],
        "n_clusters_silhouette": report.collapse["n_clusters_silhouette"], "cluster_class_ari": report.collapse["cluster_class_ari"],
        "n_collapsed_pairs": report.n_collapsed_pairs,
        "n_noneq_pairs": report.collapse["n_noneq_pairs"], "min_ratio": report.collapse["min_ratio"],
        **{k: v for k, v in report.collapse.items() if k.startswith("n_collapsed_pairs_")},
        "centroid_acc_heldout": report.centroid_acc_heldout, "healthy_collapse_index": report.collapse["healthy_collapse_index"],
        "rankme": report.rankme, **{f"probe/{k}": v for k, v in report.probes.items()},
        **{f"premise/{k}": v for k, v in report.premise.items()},
    }
    if seconds is not None:
        summary["time/train_s"] = seconds
    run.write_summary({**summary, "audit": report.to_dict()})
    figures = audit_figures(report, run.figures_dir) if cfg.figures else []
    rows = run.metrics()
    if rows and cfg.figures:
        fig, ax = subplots()
        steps = [r["step"] for r in rows]
        for key in ("loss/dyn", "loss/aux", "loss/total"):
            vals = [r.get(key) for r in rows]
            if any(v is not None and v > 0 for v in vals):
                ax.plot(steps, [v if v and v > 0 else math.nan for v in vals], label=key)
        ax.set(xlabel="step", ylabel="loss", yscale="log", title=f"{cfg.mode} on {cfg.env}")
        ax.legend()
        figures.append(save_figure(fig, run, "losses"))
    sections = [("Audit", report.details_markdown())]
    if cfg.figures:
        from auxfn.jepa.auditing import tsne_available

        if not tsne_available():
            sections.append(("Figures", "t-SNE figure skipped: scikit-learn is not installed (pip install 'auxfn[analysis]'); the PCA figure is drawn."))
    run.write_report(f"P-JEPA {cfg.mode} on {cfg.env}", report.headline(), sections=sections, figures=figures)
    return summary, report


def _rebuild_mdp(run: Run, cfg: JEPAConfig, mdp: Any = None) -> TabularMDP:
    """The run's MDP: built-in, re-imported from its factory path, or ``mdp``; checked against mdp.json."""
    if mdp is None and not is_factory_path(cfg.env):
        return build_env(cfg)
    try:
        core = build_env(cfg, mdp)
    except MDPError as err:
        raise MDPError(f"cannot rebuild the MDP of run {run.path}: {err}") from None
    rec_file = run.path / "mdp.json"
    if rec_file.exists():
        rec = json.loads(rec_file.read_text())
        got = fingerprint(core, cfg.audit_aux)
        if got != rec["fingerprint"]:
            raise MDPError(
                f"the MDP rebuilt for run {run.path} differs from the one it was trained on (fingerprint {got} != {rec['fingerprint']}; "
                f"trained on n_states={rec['n_states']}, n_actions={rec['n_actions']}, obs_shape={tuple(rec['obs_shape'])}, "
                f"now {core.n_states}, {core.n_actions}, {tuple(core.obs_shape)})"
            )
    return core


def load_run(run_dir: str | Path, device: str = "cpu", mdp: Any = None) -> tuple[JEPAConfig, JEPAModel, TabularMDP]:
    """The config, the model (weights of the last checkpoint) and the environment of a run.

    A run trained on a user MDP is rebuilt from its recorded factory path, or from ``mdp``
    when given; either must match the fingerprint in the run's mdp.json.
    """
    run = Run.open(run_dir)
    cfg = from_dict(JEPAConfig, run.metadata["config"])
    core = _rebuild_mdp(run, cfg, mdp)
    model = build_model(cfg, core).to(resolve_device(device))
    load_checkpoint(run.path, {"model": model}, restore_rng=False, map_location=device)
    model.eval()
    return cfg, model, core


def reaudit(run_dir: str | Path, n_render: int | None = None, mdp: Any = None) -> tuple[dict[str, Any], Any]:
    """Recompute a run's audit, summary, figures and report from its last checkpoint."""
    cfg, model, core = load_run(run_dir, mdp=mdp)
    if n_render is not None:
        cfg = from_dict(JEPAConfig, {**Run.open(run_dir).metadata["config"], "audit_n_render": n_render})
    run = Run.open(run_dir)
    with run, torch_threads(cfg.threads):  # the run's thread count: more threads than cores crawl on a busy machine
        from auxfn.core.checkpoint import latest

        state = __import__("json").loads((latest(run.path) / "state.json").read_text())["state"]
        seen = np.asarray(state["sampler"]["seen"], dtype=bool)
        table = transition_table(core)
        s, a = np.nonzero(seen)
        return _finish(run, cfg, model, core, np.stack([s, a, table[s, a]], axis=1))


PRESETS = {
    "quick": Preset("counting env, 16x16, slots, MLP encoder, 1500 steps of batch 128, lr 3e-3 (CPU, under a minute)", JEPAConfig(lr=3e-3)),
    "paper": Preset(
        "the reference hyperparameters: 64x64 resample, latent 256, batch 256, 300k steps, lr 3e-4 (encoder x0.3), c_p 5, two-hot (GPU)",
        JEPAConfig(img=64, nuisance="resample", arch="cnn", latent_dim=256, hidden=512, batch_size=256, steps=300_000, lr=3e-4, enc_lr_scale=0.3, aux_loss="twohot", c_p=5.0, grad_clip=200.0, log_every=500, checkpoint_every=10_000, device="auto"),
    ),
}
