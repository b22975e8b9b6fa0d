"""Checkpoints: round trip, config checks, atomic writes, pruning, no pickled weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from auxfn.core import checkpoint as ckpt_mod
from auxfn.core.checkpoint import latest, list_checkpoints, load_checkpoint, save_checkpoint
from auxfn.core.errors import CheckpointMismatchError, UserError

TOY_DIR = Path(__file__).parent


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))


def _trained(seed: int = 0):
    model = _model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for _ in range(3):
        loss = model(torch.randn(4, 3)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_model_adam_scheduler_and_state(tmp_path):
    model, opt, sched = _trained()
    cfg = {"lr": 0.01, "sizes": [3, 5, 2]}
    path = save_checkpoint(
        tmp_path, 3, {"net": model}, optimizers={"adam": opt}, schedulers={"lr": sched},
        config=cfg, state={"best": 1.5, "note": "x"},
    )
    assert path == tmp_path / "checkpoints" / "step_00000003"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optim.pt", "state.json"]

    model2 = _model(seed=1)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, gamma=0.9)
    ck = load_checkpoint(tmp_path, {"net": model2}, optimizers={"adam": opt2}, schedulers={"lr": sched2}, config=cfg)
    assert ck.step == 3 and ck.state == {"best": 1.5, "note": "x"} and ck.config == cfg
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])
    assert sched2.state_dict() == sched.state_dict()

    # one more identical step from both gives identical parameters
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_weights_are_safetensors_and_state_is_json(tmp_path):
    model, opt, _ = _trained()
    path = save_checkpoint(tmp_path, 1, {"net": model}, optimizers={"adam": opt})
    tensors = load_file(str(path / "model.safetensors"))
    assert set(tensors) == {f"net.{k}" for k in model.state_dict()}
    state = json.loads((path / "state.json").read_text())
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    torch.load(path / "optim.pt", weights_only=True)  # loads without unpickling arbitrary objects


def test_tied_weights_can_be_saved(tmp_path):
    emb = torch.nn.Embedding(5, 4)
    head = torch.nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path, 1, {"m": model})
    fresh = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 4), "head": torch.nn.Linear(4, 5, bias=False)})
    load_checkpoint(tmp_path, {"m": fresh})
    assert torch.equal(fresh["head"].weight, emb.weight)


def test_config_mismatch_is_a_clear_error(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, 5, {"net": model}, config={"lr": 0.01, "steps": 10, "opt": {"eps": 0.1}})
    with pytest.raises(CheckpointMismatchError, match=r"different config \(lr: checkpoint 0.01 vs now 0.02"):
        load_checkpoint(tmp_path, {"net": _model()}, config={"lr": 0.02, "steps": 10, "opt": {"eps": 0.1}})
    with pytest.raises(CheckpointMismatchError, match=r"opt.eps"):
        load_checkpoint(tmp_path, {"net": _model()}, config={"lr": 0.01, "steps": 10, "opt": {"eps": 1.0}})
    # fields a resume may change are ignored on request
    load_checkpoint(tmp_path, {"net": _model()}, config={"lr": 0.01, "steps": 99, "opt": {"eps": 0.1}}, ignore_fields=("steps",))


def test_a_field_newer_than_the_checkpoint_matches_only_at_its_default(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        lr: float = 0.01
        factory: str = ""  # added after the checkpoint below was written
        widths: tuple[int, ...] = (4, 4)

    save_checkpoint(tmp_path, 1, {"net": _model()}, config={"lr": 0.01})
    load_checkpoint(tmp_path, {"net": _model()}, config=Cfg())
    with pytest.raises(CheckpointMismatchError, match=r"factory: checkpoint '<absent>' vs now 'pkg.mod:make'"):
        load_checkpoint(tmp_path, {"net": _model()}, config=Cfg(factory="pkg.mod:make"))
    with pytest.raises(CheckpointMismatchError, match=r"widths"):
        load_checkpoint(tmp_path, {"net": _model()}, config=Cfg(widths=(3,)))
    # a plain dict has no defaults: an absent field is a difference
    with pytest.raises(CheckpointMismatchError, match=r"factory"):
        load_checkpoint(tmp_path, {"net": _model()}, config={"lr": 0.01, "factory": ""})


def test_wrong_module_shape_or_name_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path, 1, {"net": _model()})
    wrong = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with pytest.raises(CheckpointMismatchError, match="does not fit module 'net'"):
        load_checkpoint(tmp_path, {"net": wrong})
    with pytest.raises(CheckpointMismatchError, match="no weights for module 'other'"):
        load_checkpoint(tmp_path, {"other": _model()})
    with pytest.raises(CheckpointMismatchError, match="no optimizer state"):
        m = _model()
        load_checkpoint(tmp_path, {"net": m}, optimizers={"adam": torch.optim.Adam(m.parameters())})
    with pytest.raises(UserError, match="no checkpoint found"):
        load_checkpoint(tmp_path / "nothing", {"net": _model()})


def test_keep_last_and_latest(tmp_path):
    model = _model()
    for step in (1, 2, 3, 10, 20):
        save_checkpoint(tmp_path, step, {"net": model}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010", "step_00000020"]
    assert latest(tmp_path) == tmp_path / "checkpoints" / "step_00000020"
    assert latest(tmp_path / "checkpoints") == latest(tmp_path)
    assert latest(tmp_path / "missing") is None
    # re-saving an existing step replaces it
    with torch.no_grad():
        model[0].weight.fill_(7.0)
    save_checkpoint(tmp_path, 20, {"net": model}, keep_last=2)
    fresh = _model(3)
    load_checkpoint(tmp_path, {"net": fresh})
    assert torch.all(fresh[0].weight == 7.0)


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    good = save_checkpoint(tmp_path, 1, {"net": model}, state={"tag": "good"})
    with torch.no_grad():
        model[0].weight.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)  # weights written, optimizer state fails
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, 2, {"net": model}, optimizers={"a": torch.optim.SGD(model.parameters(), lr=0.1)})
    assert latest(tmp_path) == good
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    ck = load_checkpoint(tmp_path, {"net": _model()})
    assert ck.step == 1 and ck.state == {"tag": "good"}


def test_killed_process_mid_save_keeps_previous_checkpoint(tmp_path):
    """A process killed between writing the files and publishing them leaves the old checkpoint."""
    script = f"""
import os, sys, torch
sys.path.insert(0, {str(TOY_DIR)!r})
from auxfn.core import checkpoint as c
m = torch.nn.Linear(2, 2)
c.save_checkpoint({str(tmp_path)!r}, 1, {{"net": m}})
real_replace = os.replace
def die(src, dst):
    if ".tmp-" in str(src):
        os._exit(9)  # hard kill: no cleanup, no exception handlers
    real_replace(src, dst)
os.replace = die
c.save_checkpoint({str(tmp_path)!r}, 2, {{"net": m}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    root = tmp_path / "checkpoints"
    assert list(root.glob(".tmp-*")), "the killed save should have left its temporary folder"
    assert latest(tmp_path) == root / "step_00000001"
    load_checkpoint(tmp_path, {"net": torch.nn.Linear(2, 2)})
    # the next successful save removes the leftover
    save_checkpoint(tmp_path, 3, {"net": torch.nn.Linear(2, 2)})
    assert not list(root.glob(".tmp-*"))
    assert os.path.isdir(root / "step_00000003")
