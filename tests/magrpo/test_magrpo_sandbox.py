"""The sandbox against hostile programs: every outcome is data and nothing outside it changes."""

import os
import time
from pathlib import Path

import pytest

from auxfn.magrpo.sandbox import SandboxLimits, isolation_available, run_python

FAST = SandboxLimits(wall_time=4.0, cpu_time=2, per_test_timeout=1.0, memory_mb=256)


def test_pass_fail_error():
    code = "def f(x):\n    return 2 * x\n"
    ok = run_python(code, ["assert f(2) == 4", "assert f(3) == 6"], FAST)
    assert (ok.status, ok.passed, ok.total) == ("pass", 2, 2)
    bad = run_python(code, ["assert f(2) == 4", "assert f(3) == 7"], FAST)
    assert (bad.status, bad.passed, bad.tests) == ("fail", 1, [True, False])
    err = run_python("1/0", ["assert True"], FAST)
    assert err.status == "error" and "ZeroDivisionError" in err.error and err.passed == 0


def test_infinite_loop_times_out():
    t0 = time.perf_counter()
    r = run_python("while True:\n    pass\n", [], FAST)
    # the loop is ended by the limits (not left running): generous margin for a loaded machine
    assert r.status == "timeout" and time.perf_counter() - t0 < FAST.wall_time + 5


def test_fork_bomb_and_memory_bomb_hit_limits():
    r = run_python("import os\nwhile True:\n    os.fork()\n", [], FAST)
    assert r.status in ("limit", "crash", "timeout")
    r = run_python("x = bytearray(2 * 1024 ** 3)\n", [], FAST)
    assert r.status == "limit"


def test_megabytes_of_output_are_capped():
    r = run_python("print('x' * 10 ** 7)\n", [], FAST)
    assert r.status == "limit" and len(r.stdout) <= FAST.max_output_chars


def test_environment_is_clean(monkeypatch):
    monkeypatch.setenv("AUXFN_SECRET_TOKEN", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\n", [], FAST)
    assert r.status == "pass" and "AUXFN_SECRET_TOKEN" not in r.stdout and "hunter2" not in r.stdout


def test_files_outside_are_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = Path("/tmp") / f"auxfn-sandbox-escape-{os.getpid()}"
    code = (
        f"import os\n"
        f"for f in (lambda: os.remove({str(victim)!r}), lambda: open({str(victim)!r}, 'w').write('x'),\n"
        f"          lambda: open({str(target)!r}, 'w').write('x')):\n"
        f"    try:\n        f()\n    except OSError:\n        pass\n"
        f"open('inside.txt', 'w').write('fine')\n"
    )
    r = run_python(code, ["assert open('inside.txt').read() == 'fine'"], FAST)
    assert r.status == "pass"
    assert victim.read_text() == "keep me"
    if "private-tmp" in isolation_available():
        assert not target.exists()
    target.unlink(missing_ok=True)


def test_killing_the_parent_does_not_reach_the_caller():
    r = run_python("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n", [], FAST)
    assert r.status in ("pass", "error", "crash")
    assert run_python("x = 1", ["assert x == 1"], FAST).status == "pass"  # and we are still alive


@pytest.mark.skipif("no-network" not in isolation_available(), reason="no network namespace on this machine")
def test_no_network():
    code = "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))\n"
    r = run_python(code, [], FAST)
    assert r.status == "error" and ("unreachable" in r.error or "socket" in r.error)


def test_limits_validation():
    with pytest.raises(ValueError, match="wall_time"):
        SandboxLimits(wall_time=0)
