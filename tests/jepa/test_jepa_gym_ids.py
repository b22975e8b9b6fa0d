"""Gymnasium ids: registered by ``import auxfn.jepa`` and reachable by the module-qualified form, each from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_auxfn_jepa_registers_the_ids_without_torch():
    code = (
        "import sys, auxfn.jepa, gymnasium as gym\n"
        "assert 'torch' not in sys.modules and 'auxfn.jepa.envs' not in sys.modules\n"
        "env = gym.make('auxfn/Counting-v0', img=16, nuisance='slots')\n"
        "obs, info = env.reset(seed=0)\n"
        "obs2, r, term, trunc, info2 = env.step(1)\n"
        "g = gym.make('auxfn/GridWorld-v0').reset(seed=1)[0]\n"
        "ring = gym.make('auxfn/Ring-v0', n=6).reset(seed=2)[0]\n"
        "print(obs.shape, info2['state'] - info['state'] in (0, 1), g.shape, ring.shape, env.spec.max_episode_steps)\n"
    )
    assert _run(code) == "(3, 16, 16) True (3, 20, 20) (3, 4, 12) 4"


@pytest.mark.parametrize("env_id", ["auxfn/Counting-v0", "auxfn/GridWorld-v0", "auxfn/Ring-v0"])
def test_module_qualified_id_from_a_fresh_interpreter(env_id):
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('auxfn.jepa.envs:{env_id}')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(env.observation_space.contains(obs), type(env.unwrapped).__module__)\n"
    )
    assert _run(code) == "True auxfn.jepa.envs"
