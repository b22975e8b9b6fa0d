"""A user's own system: reloaded, simulated, evaluated and resumed from its run folder when it comes
from a factory; required again (never silently replaced by a built-in system) when it came as an object."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from auxfn.cli import main
from auxfn.core.errors import ConfigError, UserError
from auxfn.sde_control import ControlConfig, train
from auxfn.sde_control.training import load_run

HERE = Path(__file__).parent
SHORT = dict(method="as", alpha=0.5, n_samples=300, max_iters=300, certify_samples=2000, eval_paths=4,
             eval_T=1.0, eval_dt=1e-2)


def _same_controller(a, b):
    x = torch.linspace(-4, 4, 22).reshape(11, 2)
    torch.testing.assert_close(a.controller(x.to(next(a.controller.parameters()).dtype)),
                               b.controller(x.to(next(b.controller.parameters()).dtype)), rtol=0, atol=0)


def test_a_system_object_must_be_passed_again_and_is_not_modified(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))
    import sde_user_helpers as h

    spiral = h.make_spiral()
    run = tmp_path / "run"
    res = train(ControlConfig(**SHORT, control_entry="drift"), system=spiral, out=run)
    assert res.summary["system"] == "spiral" and res.summary["reached_zero"]
    assert spiral.control_entry == "diffusion" and spiral.controller is None  # the user's object is untouched
    meta = json.loads((run / "config.json").read_text())
    assert meta["user_objects"]["system"] == "auxfn.sde_control.systems.ControlledSDE 'spiral', dim 2, scalar noise"
    # before, load_run rebuilt the config's built-in system (the 2-d harmonic oscillator) without a word
    with pytest.raises(UserError, match=r"trained with a system object .* pass system= to load_run"):
        load_run(run)
    capsys.readouterr()
    assert main(["sde-control", "simulate", str(run), "--paths", "2", "--T", "0.1"]) == 2
    assert "system_factory" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"pass system= to train \(resume\)"):
        train(ControlConfig(**SHORT, control_entry="drift"), resume=run)
    cfg, base, sde, V = load_run(run, system=h.make_spiral())
    assert base.name == "spiral" and sde.control_entry == "drift" and V is None
    _same_controller(sde, res.sde)
    # the dynamics are the spiral's: f0(x) = A x
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(base.with_controller(None).f(0.0, x), x @ h.A.double().T)


def test_a_system_factory_makes_the_run_rebuild_itself_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))
    run = tmp_path / "run"
    args = ["--alpha", "0.5", "--n-samples", "300", "--max-iters", "3", "--certify-samples", "2000",
            "--eval-paths", "4", "--eval-T", "1.0", "--eval-dt", "0.01", "--quiet"]
    assert main(["sde-control", "train", "--system-factory", "sde_user_helpers:make_spiral", "--system", "spiral",
                 "--method", "as", *args, "--out", str(run)]) == 0
    cfg, base, sde, _ = load_run(run)
    assert cfg.system == "spiral" and cfg.system_factory == "sde_user_helpers:make_spiral" and base.name == "spiral"
    assert json.loads((run / "summary.json").read_text())["iters"] == 3
    # resume from the folder alone, to the stop at zero violation
    assert main(["sde-control", "train", "--resume", str(run), "--max-iters", "300", "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["system"] == "spiral" and summary["reached_zero"] and summary["iters"] > 3
    # the same run trained in one go reaches the same controller
    whole = train(replace(cfg, max_iters=300), out=tmp_path / "whole")
    _same_controller(load_run(run)[2], whole.sde)
    capsys.readouterr()
    assert main(["sde-control", "simulate", str(run), "--paths", "3", "--T", "0.5", "--dt", "0.01"]) == 0
    assert "controlled: tau_mean_norm=" in capsys.readouterr().out
    assert json.loads((run / "simulate.json").read_text())["args"]["paths"] == 3
    assert main(["sde-control", "eval", str(run)]) == 0
    with pytest.raises(UserError, match="do not pass system="):
        load_run(run, system=base)


def test_user_system_errors_name_what_is_wrong(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))
    import sde_user_helpers as h

    with pytest.raises(UserError, match=r"system_factory 'sde_user_helpers:not_a_system' returned dict, not a ControlledSDE"):
        train(ControlConfig(**SHORT, system="x", system_factory="sde_user_helpers:not_a_system"), out=tmp_path / "a")
    with pytest.raises(UserError, match=r"system_factory 'sde_user_helpers:gone' cannot be imported"):
        train(ControlConfig(**SHORT, system="x", system_factory="sde_user_helpers:gone"), out=tmp_path / "b")
    with pytest.raises(UserError, match="either system= or config field system_factory"):
        train(ControlConfig(**SHORT, system="x", system_factory="sde_user_helpers:make_spiral"), system=h.make_spiral())
    with pytest.raises(UserError, match="system= must be an auxfn.sde_control.ControlledSDE, got dict"):
        train(ControlConfig(**SHORT), system={"dim": 2})
    with pytest.raises(ConfigError, match=r"config field 'system_factory' = 'spiral' is not an import path"):
        ControlConfig(system_factory="spiral")
    with pytest.raises(ConfigError, match=r"config field 'system' = 'my spiral' is not a name"):
        ControlConfig(system="my spiral", system_factory="sde_user_helpers:make_spiral")
    with pytest.raises(ConfigError, match=r"config field 'system' = 'spiral' is not allowed"):
        ControlConfig(system="spiral")  # without a factory, only the built-in systems
    capsys.readouterr()
    assert main(["sde-control", "train", "--system", "spiral", "--out", str(tmp_path / "c")]) == 2
    assert "--system-factory package.module:callable" in capsys.readouterr().err
