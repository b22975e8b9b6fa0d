"""Resume is bit-identical: 20 steps in one go == 10 steps, save, a fresh process loads and runs 10 more."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from auxfn.core.checkpoint import latest
from auxfn.core.runs import read_metrics
from auxfn.core.seeding import capture_rng_state, make_generator, restore_rng_state, seed_everything

TOY_DIR = Path(__file__).parent


def _run_toy(args: str, tmp: Path) -> None:
    script = f"import sys; sys.path.insert(0, {str(TOY_DIR)!r}); import toy_method as t; {args}"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr


def test_resume_in_fresh_process_is_bit_identical(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _run_toy(f"t.train(t.ToyConfig(steps=20, checkpoint_every=10), out={str(full)!r})", tmp_path)
    _run_toy(f"t.train(t.ToyConfig(steps=10, checkpoint_every=10), out={str(part)!r})", tmp_path)
    _run_toy(f"t.train(t.ToyConfig(steps=20, checkpoint_every=10), resume={str(part)!r})", tmp_path)

    a = load_file(str(latest(full) / "model.safetensors"))
    b = load_file(str(latest(part) / "model.safetensors"))
    assert latest(full).name == latest(part).name == "step_00000020"
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the metric logs agree step by step, and hold each step exactly once
    ra, rb = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in rb] == list(range(1, 21))
    assert [r["loss/total"] for r in ra] == [r["loss/total"] for r in rb]


def test_resume_drops_metric_rows_logged_after_the_checkpoint(tmp_path):
    import toy_method as t

    run = tmp_path / "r"
    t.train(t.ToyConfig(steps=13, checkpoint_every=5), out=run)
    # checkpoints at 5, 10 and 13 (final); keep_last=2 leaves 10 and 13. Pretend the run died after 12:
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_00000013")
    t.train(t.ToyConfig(steps=15, checkpoint_every=5), resume=run)
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 16))


def test_capture_and_restore_rng_state_reproduces_every_source():
    seed_everything(123)
    gen = make_generator(7)
    state = capture_rng_state({"data": gen})
    first = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    for _ in range(3):  # move everything on
        random.random(), np.random.rand(), torch.rand(5), torch.rand(5, generator=gen)
    restore_rng_state(state, {"data": gen})
    second = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


def test_seed_everything_is_repeatable_and_checks_its_input():
    import pytest

    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        seed_everything(-1)


def test_torch_threads_restores_the_callers_setting():
    import pytest

    from auxfn.core.seeding import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a non-negative integer"):
        with torch_threads(-1):
            pass
