"""train(cfg) through the core: run directory, checkpoints, identical resume, divergence, CLI."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from auxfn.core.errors import ConfigError, DivergedError, Interrupted
from auxfn.magrpo.config import MAGRPOConfig
from auxfn.magrpo.train import ModelConfig, TrainConfig, train


def _cfg(steps):
    return TrainConfig(
        trainer=MAGRPOConfig(num_generations=4, max_completion_length=8, learning_rate=3e-3, temperature=1.0, top_p=1.0, max_steps=steps),
        model=ModelConfig(hidden_size=32), eval_items=2, eval_samples=1, checkpoint_every=3,
    )


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_and_identical_resume(tmp_path):
    full = train(_cfg(6), out=tmp_path / "full")
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.md", "figures/reward.png", "model/agent_1/config.json"):
        assert (full.run_dir / name).exists(), name
    assert {"reward", "reward_std", "completions/mean_length", "loss/agent_0", "kl"} <= set(_rows(full.run_dir)[0])
    part = train(_cfg(3), out=tmp_path / "part")
    resumed = train(_cfg(6), resume=part.run_dir)
    assert _rows(resumed.run_dir) == _rows(full.run_dir)
    for a, b in zip(full.trainer.agents, resumed.trainer.agents):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    assert resumed.summary["eval_reward_after"] == full.summary["eval_reward_after"]


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    from auxfn.magrpo.trainer import MAGRPOTrainer

    full = train(_cfg(6), out=tmp_path / "full")
    real = MAGRPOTrainer.step

    def step(self):  # Ctrl-C in the middle of step 4 (checkpoints come every 3 steps)
        if self.state["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)

    monkeypatch.setattr(MAGRPOTrainer, "step", step)
    with pytest.raises(Interrupted) as err:
        train(_cfg(6), out=tmp_path / "part")
    assert err.value.step == 4 and err.value.checkpoint.name == "step_00000004"
    monkeypatch.setattr(MAGRPOTrainer, "step", real)
    resumed = train(_cfg(6), resume=tmp_path / "part")
    assert _rows(resumed.run_dir) == _rows(full.run_dir)
    for a, b in zip(full.trainer.agents, resumed.trainer.agents):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


def test_divergence_names_the_last_checkpoint(tmp_path, monkeypatch):
    from auxfn.magrpo.trainer import MAGRPOTrainer

    real = MAGRPOTrainer.step

    def step(self):
        out = real(self)
        return {**out, "reward": math.nan} if self.state["step"] == 4 else out

    monkeypatch.setattr(MAGRPOTrainer, "step", step)
    with pytest.raises(DivergedError, match="step_00000003"):
        train(_cfg(6), out=tmp_path / "div")


def test_config_validation():
    with pytest.raises(ConfigError, match="'task'"):
        TrainConfig(task="chess")
    with pytest.raises(ConfigError, match="trainer.num_agents"):
        TrainConfig(trainer=MAGRPOConfig(num_agents=3))


def test_cli_is_light_and_reports_bad_input(capsys):
    code = "import sys, auxfn.magrpo.cli as c; print(len(c.METHOD.commands), 'torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["4", "False", "False"], out.stderr
    from auxfn import cli

    assert cli.main(["magrpo", "train", "--trainer.num-generations", "0"]) == 2  # in process: the exit status and message
    assert "num_generations" in capsys.readouterr().err


def test_missing_llm_extra_is_one_clear_line(monkeypatch, capsys):
    import importlib.util

    from auxfn import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    assert cli.main(["magrpo", "train", "--preset", "quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['auxfn: error: auxfn magrpo needs transformers: install the llm extra, e.g. pip install -e ".[llm]" (or pip install "auxfn[llm]")']


def test_kl_reference_is_the_warmed_up_pair():
    """With beta > 0 and a warm-up, the frozen reference equals the agents after the warm-up, not at init."""
    from auxfn.magrpo.train import build, run_warmup

    cfg = TrainConfig(task="coop-sum", trainer=MAGRPOConfig(num_generations=2, max_completion_length=4, beta=0.1, max_steps=1),
                      model=ModelConfig(hidden_size=16), eval_items=1, eval_samples=1, warmup_steps=3)
    tok, task, tr = build(cfg)
    init = [[p.detach().clone() for p in a.parameters()] for a in tr.agents]
    run_warmup(cfg, tok, task, tr)
    for i in range(2):
        agent, ref = list(tr.agent(i).parameters()), list(tr.ref_models[i].parameters())
        assert all(torch.equal(p, q) for p, q in zip(agent, ref))
        assert any(not torch.equal(p, q) for p, q in zip(agent, init[i]))  # the warm-up moved the weights
        assert not any(q.requires_grad for q in ref)
