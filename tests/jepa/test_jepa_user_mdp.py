"""A user's own finite deterministic MDP: train(cfg, mdp=...) or cfg.env = "module:attr", audit, reload, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from auxfn.core.config import ConfigError
from auxfn.jepa.training import JEPAConfig, load_run, reaudit, train
from auxfn.jepa.user_mdp import MDPError, as_tabular_mdp, validate_mdp

HERE = str(Path(__file__).parent)
MOD = "jepa_user_mdp_helpers"
SMALL = JEPAConfig(steps=250, batch_size=32, hidden=64, latent_dim=8, lr=3e-3, log_every=50, checkpoint_every=250, audit_n_render=4, figures=False)


@pytest.fixture
def helpers(monkeypatch):
    monkeypatch.syspath_prepend(HERE)
    import importlib

    return importlib.import_module(MOD)


def test_train_on_a_user_mdp_object_then_reload_and_audit(tmp_path, helpers, capsys):
    res = train(SMALL, mdp=helpers.LineMDP(), out=tmp_path / "line")
    cfg = json.loads((res.run_dir / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    assert cfg["env"] == f"{MOD}:LineMDP"
    rec = json.loads((res.run_dir / "mdp.json").read_text())
    assert rec["n_states"] == 6 and rec["n_actions"] == 2 and rec["obs_shape"] == [1, 4, 6]
    rep = res.report
    assert rep.n_classes == 6  # reward at the end of a line tells every state apart
    # 250 joint steps: every class apart and the premise approximately met
    assert rep.n_collapsed_pairs == 0 and rep.premise["dyn_mean"] < 0.05 and rep.premise["aux_mean"] < 0.05
    assert "nuisance:brightness" in rep.probes
    # reload from the recorded factory path: same weights, same audit numbers
    cfg2, model, core = load_run(res.run_dir)
    assert core.n_states == 6 and cfg2.env == f"{MOD}:LineMDP"
    _, rep2 = reaudit(res.run_dir)
    assert rep2.n_collapsed_pairs == rep.n_collapsed_pairs and rep2.collapse["min_ratio"] == pytest.approx(rep.collapse["min_ratio"])
    from auxfn.cli import main

    assert main(["jepa", "audit", str(res.run_dir), "--n-render", "3"]) == 0
    assert "collapsed non-equivalent pairs" in capsys.readouterr().out
    # audit() takes the user's plain object directly too
    from auxfn.jepa.auditing import audit

    direct = audit(model, helpers.LineMDP(), 4)
    assert direct.n_classes == 6 and "nuisance:brightness" in direct.probes


def test_factory_path_in_config_and_reload_errors(tmp_path, helpers, monkeypatch):
    cfg = JEPAConfig(env=f"{MOD}:make_line", steps=4, batch_size=8, hidden=16, latent_dim=4, audit_n_render=2, figures=False)
    res = train(cfg, out=tmp_path / "f")
    assert res.report.n_classes == 5 and (res.run_dir / "mdp.json").exists()
    from auxfn.cli import main

    out = tmp_path / "cli"
    assert main(["jepa", "train", "--env", f"{MOD}:make_line", "--steps", "4", "--batch-size", "8", "--hidden", "16", "--latent-dim", "4",
                 "--audit-n-render", "2", "--no-figures", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_classes"] == 5
    assert main(["jepa", "train", "--env", f"{MOD}:make_line", "--aux", "dense", "--steps", "2", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    # a different MDP under the same name: the fingerprint check refuses it
    with pytest.raises(MDPError, match="differs from the one it was trained on"):
        load_run(res.run_dir, mdp=helpers.LineMDP(6))
    assert load_run(res.run_dir, mdp=helpers.LineMDP(5))[2].n_states == 5
    # the module can no longer be imported: a clear error that says what to do
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != HERE])
    monkeypatch.delitem(sys.modules, MOD)
    with pytest.raises(MDPError, match=r"cannot rebuild the MDP of run .*cannot be imported.*PYTHONPATH"):
        load_run(res.run_dir)
    assert main(["jepa", "audit", str(res.run_dir)]) == 2


def test_user_mdp_validation_errors(helpers):
    validate_mdp(as_tabular_mdp(helpers.LineMDP()))  # the good one passes
    with pytest.raises(MDPError, match=r"aux\(s, 'reward'\).*shape \(6,\) or \(6, k\)"):
        validate_mdp(as_tabular_mdp(helpers.WrongAuxShape()))
    with pytest.raises(MDPError, match="not deterministic"):
        validate_mdp(as_tabular_mdp(helpers.Flaky()))
    with pytest.raises(MDPError, match="does n_actions = 3 match the actions step"):
        validate_mdp(as_tabular_mdp(helpers.TooManyActions()))
    with pytest.raises(MDPError, match=r"values in \[0, 1\]"):
        validate_mdp(as_tabular_mdp(helpers.BadRender()))
    with pytest.raises(MDPError, match="lacks render"):
        as_tabular_mdp(type("NoRender", (), {"n_states": 2, "n_actions": 1, "step": None, "aux": None})())
    with pytest.raises(MDPError, match="n_states must be an integer >= 1"):
        as_tabular_mdp(type("Empty", (), {"n_states": 0, "n_actions": 1, "step": None, "aux": None, "render": None})())
    with pytest.raises(MDPError, match="aux kind 'dense' is not known"):
        train(JEPAConfig(aux="dense", steps=2), mdp=helpers.LineMDP())


def test_wrong_user_mdps_fail_before_training(tmp_path, helpers):
    for bad in (helpers.WrongAuxShape(), helpers.Flaky(), helpers.TooManyActions()):
        with pytest.raises(MDPError):
            train(SMALL, mdp=bad, out=tmp_path / type(bad).__name__)
        assert not (tmp_path / type(bad).__name__).exists()

    class Local(helpers.LineMDP):
        pass

    with pytest.raises(MDPError, match="defined inside a function"):
        train(SMALL, mdp=Local(), out=tmp_path / "local")


def test_config_env_must_be_builtin_or_factory_path():
    with pytest.raises(ConfigError, match="'env' = 'maze'"):
        JEPAConfig(env="maze")
    JEPAConfig(env="pkg.mod:Factory", aux="my_kind", audit_aux="my_kind")  # aux kinds are checked against the MDP later
    with pytest.raises(ConfigError, match="'audit_aux' = 'random'"):
        JEPAConfig(env="pkg.mod:Factory", audit_aux="random")


def test_adapter_reads_obs_shape_and_defaults(helpers):
    core = as_tabular_mdp(helpers.LineMDP(4))
    assert core.obs_shape == (1, 4, 4) and core.aux_kinds == ("reward", "none")
    np.testing.assert_array_equal(core.aux(np.arange(4), "reward")[:, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(core.step(np.arange(4), np.ones(4, dtype=int)), [1, 2, 3, 3])
