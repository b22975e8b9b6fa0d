"""Environments: gymnasium checks, determinism, shapes, clipping, rendering."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, check_step_determinism

import auxfn.jepa.envs  # noqa: F401  (registers the environments)
from auxfn.jepa.envs import CountingMDP, GridWorldMDP, RingMDP, pixel_projection, transition_table

ENVS = [
    ("auxfn/Counting-v0", {"img": 16, "nuisance": "slots"}),
    ("auxfn/Counting-v0", {"img": 32, "nuisance": "resample"}),
    ("auxfn/Counting-v0", {"img": 16, "nuisance": "none", "aux": "dense"}),
    ("auxfn/GridWorld-v0", {}),
    ("auxfn/Ring-v0", {"n": 6}),
]


@pytest.mark.parametrize("env_id,kwargs", ENVS)
def test_gymnasium_check_env(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    check_step_determinism(env.unwrapped)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.uint8 and obs.shape == env.observation_space.shape
    assert env.unwrapped.core.n_states >= 2


def test_counting_actions_clip_and_reward_is_target():
    env = gym.make("auxfn/Counting-v0", img=16)
    obs, info = env.reset(seed=0, options={"state": 0})
    obs, r, term, trunc, info = env.step(0)
    assert info["state"] == 0 and r == 0.0
    env.reset(seed=0, options={"state": 8})
    _, _, _, _, info = env.step(1)
    assert info["state"] == 8
    env.reset(seed=0, options={"state": 3})
    _, r, term, _, info = env.step(1)
    assert info["state"] == 4 and r == 1.0 and term and info["aux_pre"][0] == 0.0


def test_counting_render_shows_count_objects_without_overlap():
    m = CountingMDP(img=32, nuisance="slots")
    nu = m.sample_nuisance(np.random.default_rng(0), 1)
    nu9 = {k: np.repeat(v, 9, axis=0) for k, v in nu.items()}
    obs = m.render(np.arange(9), nu9)
    area = (obs[:, 0] > 0).sum(axis=(1, 2))
    assert area[0] == 0 and np.array_equal(area, np.arange(9) * area[1])  # equal area per object: no overlap
    # slots: rendering is a function of (state, episode nuisance)
    assert np.array_equal(obs, m.render(np.arange(9), nu9))


def test_resample_moves_objects_and_slots_keeps_them():
    rng = np.random.default_rng(1)
    for mode, same in (("slots", True), ("resample", False)):
        m = CountingMDP(img=32, nuisance=mode)
        nu = m.sample_nuisance(rng, 4)
        s = np.full(4, 3)
        s2 = m.step(s, np.ones(4, dtype=int))
        nu2 = m.next_nuisance(nu, s, s2, rng)
        assert np.array_equal(nu2["pos"], nu["pos"]) == same
        assert m.deterministic_pixels == same


def test_seeded_reset_is_reproducible():
    a = gym.make("auxfn/Counting-v0", img=16, nuisance="resample")
    b = gym.make("auxfn/Counting-v0", img=16, nuisance="resample")
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    assert np.array_equal(oa, ob)
    for act in (1, 1, 0):
        assert np.array_equal(a.step(act)[0], b.step(act)[0])


def test_gridworld_walls_block_and_background_never_changes_dynamics():
    g = GridWorldMDP(size=5)
    table = transition_table(g)
    assert table.shape == (g.n_states, 4)
    corner = g.index[(0, 0)]
    assert table[corner, 0] == corner and table[corner, 2] == corner  # up and left hit the border
    beside_wall = g.index[(2, 1)]
    assert table[beside_wall, 3] == beside_wall  # (2, 2) is a wall
    s = np.array([corner, corner])
    o = g.render(s, {"bg": np.array([0, 2])})
    assert not np.array_equal(o[0], o[1])


def test_ring_and_random_projection():
    r = RingMDP(5)
    assert list(r.step(np.array([0, 4]), np.array([0, 1]))) == [4, 0]
    obs = np.random.default_rng(0).random((10, 3, 4, 4))
    w1 = pixel_projection(obs, 8, seed=3)
    assert np.allclose(w1, pixel_projection(obs, 8, seed=3)) and not np.allclose(w1, pixel_projection(obs, 8, seed=4))
    assert np.allclose(pixel_projection(obs[:1] + obs[1:2], 8, 3), w1[:1] + w1[1:2])  # linear


def test_bad_env_arguments():
    with pytest.raises(ValueError, match="nuisance must be"):
        CountingMDP(nuisance="jitter")
    with pytest.raises(ValueError, match="img must be"):
        CountingMDP(img=20)
    with pytest.raises(ValueError, match=r"s must be a 1-D integer array"):
        CountingMDP(img=16).step(np.array([0.5]), np.array([1]))
    with pytest.raises(ValueError, match=r"a must be an integer array of shape \(2,\)"):
        CountingMDP(img=16).step(np.array([0, 1]), np.array([1]))
