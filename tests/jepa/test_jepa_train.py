"""train(): the short joint-vs-dyn_only result, two-stage freezing, resume, divergence, CLI, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auxfn.core.config import ConfigError
from auxfn.core.errors import DivergedError, Interrupted
from auxfn.jepa import training as train_mod
from auxfn.jepa.auditing import audit
from auxfn.jepa.envs import TabularMDP
from auxfn.jepa.training import JEPAConfig, load_run, train

TINY = JEPAConfig(steps=20, batch_size=32, hidden=64, latent_dim=8, log_every=5, checkpoint_every=10, audit_n_render=2, figures=False)


def test_joint_separates_classes_and_dyn_only_collapses(tmp_path):
    """Counting env, 16x16, slots: joint keeps >= 8 of 9 classes apart, dyn_only leaves < 3."""
    base = JEPAConfig(steps=300, batch_size=64, lr=3e-3, audit_n_render=4, log_every=100, checkpoint_every=1000)
    joint = train(base, out=tmp_path / "joint")
    dyn = train(dataclasses.replace(base, mode="dyn_only", steps=600, batch_size=32, figures=False), out=tmp_path / "dyn")
    assert joint.report.n_classes == 9
    assert joint.report.n_separated_classes >= 8 and joint.report.n_collapsed_pairs <= 1
    assert dyn.report.n_separated_classes < 3 and dyn.report.n_collapsed_pairs >= 27  # of 36
    assert joint.report.premise["dyn_mean"] < 0.05  # the premise is approximately met
    for f in ("summary.json", "report.md", "metrics.jsonl", "figures/pca.png", "figures/distance_vs_depth.png", "figures/losses.png"):
        assert (joint.run_dir / f).exists(), f


def _encoder_weights(ck_dir):
    return {k: v for k, v in load_file(str(ck_dir / "model.safetensors")).items() if k.startswith("model.encoder.")}


@pytest.mark.parametrize("order", ["aux_then_dyn", "dyn_then_aux"])
def test_two_stage_freezes_the_encoder_after_stage_one(tmp_path, order):
    cfg = dataclasses.replace(TINY, mode="two_stage", two_stage_order=order, stage1_fraction=0.5, audit_n_render=2)
    res = train(cfg, out=tmp_path / "r")
    ck = sorted((res.run_dir / "checkpoints").iterdir())
    first, last = _encoder_weights(ck[0]), _encoder_weights(ck[-1])  # steps 10 (end of stage 1) and 20
    assert all(torch.equal(first[k], last[k]) for k in first)
    heads = {k: v for k, v in load_file(str(ck[-1] / "model.safetensors")).items() if "transition" in k or "aux_head" in k}
    heads0 = {k: v for k, v in load_file(str(ck[0] / "model.safetensors")).items() if k in heads}
    assert any(not torch.equal(heads[k], heads0[k]) for k in heads)  # the heads kept learning


def test_resume_matches_uninterrupted_run(tmp_path):
    full = train(TINY, out=tmp_path / "full")
    half = train(dataclasses.replace(TINY, steps=10), out=tmp_path / "half")
    resumed = train(TINY, resume=half.run_dir)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (half.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows_full = [json.loads(x) for x in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss/total"] for r in rows] == [r["loss/total"] for r in rows_full]
    cfg, model, core = load_run(half.run_dir)
    assert dataclasses.replace(cfg, steps=TINY.steps) == TINY and core.n_states == 9


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    full = train(TINY, out=tmp_path / "full")
    real = train_mod.jepa_losses
    calls = {"n": 0}

    def ctrl_c_at_7(*args, **kwargs):  # Ctrl-C in the middle of step 7
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "jepa_losses", ctrl_c_at_7)
    with pytest.raises(Interrupted) as err:
        train(TINY, out=tmp_path / "part")
    assert err.value.step == 7 and err.value.checkpoint.name == "step_00000007"  # checkpoints every 10
    monkeypatch.setattr(train_mod, "jepa_losses", real)
    resumed = train(TINY, resume=tmp_path / "part")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the row logged at step 10 averages steps 6-10 across the stop, as in the uninterrupted run
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    rows_full = [json.loads(x) for x in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss/total"] for r in rows] == [r["loss/total"] for r in rows_full]


def test_divergence_raises_with_last_checkpoint(tmp_path, monkeypatch):
    real = train_mod.jepa_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] >= 13:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "jepa_losses", poisoned)
    with pytest.raises(DivergedError, match="step_00000010") as err:
        train(TINY, out=tmp_path / "div")
    assert err.value.step == 13


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="'mode' = 'teacher'"):
        JEPAConfig(mode="teacher")
    with pytest.raises(ConfigError, match="'aux' = 'xy' is not available for env 'counting'"):
        JEPAConfig(aux="xy")
    with pytest.raises(ConfigError, match="'stage1_fraction'"):
        JEPAConfig(stage1_fraction=1.0)


class _Flaky(TabularMDP):
    n_states, n_actions, obs_shape = 3, 2, (3, 16, 16)

    def __init__(self):
        self.calls = 0

    def _step(self, s, a):
        self.calls += 1
        return (s + self.calls) % 3

    def _aux(self, s, kind):
        return (s == 0).astype(float)


def test_audit_refuses_a_nondeterministic_mdp():
    model = train_mod.build_model(TINY, train_mod.build_env(TINY))
    with pytest.raises(ValueError, match="not deterministic"):
        audit(model, _Flaky())


def test_cli_train_and_audit(tmp_path, capsys):
    from auxfn.cli import main

    out = tmp_path / "cli"
    code = main(["jepa", "train", "--steps", "10", "--batch-size", "16", "--hidden", "32", "--latent-dim", "4", "--audit-n-render", "2", "--no-figures", "--env", "ring", "--ring-n", "5", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "ring" and summary["n_classes"] == 5
    assert main(["jepa", "audit", str(out), "--n-render", "3"]) == 0
    assert "collapsed non-equivalent pairs" in capsys.readouterr().out
    assert main(["jepa", "train", "--mode", "teacher"]) == 2
    assert main(["jepa", "audit", str(tmp_path / "missing")]) == 2
    np.testing.assert_equal(json.loads((out / "summary.json").read_text())["audit"]["settings"]["n_render"], 3)


def test_paper_preset_builds_and_takes_a_step():
    cfg = dataclasses.replace(train_mod.PRESETS["paper"].config, device="cpu")
    core = train_mod.build_env(cfg)
    model = train_mod.build_model(cfg, core)
    assert core.obs_shape == (3, 64, 64) and model.latent_dim == 256 and model.aux_loss == "twohot"
    sampler = train_mod._Sampler(core, dataclasses.replace(cfg, batch_size=4), torch.device("cpu"))
    out = train_mod.jepa_losses(model, *sampler.batch(), mode="joint", c_p=cfg.c_p)
    out["total"].backward()
    assert torch.isfinite(out["total"]) and model.encoder.net[1].weight.grad is not None


@pytest.mark.slow
def test_quick_preset_organises_latents_by_count(tmp_path):
    """The quick preset (1500 steps): 9/9 classes separated and held-out centroid accuracy >= 0.7."""
    res = train(train_mod.PRESETS["quick"].config, out=tmp_path / "q")
    assert res.report.n_separated_classes == 9 and res.report.n_collapsed_pairs == 0
    assert res.report.centroid_acc_heldout >= 0.7


def test_package_exports_functions_not_same_named_submodules():
    import inspect

    from auxfn.jepa import PRESETS, audit, train

    assert inspect.isfunction(train) and inspect.isfunction(audit) and "quick" in PRESETS
