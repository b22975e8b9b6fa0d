"""Run directories, metrics.jsonl, TensorBoard events, summaries, reports, progress, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from auxfn import __version__
from auxfn.core.errors import DivergedError, UserError
from auxfn.core.runs import MetricLogger, Run, jsonable, progress, read_metrics


def test_create_makes_the_documented_layout(tmp_path):
    run = Run.create("jepa", {"lr": 0.1, "seed": 3}, name="quick", root=tmp_path)
    assert run.path.parent == tmp_path / "jepa" and run.path.name.startswith("quick-")
    assert (run.path / "figures").is_dir() and (run.path / "checkpoints").is_dir()
    meta = json.loads((run.path / "config.json").read_text())
    assert meta["auxfn_version"] == __version__ and meta["method"] == "jepa"
    assert meta["config"] == {"lr": 0.1, "seed": 3}
    # a second run with the same name in the same second gets its own folder
    other = Run.create("jepa", {"lr": 0.1}, name="quick", root=tmp_path)
    assert other.path != run.path


def test_create_refuses_to_overwrite_a_run(tmp_path):
    Run.create("m", {}, out=tmp_path / "r")
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        Run.create("m", {}, out=tmp_path / "r")
    with pytest.raises(UserError, match="is not a run directory"):
        Run.open(tmp_path / "nope")


def test_user_objects_are_recorded_and_required_again(tmp_path):
    run = Run.create("m", {"lr": 0.1}, out=tmp_path / "r")
    assert run.user_objects == {}
    run.require_user_objects({"system": None}, to="load_run")  # nothing recorded: nothing required
    run.record_user_objects({})
    run.record_user_objects({"system": "mypkg.Spiral 'spiral'"})
    run.record_user_objects({"task": "mypkg.Task"})
    again = Run.open(run.path)
    assert again.user_objects == {"system": "mypkg.Spiral 'spiral'", "task": "mypkg.Task"}
    assert again.metadata["config"] == {"lr": 0.1}  # the rest of config.json is kept
    with pytest.raises(UserError, match=r"trained with a system object \(mypkg.Spiral 'spiral'\) passed to train\(\); "
                                        r"pass system= to load_run, or train with the config field system_factory="):
        again.require_user_objects({"system": None, "task": object()}, to="load_run")
    with pytest.raises(UserError, match=r"a task object .* pass task= to train \(resume\)"):
        again.require_user_objects({"system": object()}, to="train (resume)")
    again.require_user_objects({"system": object(), "task": object()}, to="load_run")


def test_metrics_jsonl_content_and_tensorboard(tmp_path):
    with Run.create("m", {"seed": 1}, out=tmp_path / "r") as run:
        run.log(1, {"loss/total": torch.tensor(2.5), "loss/aux": 0.5, "eval/acc": 1})
        run.log(2, {"loss/total": float("nan"), "time/step": 0.01})
    rows = read_metrics(run.path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss/total"] == 2.5 and rows[0]["loss/aux"] == 0.5 and rows[0]["eval/acc"] == 1
    assert rows[1]["loss/total"] is None  # non-finite values stay strict JSON
    assert all(r["time"] >= 0 for r in rows)
    for line in (run.path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    events = list(run.path.glob("events.out.tfevents.*"))
    assert events, "TensorBoard events should be written when tensorboard is installed"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("loss/aux")] == [0.5]


def test_logger_resume_truncates_later_rows(tmp_path):
    log = MetricLogger(tmp_path, tensorboard=False)
    for s in range(1, 6):
        log.log(s, {"x": s})
    log.close()
    log = MetricLogger(tmp_path, tensorboard=False, resume_step=3)
    log.log(4, {"x": 40})
    log.close()
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path)] == [(1, 1), (2, 2), (3, 3), (4, 40)]


def test_summary_report_and_diverged(tmp_path):
    from auxfn.core.checkpoint import save_checkpoint
    from auxfn.core.plotting import save_figure, subplots

    run = Run.create("m", {"seed": 0}, out=tmp_path / "r")
    run.write_summary({"acc": torch.tensor(0.75), "curve": torch.arange(3), "bad": math.inf})
    assert run.summary() == {"acc": 0.75, "curve": [0, 1, 2], "bad": None}

    fig, ax = subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, run, "curve")
    assert png == run.path / "figures" / "curve.png" and png.read_bytes()[:4] == b"\x89PNG"
    report = run.write_report("Title", {"acc": 0.75}, sections=[("Notes", "text")], figures=[png]).read_text()
    assert "# Title" in report and "| acc | 0.75 |" in report and "![curve](figures/curve.png)" in report

    err = run.diverged("loss/total", 7)
    assert isinstance(err, DivergedError) and "no checkpoint had been written yet" in str(err)
    save_checkpoint(run.path, 5, {"net": torch.nn.Linear(1, 1)})
    err = run.diverged("loss/total", 7)
    assert err.last_checkpoint == run.path / "checkpoints" / "step_00000005"
    assert "loss/total is not finite at step 7; last good checkpoint:" in str(err)


def test_save_figure_rejects_paths_and_uses_agg(tmp_path):
    import matplotlib

    from auxfn.core.plotting import save_figure, subplots

    assert matplotlib.get_backend().lower() == "agg"
    fig, _ = subplots()
    with pytest.raises(ValueError, match="plain file name"):
        save_figure(fig, tmp_path, "a/b")


def test_progress_is_silent_when_not_a_terminal(capsys):
    bar = progress(range(3), desc="x")
    assert bar.disable  # pytest captures stderr: not a terminal
    assert list(bar) == [0, 1, 2]
    assert progress(total=3, quiet=True).disable
    assert capsys.readouterr().err == ""


def test_jsonable_handles_numpy_paths_dataclasses():
    from dataclasses import dataclass

    import numpy as np

    @dataclass
    class D:
        p: Path

    assert jsonable({"a": np.float32(1.5), "b": np.arange(2), "c": D(Path("/x")), "d": (1, 2)}) == {
        "a": 1.5, "b": [0, 1], "c": {"p": "/x"}, "d": [1, 2],
    }


def test_ctrl_c_is_deferred_to_the_step_boundary_and_a_second_one_stops_at_once(capsys):
    import os
    import signal

    from auxfn.core.runs import stop_at_step_boundary

    before = signal.getsignal(signal.SIGINT)
    with stop_at_step_boundary() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C only asks
        assert stop.requested
        assert "stopping after this step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second stops at once
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):  # outside the block, Ctrl-C behaves as usual again
        os.kill(os.getpid(), signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job ignoring SIGINT keeps ignoring it
    try:
        with stop_at_step_boundary() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_run_interrupted_names_the_step_and_checkpoint(tmp_path):
    from auxfn.core.checkpoint import save_checkpoint
    from auxfn.core.errors import Interrupted

    run = Run.create("toy", {"a": 1}, name="r", out=tmp_path / "r")
    save_checkpoint(run.path, 7, {"m": torch.nn.Linear(2, 2)}, config={"a": 1})
    err = run.interrupted(7)
    assert isinstance(err, KeyboardInterrupt) and isinstance(err, Interrupted)
    assert err.step == 7 and err.checkpoint.name == "step_00000007"
    assert str(err) == f"stopped after step 7, checkpoint {err.checkpoint}; continue with --resume {run.path}"
