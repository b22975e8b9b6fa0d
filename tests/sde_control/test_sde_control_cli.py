"""The demo (harmonic oscillator, AS vs uncontrolled) and the sde-control commands."""

from __future__ import annotations

import json
import math

import torch

from auxfn.core.registry import DemoContext
from auxfn.sde_control.cli import METHOD


def test_quick_demo_holds_its_claim(tmp_path):
    # its time is measured by `auxfn demo --quick` and the benchmarks, not asserted here
    res = METHOD.demo(DemoContext(out_dir=tmp_path, quick=True, quiet=True))
    assert res.ok, res.headline
    assert "zero violation after" in res.headline and res.figures
    s = json.loads((tmp_path / "harmonic-as" / "summary.json").read_text())
    assert s["reached_zero"] and s["iters_to_zero"] <= 200
    assert s["heldout_violation_rate"] < 0.01
    assert s["controlled/success_rate"] == 1.0 and s["controlled/diverged"] == 0 and s["controlled/tau_mean_norm"] < 2.0
    # uncontrolled: the mean norm never reaches eps and grows well beyond its start
    x0 = torch.empty(20, 2, dtype=torch.float64).uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
    assert s["uncontrolled/tau_mean_norm"] is None  # +inf, written as JSON null
    assert s["uncontrolled/final_mean_norm"] > 3 * float(x0.norm(dim=1).mean())
    for f in ("config.json", "metrics.jsonl", "report.md", "figures/norms.png", "figures/phase.png", "figures/loss.png"):
        assert (tmp_path / "harmonic-as" / f).exists(), f
    assert math.isfinite(s["controlled/energy"])


def test_cli_train_simulate_eval_and_errors(capsys, tmp_path):
    from auxfn.cli import main

    out = tmp_path / "run"
    code = main(["sde-control", "train", "--system", "harmonic", "--method", "as", "--preset", "quick",
                 "--eval-paths", "4", "--eval-T", "1.0", "--certify-samples", "1000", "--out", str(out), "--quiet"])
    std = capsys.readouterr()
    assert code == 0, std.err
    assert "reached_zero: True" in std.out and f"run directory: {out}" in std.out
    assert main(["sde-control", "simulate", str(out), "--paths", "3", "--T", "0.5"]) == 0
    std = capsys.readouterr()
    assert std.out.startswith("controlled: tau_mean_norm=") and (out / "simulate.json").is_file()
    assert (out / "figures" / "simulate_norms.png").is_file() and (out / "figures" / "simulate_phase.png").is_file()
    assert main(["sde-control", "eval", str(out)]) == 0
    assert "heldout_violation_rate: 0" in capsys.readouterr().out
    assert main(["sde-control", "train", "--alpha", "1.5", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "'alpha' = 1.5 is out of range" in err and len(err.strip().splitlines()) == 1
    assert main(["sde-control", "train", "--system", "mars"]) == 2
    assert "unknown system 'mars'" in capsys.readouterr().err
    assert main(["sde-control", "presets"]) == 0
    assert "--system echo --method as --preset paper" in capsys.readouterr().out


def test_auxfn_help_lists_sde_control(auxfn_cmd):
    proc = auxfn_cmd("--help")
    assert proc.returncode == 0 and "sde-control" in proc.stdout and "failed to load" not in proc.stdout
