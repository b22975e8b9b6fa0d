"""Run generated code in a separate, limited process; every outcome comes back as data.

Never ``exec`` generated code in the trainer's process (the reference library does, with
``signal.alarm``: an infinite loop in C, a fork bomb or ``os._exit`` takes the trainer
down). Here each evaluation is one fresh process:

- limits (``setrlimit`` before exec): address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU),
  process count (RLIMIT_NPROC), file size (RLIMIT_FSIZE, which also caps stdout/stderr,
  written to files), open files, no core dumps; plus a wall-clock timeout after which the
  whole process group is killed;
- a fresh temporary working folder (deleted afterwards) and a minimal environment (no
  inherited variables, so no secrets);
- where ``unshare`` works: new network namespace (no network), new PID namespace (the
  program cannot see or signal the trainer; everything in it dies with it) and new mount
  namespace with private /tmp, /var/tmp and /dev/shm. When the trainer runs as root the
  program additionally runs as ``nobody`` (uid 65534): RLIMIT_NPROC does not bind root.

``SandboxResult.isolation`` says which of these applied. What it does not do: seccomp
filtering, or protect files the (non-root) user's own uid may write when the program
cannot be dropped to another uid.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxResult", "isolation_available", "run_python"]

_DRIVER = Path(__file__).with_name("_sandbox_driver.py")
_NOBODY = 65534
STATUSES = ("pass", "fail", "error", "timeout", "crash", "limit")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one evaluation."""

    wall_time: float = 10.0  # seconds for the whole evaluation
    cpu_time: int = 10  # CPU seconds (RLIMIT_CPU)
    per_test_timeout: float = 3.0  # seconds for the program body and for each test
    memory_mb: int = 512  # address space (RLIMIT_AS)
    max_processes: int = 8  # RLIMIT_NPROC (for the sandbox uid)
    max_file_mb: float = 1.0  # largest file the program may write, stdout/stderr included
    max_output_chars: int = 4000  # how much of stdout/stderr is returned
    network: bool = False  # True keeps the host network

    def __post_init__(self) -> None:
        for name in ("wall_time", "cpu_time", "per_test_timeout", "memory_mb", "max_processes", "max_file_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class SandboxResult:
    """The verdict of one evaluation. ``status`` is one of pass, fail, error, timeout, crash, limit."""

    status: str
    passed: int = 0
    total: int = 0
    tests: list[bool] = field(default_factory=list)
    error: str | None = None  # the program's or the first failing test's error
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    isolation: tuple[str, ...] = ()

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that works on this machine, or () when none does."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return ()
    base = ("--net", "--pid", "--mount", "--kill-child")
    tries = [(exe, *base)] if os.geteuid() == 0 else []
    tries.append((exe, "--user", "--map-root-user", *base))
    for prefix in tries:
        try:
            ok = subprocess.run([*prefix, "--", sys.executable, "-c", "pass"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


def isolation_available() -> tuple[str, ...]:
    """The isolation layers ``run_python`` applies on this machine (besides rlimits)."""
    layers = ["rlimits", "fresh-dir", "clean-env"]
    if _unshare_prefix():
        layers += ["no-network", "pid-namespace", "private-tmp"]
        if os.geteuid() == 0:
            layers.append("uid-nobody")
    return tuple(layers)


def _limit_child(limits: SandboxLimits) -> None:  # runs in the child between fork and exec
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    cpu = int(limits.cpu_time)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    size = int(limits.max_file_mb * mb)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # root ignores RLIMIT_NPROC; it binds once the driver has dropped to the sandbox uid
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))


def run_python(code: str, tests: Sequence[str] = (), limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` then each statement of ``tests`` (e.g. ``"assert f(2) == 5"``) in a sandbox.

    Returns a :class:`SandboxResult`; never raises for anything the program does.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    tests = list(tests)
    if not all(isinstance(t, str) for t in tests):
        raise TypeError("tests must be strings")
    limits = limits or SandboxLimits()
    prefix = () if limits.network else _unshare_prefix()
    isolation = isolation_available() if prefix else ("rlimits", "fresh-dir", "clean-env")
    root_mode = bool(prefix) and os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="auxfn-sandbox-"))
    work = base / "work"
    work.mkdir()
    if root_mode:
        os.chown(work, _NOBODY, _NOBODY)
    nonce = secrets.token_hex(16)
    payload = json.dumps(
        {"code": code, "tests": tests, "per_test_timeout": limits.per_test_timeout, "nonce": nonce,
         "drop_to": _NOBODY if root_mode else None, "channel_fd": None}
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [*prefix, "--", sys.executable, "-I", str(_DRIVER)] if prefix else [sys.executable, "-I", str(_DRIVER)]
    t0 = time.perf_counter()
    timed_out = False
    with open(base / "stdout", "w+b") as out, open(base / "stderr", "w+b") as err, open(base / "verdicts", "w+b") as chan:
        payload = payload.replace('"channel_fd": null', f'"channel_fd": {chan.fileno()}')
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=env,
            start_new_session=True, close_fds=True, pass_fds=(chan.fileno(),),
            preexec_fn=functools.partial(_limit_child, limits),
        )
        try:
            proc.communicate(payload.encode(), timeout=limits.wall_time)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the program's process group
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        seconds = time.perf_counter() - t0
        out.seek(0), err.seek(0), chan.seek(0)
        stdout = out.read(limits.max_output_chars).decode(errors="replace")
        stderr = err.read(limits.max_output_chars).decode(errors="replace")
        lines = chan.read(1 << 20).decode(errors="replace").splitlines()
    shutil.rmtree(base, ignore_errors=True)

    verdicts = [json.loads(line[len(nonce):]) for line in lines if line.startswith(nonce)]
    program = next((v for v in verdicts if v.get("stage") == "program"), None)
    results = {v["test"]: bool(v["ok"]) for v in verdicts if "test" in v}
    tests_ok = [results.get(i, False) for i in range(len(tests))]
    errors = [v.get("error") for v in verdicts if v.get("error")]
    res = SandboxResult(
        status="crash", passed=sum(tests_ok), total=len(tests), tests=tests_ok,
        error=errors[0] if errors else None, returncode=proc.returncode, stdout=stdout, stderr=stderr,
        seconds=seconds, isolation=isolation,
    )
    rc = proc.returncode
    killed_by = -rc if rc is not None and rc < 0 else (rc - 128 if rc is not None and rc > 128 else None)
    complete = program is not None and (program["error"] is not None or len(results) == len(tests))
    text = " ".join(filter(None, [res.error, stderr[-500:]]))
    if timed_out or killed_by == signal.SIGXCPU or (res.error or "").startswith("TimeoutError"):
        res.status = "timeout"
    elif killed_by == signal.SIGXFSZ or "MemoryError" in text or "Resource temporarily unavailable" in text or "File too large" in text:
        res.status = "limit"
    elif not complete or (rc not in (0, None)):
        res.status = "crash"
    elif program["error"] is not None:
        res.status = "error"
    else:
        res.status = "pass" if all(tests_ok) else "fail"
    return res
