"""The jslds CLI in-process: presets, train, eval, analyze, user errors."""

from __future__ import annotations

import json

import pytest

from auxfn.cli import main


def test_cli_train_eval_analyze(tmp_path, capsys):
    assert main(["jslds", "presets"]) == 0
    out = capsys.readouterr().out
    for name in ("quick-flipflop", "quick-context", "standard-flipflop", "standard-context", "paper-flipflop", "paper-context"):
        assert name in out
    run = tmp_path / "run"
    code = main(["jslds", "train", "--preset", "quick-context", "--n-state", "8", "--steps", "20", "--batch-size", "8",
                 "--eval-every", "20", "--checkpoint-every", "10", "--out", str(run), "--quiet"])
    assert code == 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["task"] == "context" and cfg["n_state"] == 8 and cfg["cell"] == "vanilla-tanh"
    assert main(["jslds", "eval", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert ev["eval/mse_rnn"] == pytest.approx(summary["mse_rnn"], rel=1e-6)
    assert main(["jslds", "analyze", str(run), "--candidates", "32", "--fp-iters", "200"]) == 0
    an = json.loads((run / "analysis.json").read_text())
    assert 0 <= an["analysis/relative_error_jslds"] < 10
    assert "Analysis" in (run / "report.md").read_text()
    assert (run / "figures" / "spectra.png").is_file()


def test_cli_user_errors(tmp_path, capsys):
    assert main(["jslds", "train", "--n-state", "0", "--out", str(tmp_path / "x")]) == 2
    assert "n_state" in capsys.readouterr().err
    assert main(["jslds", "eval", str(tmp_path / "missing")]) == 2
    assert main(["jslds", "train", "--preset", "nope"]) == 2
    assert main(["jslds", "analyze", str(tmp_path), "--fp-iters", "x"]) == 2


def test_context_analysis_selection_metrics(tmp_path):
    from auxfn.jslds.report import analyze_model
    from auxfn.jslds.train import JSLDSConfig, build_model, build_task

    cfg = JSLDSConfig(task="context", cell="vanilla-tanh", n_state=8)
    task = build_task(cfg)
    model = build_model(cfg, task)
    metrics, figs = analyze_model(model, task, tmp_path, batch_size=16, n_candidates=16, fp_iters=50)
    for name in ("motion", "colour"):
        assert 0 <= metrics[f"analysis/{name}_fraction_one_eigenvalue_near_1"] <= 1
        assert 0 <= metrics[f"analysis/{name}_line_attractor_variance_fraction"] <= 1
    for name in ("rnn", "jslds"):
        assert 0 <= metrics[f"analysis/grid_choice_accuracy_{name}"] <= 1
    for name in ("motion", "colour"):
        assert metrics[f"analysis/{name}_selection_on_motion_median_abs"] >= 0
    assert {"condition_grid.png", "line_attractor.png"} <= {p.name for p in figs}
    assert (tmp_path / "selection_vectors.png").is_file()
