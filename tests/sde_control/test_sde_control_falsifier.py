"""The falsifier finds violations that random sampling misses, and its counterexamples join training."""

from __future__ import annotations

import dataclasses

import torch

from auxfn.sde_control import Box, preset, train
from auxfn.sde_control.falsifier import find_counterexamples


def test_finds_a_thin_violation_set():
    # r(x) = x1 + x2 - 1.9 > 0 only in a corner of [-1, 1]^2 of area 0.005 (0.125 % of the box)
    box = Box.cube(2, -1.0, 1.0)
    r = lambda x: x[:, 0] + x[:, 1] - 1.9  # noqa: E731
    random = box.sample(200, generator=torch.Generator().manual_seed(0))
    assert int((r(random) > 0).sum()) == 0  # 200 random states: none violates
    found = find_counterexamples(r, box, n_starts=200, steps=40, step_size=0.02, max_out=50, seed=0)
    assert found.shape == (50, 2)
    assert (r(found) > 0).all() and (found.abs() <= 1.0).all()
    assert (r(found)[:-1] >= r(found)[1:]).all()  # worst first


def test_learner_falsifier_loop_adds_counterexamples(tmp_path):
    cfg = dataclasses.replace(preset("harmonic", "es-quad", "quick"), falsifier_every=10, falsifier_starts=300,
                              eval_paths=0, certify_samples=5000, max_iters=300, lr=0.1,
                              lr_schedule="constant")
    res = train(cfg, out=tmp_path / "run")
    s = res.summary
    assert s["n_train"] > cfg.n_samples  # counterexamples were found and added
    assert s["reached_zero"] and s["heldout_violation_rate"] < 0.01
    rows = [r for r in res.run_dir.joinpath("metrics.jsonl").read_text().splitlines() if "falsifier/found" in r]
    assert rows
