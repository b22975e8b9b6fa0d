"""The single-process path through accelerate (CPU) gives the plain trainer's results; agents on listed devices."""

import pytest
import torch

pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from auxfn.magrpo.config import MAGRPOConfig  # noqa: E402
from auxfn.magrpo.tasks import get_task  # noqa: E402
from auxfn.magrpo.testing import char_tokenizer, tiny_causal_lm  # noqa: E402
from auxfn.magrpo.trainer import MAGRPOTrainer  # noqa: E402


def _run(steps=2, **kw):
    tok = char_tokenizer()
    t = get_task("length-ratio")
    cfg = MAGRPOConfig(num_generations=4, max_completion_length=8, learning_rate=1e-2, max_grad_norm=1.0, temperature=1.0, top_p=1.0, max_steps=max(steps, 1))
    agents = [tiny_causal_lm(tok, hidden_size=16, seed=i) for i in range(2)]
    torch.manual_seed(123)
    tr = MAGRPOTrainer(agents, cfg, t.train, t.reward, t.formatters, processing_class=tok, **kw)
    log = tr.train() if steps else []
    return tr, log


def test_accelerator_cpu_single_process_equals_plain_path(monkeypatch):
    # the accelerate path updates agent by agent; compare it with the plain per-agent update
    # (the plain trainer's stacked update of both agents is compared with it in test_magrpo_fastdecode)
    monkeypatch.setattr(MAGRPOTrainer, "_joint_update_ok", lambda self, per_agent: False)
    plain, log_p = _run()
    acc = accelerate.Accelerator(cpu=True)
    prepared, log_a = _run(accelerator=acc)
    assert prepared.device == acc.device
    assert [r["reward"] for r in log_a] == [r["reward"] for r in log_p]  # same samples
    for k in ("loss/agent_0", "loss/agent_1"):
        assert [r[k] for r in log_a] == pytest.approx([r[k] for r in log_p], rel=1e-5, abs=1e-6)
    for i in range(2):
        for p, q in zip(plain.agent(i).parameters(), prepared.agent(i).parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    moved = sum(float((p.detach() - q.detach()).abs().sum()) for p, q in zip(plain.agent(0).parameters(), tiny_causal_lm(char_tokenizer(), hidden_size=16, seed=0).parameters()))
    assert moved > 0  # training changed the weights, so the comparison is not vacuous


def test_agent_devices_and_bad_combinations():
    tr, _ = _run(steps=0, agent_devices=["cpu", "cpu"])
    assert tr.devices == [torch.device("cpu")] * 2
    with pytest.raises(ValueError, match="agent_devices"):
        _run(steps=0, agent_devices=["cpu"])
    with pytest.raises(ValueError, match="either device or accelerator"):
        _run(steps=0, device="cpu", accelerator=accelerate.Accelerator(cpu=True))
