"""A user's own cell and task: factories recorded in the run, reloaded by eval/analyze; torch cells
through TorchCell; saved fixed points round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from auxfn.cli import main
from auxfn.core.errors import UserError
from auxfn.jslds import JSLDS, TorchCell
from auxfn.jslds.analysis import FixedPoints, find_fixed_points
from auxfn.jslds.train import JSLDSConfig, load_run, train

HERE = Path(__file__).parent




def _cfg(**kw):
    base = dict(cell_factory="jslds_user_helpers:make_cell", task_factory="jslds_user_helpers:make_task", n_state=6,
                steps=40, batch_size=16, lr=0.02, eval_every=40, checkpoint_every=20, eval_batch_size=32, log_every=5)
    base.update(kw)
    return JSLDSConfig(**base)


def test_user_cell_and_task_factories_reload_through_eval_and_analyze(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))
    run = tmp_path / "run"
    res = train(_cfg(), out=run)
    assert type(res.model.cell).__name__ == "LeakyTanhCell"
    assert res.summary["final_loss"] < 0.5 * res.summary["first_loss"]
    cfg, model, task = load_run(run)
    assert cfg.cell_factory == "jslds_user_helpers:make_cell" and type(task).__name__ == "HoldFirstTask"
    for (k, p), q in zip(model.state_dict().items(), res.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=k)
    assert main(["jslds", "eval", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["eval/mse_rnn"] == pytest.approx(res.summary["mse_rnn"], rel=1e-6)
    assert main(["jslds", "analyze", str(run), "--candidates", "16", "--fp-iters", "100"]) == 0
    fps = FixedPoints.load(run / "fixed_points")
    assert fps.points.shape[1] == 6 and fps.info["n_initial_states"] == 16
    if len(fps):  # what was saved is what the finder keeps: q below its tolerance
        assert (fps.q < fps.info["q_tol"]).all()


def test_unimportable_factory_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="cell_factory 'no_such_module_xyz:make' cannot be imported.*PYTHONPATH"):
        train(_cfg(cell_factory="no_such_module_xyz:make", task_factory=""), out=tmp_path / "a")
    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(UserError, match="has no attribute 'missing'"):
        train(_cfg(task_factory="jslds_user_helpers:missing"), out=tmp_path / "b")
    with pytest.raises(UserError, match="is not callable"):
        train(_cfg(task_factory="jslds_user_helpers:not_callable"), out=tmp_path / "c")
    with pytest.raises(ValueError, match="cell_factory"):
        _cfg(cell_factory="not a path")
    # a run whose factory module has gone: eval exits 2 naming the path
    run = tmp_path / "run"
    train(_cfg(steps=5, checkpoint_every=5, eval_every=5), out=run)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["cell_factory"] = "gone_module_abc:make_cell"
    (run / "config.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["jslds", "eval", str(run)]) == 2
    assert "gone_module_abc:make_cell" in capsys.readouterr().err


def test_objects_passed_to_train_must_be_passed_to_load_run(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.syspath_prepend(str(HERE))
    import jslds_user_helpers as h

    run = tmp_path / "run"
    cfg = JSLDSConfig(n_state=5, steps=5, batch_size=8, eval_every=5, checkpoint_every=5, eval_batch_size=8)
    res = train(cfg, out=run, task=h.make_task(), cell=h.make_cell(5, 1))
    with pytest.raises(UserError, match="pass task= to load_run"):
        load_run(run)
    with pytest.raises(UserError, match="pass cell= to load_run"):
        load_run(run, task=h.make_task())
    with pytest.raises(UserError, match="either cell= or config field cell_factory"):
        train(_cfg(), out=tmp_path / "x", cell=h.make_cell(6, 1))
    _, model, _ = load_run(run, task=h.make_task(), cell=h.make_cell(5, 1))
    torch.testing.assert_close(model.cell.W, res.model.cell.W)
    # resuming without the objects would train the built-in cell and task on these weights
    with pytest.raises(UserError, match=r"pass task= to train \(resume\)"):
        train(replace(cfg, steps=7), resume=run)
    assert train(replace(cfg, steps=7), resume=run, task=h.make_task(), cell=h.make_cell(5, 1)).summary["steps"] == 7


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_torch_cells_through_the_adapter(kind, tmp_path, monkeypatch):
    """JSLDS(TorchCell(nn.GRUCell / nn.RNNCell)): the RNN recurrence is torch's own, and it trains."""
    torch.manual_seed(0)
    tc = nn.GRUCell(6, 7) if kind == "gru" else nn.RNNCell(6, 7)
    model = JSLDS(TorchCell(tc), n_out=3)
    x = torch.randn(4, 5, 6)
    tr = model(x)
    h = model.h0.expand(4, 7)
    for t in range(5):
        h = tc(x[:, t], h)
        torch.testing.assert_close(tr.h[:, t], h)
    assert torch.isfinite(tr.a).all() and tr.F_e.shape == (4, 5, 7)
    monkeypatch.syspath_prepend(str(HERE))
    import jslds_user_helpers as h

    cfg = JSLDSConfig(n_state=7, steps=40, batch_size=16, eval_every=40, checkpoint_every=40, log_every=5, eval_batch_size=16)
    res = train(cfg, out=tmp_path / "run", task=h.make_task(), cell=TorchCell(nn.GRUCell(1, 7) if kind == "gru" else nn.RNNCell(1, 7)))
    assert res.summary["final_loss"] < 0.5 * res.summary["first_loss"]


def test_fixed_points_save_load_round_trip(tmp_path):
    """Known system: F(h) = tanh(W h) with W = diag(2, 0.5) has fixed points 0 and (+-h1, 0)
    where h1 = tanh(2 h1); every tensor, the complex spectra and the info come back exactly."""

    class Diag(nn.Module):
        n_state, n_input = 2, 1

        def forward(self, h, x):
            return torch.tanh(h * torch.tensor([2.0, 0.5], dtype=h.dtype) + x)

    init = torch.tensor([[1.0, 0.3], [-0.8, -0.2], [0.05, 0.1]], dtype=torch.float64)
    fps = find_fixed_points(Diag(), init, torch.zeros(1, dtype=torch.float64), lr=0.05, max_iters=500, q_tol=1e-20,
                            eigenvectors=True)
    assert len(fps) == 3
    fps.save(tmp_path / "fp")
    back = FixedPoints.load(tmp_path / "fp")
    for name in ("points", "x_star", "q", "J_h", "J_x", "eigvals", "right", "left"):
        a, b = getattr(fps, name), getattr(back, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert back.info == json.loads(json.dumps(fps.info)) and back.stability() == fps.stability()
    assert sorted(back.stability()) == ["saddle-1", "stable", "stable"]
    with pytest.raises(FileNotFoundError, match="no saved fixed points"):
        FixedPoints.load(tmp_path / "nothing")


def test_runs_without_the_factory_fields_still_load_and_resume(tmp_path):
    """Checkpoints written before cell_factory/task_factory existed: load_run and resume accept them."""
    from dataclasses import replace

    from auxfn.core.checkpoint import list_checkpoints

    run = tmp_path / "run"
    cfg = JSLDSConfig(n_state=5, steps=4, batch_size=8, eval_every=4, checkpoint_every=2, eval_batch_size=8)
    train(cfg, out=run)
    for ck in list_checkpoints(run):
        state = json.loads((ck / "state.json").read_text())
        del state["config"]["cell_factory"], state["config"]["task_factory"]
        (ck / "state.json").write_text(json.dumps(state))
    load_run(run)
    res = train(replace(cfg, steps=6), resume=run)
    assert res.summary["steps"] == 6
    with pytest.raises(UserError, match="cell_factory"):  # a factory that differs is still a mismatch
        train(replace(cfg, steps=8, cell_factory="jslds_user_helpers:make_cell"), resume=run)
