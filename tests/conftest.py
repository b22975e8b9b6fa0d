"""Shared fixtures: the throwaway ``toy`` method (tests/core/toy_method.py) for CLI and resume tests,
and ``one_torch_thread`` for packages whose tests use small tensors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOY_DIR = Path(__file__).parent / "core"
if str(TOY_DIR) not in sys.path:
    sys.path.insert(0, str(TOY_DIR))


@pytest.fixture
def toy_env() -> dict[str, str]:
    """Environment for a subprocess in which the ``toy`` method is registered as a plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TOY_DIR), env.get("PYTHONPATH", "")]))
    env["AUXFN_PLUGINS"] = "toy_method"
    env.pop("COLUMNS", None)
    return env


@pytest.fixture
def auxfn_cmd():
    """Run ``python -m auxfn ARGS`` in a subprocess; returns the CompletedProcess."""

    def call(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
        return subprocess.run(
            [sys.executable, "-m", "auxfn", *map(str, args)],
            capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
        )

    return call


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: small tensors are fastest so, and much faster than with two
    threads on a shared 2-core machine. Packages use it autouse from their own conftest.py."""
    import torch  # here, not at module level: the CLI tests check that importing auxfn stays light

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
