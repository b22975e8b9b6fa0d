"""Shared fixtures: the throwaway ``toy`` method (tests/core/toy_method.py) for CLI and resume tests."""

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
