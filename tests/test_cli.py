"""The auxfn command: help, version, exit codes, method registration, demo, import cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from auxfn import cli
from auxfn.core.registry import DemoResult, Method, register, registered, unregister


def test_help_and_version(auxfn_cmd):
    proc = auxfn_cmd("--help")
    assert proc.returncode == 0 and "usage: auxfn" in proc.stdout and "demo" in proc.stdout
    proc = auxfn_cmd("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("auxfn ")
    proc = auxfn_cmd("demo", "--help")
    assert proc.returncode == 0 and "--quick" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nonsense"], "unknown command 'nonsense'"),
        (["demo", "--bogus"], "Unrecognized options: --bogus"),
        (["demo", "--only", "nomethod"], "unknown method 'nomethod'"),
    ],
)
def test_user_errors_exit_2_with_one_line(auxfn_cmd, args, needle):
    proc = auxfn_cmd(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auxfn: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def toy_registered():
    """The toy method registered in this process (for in-process CLI calls)."""
    import toy_method

    register(toy_method.METHOD, replace=True)
    yield toy_method
    unregister("toy")


def test_toy_method_registers_without_editing_the_core(auxfn_cmd, toy_env):
    proc = auxfn_cmd("toy", "--help", env=toy_env)  # found through AUXFN_PLUGINS alone
    assert proc.returncode == 0 and "train" in proc.stdout and "presets" in proc.stdout
    proc = auxfn_cmd("toy", "presets")  # without the plugin the toy method does not exist
    assert proc.returncode == 2 and "unknown command 'toy'" in proc.stderr


def test_registered_method_commands(toy_registered, capsys):
    assert cli.main(["--help"]) == 0
    assert "a throwaway regression" in capsys.readouterr().out
    assert cli.main(["toy", "presets"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["quick", "20", "Adam", "steps"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["toy", "train", "--help"])
    assert exit_.value.code == 0
    assert "--lr" in capsys.readouterr().out


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_train_resume_and_error_paths_through_the_cli(toy_registered, capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["toy", "train", "--steps", "6", "--lr", "0.02", "--out", str(out), "--quiet"]) == 0
    assert f"run directory: {out}" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["lr"] == 0.02 and meta["config"]["steps"] == 6 and meta["method"] == "toy"
    assert (out / "summary.json").is_file() and (out / "report.md").is_file()

    # resume keeps the run's own config (lr 0.02) and extends it
    assert cli.main(["toy", "train", "--resume", str(out), "--steps", "9", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["steps"] == 9 and meta["config"]["lr"] == 0.02
    assert [r["from_step"] for r in meta["resumed"]] == [6]
    capsys.readouterr()
    # resuming with a changed config that matters is refused with one line
    assert cli.main(["toy", "train", "--resume", str(out), "--steps", "12", "--lr", "0.5"]) == 2
    assert "different config (lr: checkpoint 0.02 vs now 0.5)" in _error_line(capsys)
    # a second run into the same folder is refused
    assert cli.main(["toy", "train", "--out", str(out)]) == 2
    assert "already holds a run" in _error_line(capsys)
    assert cli.main(["toy", "train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope' for toy; choose one of quick, long" in _error_line(capsys)
    assert cli.main(["toy", "fly"]) == 2
    assert "unknown toy command 'fly'; choose one of: train, presets" in _error_line(capsys)
    assert cli.main(["toy", "train", "--resume"]) == 2
    assert "--resume needs a value" in _error_line(capsys)


def test_bad_value_and_divergence_exit_codes_in_a_subprocess(auxfn_cmd, toy_env, tmp_path):
    bad = auxfn_cmd("toy", "train", "--lr", "-1", "--out", tmp_path / "bad", env=toy_env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "auxfn: error: auxfn toy train: Error parsing ToyConfig: config field 'lr' = -1.0 is out of range: allowed 0 < lr"
    ]
    # a diverging run exits 3 and names its last good checkpoint, which is kept
    div = tmp_path / "div"
    proc = auxfn_cmd("toy", "train", "--optimizer", "sgd", "--lr", "1000", "--checkpoint-every", "2", "--out", div, env=toy_env)
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("auxfn: diverged: loss/total is not finite at step")
    ckpt = line.split("last good checkpoint: ")[1]
    assert ckpt.startswith(str(div / "checkpoints" / "step_"))
    assert (tmp_path / ckpt / "model.safetensors").is_file()


def test_demo_with_no_method_exits_0_and_says_so(auxfn_cmd, tmp_path):
    import os

    env = dict(os.environ, AUXFN_PLUGINS="")
    # run from an interpreter that hides the built-in method packages, as before any method existed
    script = (
        "import sys, auxfn.core.registry as r; r._DISCOVERED = True; from auxfn.cli import main; "
        f"sys.exit(main(['demo', '--out', {str(tmp_path / 'd')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    assert "No method with a demo is registered yet (registered methods: none)" in proc.stdout
    assert (tmp_path / "d" / "report.md").is_file()


def test_demo_runs_registered_methods_and_writes_a_report(auxfn_cmd, toy_env, tmp_path):
    out = tmp_path / "demo"
    proc = auxfn_cmd("demo", "--quick", "--only", "toy", "--out", out, "--quiet", env=toy_env)
    assert proc.returncode == 0, proc.stderr
    header, rule, row = proc.stdout.splitlines()[:3]
    assert header.split()[:2] == ["method", "what"] and set(rule.replace(" ", "")) == {"-"}
    assert row.startswith("toy") and "loss" in row and row.rstrip().endswith(" s")
    report = (out / "report.md").read_text()
    assert "| toy | toy regression loss drops |" in report
    assert "![loss](toy/run/figures/loss.png)" in report and (out / "toy/run/figures/loss.png").is_file()


def test_demo_runs_again_in_its_own_folder_and_refuses_a_foreign_one(tmp_path, capsys):
    calls = []

    def fine(ctx):
        calls.append(ctx.out_dir)
        assert not any(ctx.out_dir.iterdir())  # each run starts from an empty method folder
        (ctx.out_dir / "run").mkdir()
        return DemoResult(shown="works", headline=str(len(calls)))

    register(Method("tmp-again", "x", {}, demo=fine))
    try:
        out = tmp_path / "demo"
        assert cli.main(["demo", "--only", "tmp-again", "--out", str(out), "--quiet"]) == 0
        assert cli.main(["demo", "--only", "tmp-again", "--out", str(out), "--quiet", "--quick"]) == 0
        assert len(calls) == 2 and "| tmp-again | works | 2 |" in (out / "report.md").read_text()
        # a folder holding someone else's files is refused, and they are left as they were
        foreign = tmp_path / "mine"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("keep me")
        assert cli.main(["demo", "--only", "tmp-again", "--out", str(foreign), "--quiet"]) == 2
        assert "not written by `auxfn demo`" in capsys.readouterr().err
        assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"] and len(calls) == 2
        afile = tmp_path / "file.txt"
        afile.write_text("x")
        assert cli.main(["demo", "--only", "tmp-again", "--out", str(afile), "--quiet"]) == 2
        assert "is a file, not a folder" in capsys.readouterr().err
    finally:
        unregister("tmp-again")


def test_demo_reports_a_failing_method_and_exits_1(tmp_path, capsys):
    def broken(ctx):
        raise RuntimeError("boom")

    def fine(ctx):
        return DemoResult(shown="works", headline="42")

    register(Method("tmp-broken", "x", {}, demo=broken))
    register(Method("tmp-fine", "x", {}, demo=fine))
    try:
        code = cli.main(["demo", "--only", "tmp-broken", "tmp-fine", "--out", str(tmp_path), "--quiet"])
    finally:
        unregister("tmp-broken")
        unregister("tmp-fine")
    out = capsys.readouterr().out
    assert code == 1
    assert "tmp-broken" in out and "RuntimeError: boom" in out and "tmp-fine" in out and "42" in out
    assert "Traceback" in (tmp_path / "report.md").read_text()


def test_in_process_registration_and_dispatch(capsys):
    seen = []

    def hello(argv):
        seen.append(argv)
        return 0

    method = Method("tmp-hello", "says hello", {"hello": ("say hello", hello)})
    register(method)
    try:
        assert "tmp-hello" in registered()
        assert cli.main(["tmp-hello", "hello", "--x", "1"]) == 0 and seen == [["--x", "1"]]
        assert cli.main(["tmp-hello"]) == 2  # missing sub-command: help + usage error
        with pytest.raises(ValueError, match="already registered"):
            register(Method("tmp-hello", "other", {}))
    finally:
        unregister("tmp-hello")
    with pytest.raises(ValueError, match="letters, digits"):
        Method("bad name", "x", {})
    with pytest.raises(ValueError, match="must be \\(help, function\\)"):
        Method("ok", "x", {"train": "nope"})


def test_importing_auxfn_is_light():
    code = "import sys, auxfn, auxfn.cli; print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"


def test_discovering_every_method_imports_neither_torch_nor_transformers():
    # what `auxfn --help` does: import every method's cli module
    code = (
        "import sys; from auxfn.core.registry import registered, load_errors; names = list(registered()); "
        "print(load_errors() or 'ok', len(names) >= 4, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "True", "False", "False"]


@pytest.mark.parametrize("package", ["sde_control", "jslds", "jepa", "magrpo"])
def test_method_package_import_is_light_and_public_names_resolve(package):
    # importing the package (as `auxfn --help` does) loads no torch; every public name then
    # resolves to the package's own function or class (not a same-named submodule)
    code = (
        f"import sys, importlib; pkg = 'auxfn.{package}'; m = importlib.import_module(pkg)\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "assert m.__all__ == sorted(m.__all__), 'unsorted __all__'\n"
        "for n in m.__all__:\n"
        "    obj = getattr(m, n)\n"
        "    assert not isinstance(obj, type(sys)), (n, 'is a module')\n"
        "    assert getattr(obj, '__module__', pkg).startswith(pkg), (n, obj)\n"
        "try:\n    m.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise AssertionError('missing name did not raise')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
