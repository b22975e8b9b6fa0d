"""Joint actions, credit, advantages, tree returns and termination against hand computation."""

import numpy as np
import pytest

from auxfn.magrpo.advantages import group_advantages
from auxfn.magrpo.joint import agent_credit, joint_actions
from auxfn.magrpo.tree import Node, build_tree, compute_returns, iter_postorder, should_terminate


def test_joint_action_counts_and_order():
    assert joint_actions(3, 2, "aligned") == [(0, 0), (1, 1), (2, 2)]
    cross = joint_actions(2, 3, "cross")
    assert len(cross) == 8 and cross[0] == (0, 0, 0) and cross[1] == (0, 0, 1) and cross[-1] == (1, 1, 1)
    assert len(joint_actions(4, 2, "cross")) == 16
    with pytest.raises(ValueError, match="mode"):
        joint_actions(2, 2, "diag")


def test_cross_credit_mean_and_sum_by_hand():
    # G=2, N=2: combos (0,0),(0,1),(1,0),(1,1) with returns 1,2,3,4
    combos = joint_actions(2, 2, "cross")
    r = [1.0, 2.0, 3.0, 4.0]
    s = agent_credit(r, combos, 2, "sum")
    np.testing.assert_allclose(s, [[3.0, 7.0], [4.0, 6.0]])  # agent0: k=0 -> 1+2, k=1 -> 3+4 ; agent1: 1+3, 2+4
    m = agent_credit(r, combos, 2, "mean")
    np.testing.assert_allclose(m, [[1.5, 3.5], [2.0, 3.0]])
    a = agent_credit([5.0, 7.0], joint_actions(2, 2, "aligned"), 2)
    np.testing.assert_allclose(a, [[5.0, 7.0], [5.0, 7.0]])
    with pytest.raises(ValueError, match="shape"):
        agent_credit([1.0], combos, 2)


def test_advantage_modes_by_hand():
    r = np.array([1.0, 2.0, 3.0, 6.0])  # mean 3, max 6
    np.testing.assert_allclose(group_advantages(r, "mean"), [-2, -1, 0, 3])
    # rloo: R_g - mean of the others
    np.testing.assert_allclose(group_advantages(r, "rloo"), [1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3])
    np.testing.assert_allclose(group_advantages(r, "max"), [-5, -4, -3, 0])
    np.testing.assert_allclose(group_advantages(r, "raw"), r)
    std = np.std(r, ddof=1)
    np.testing.assert_allclose(group_advantages(r, "mean", "group"), (r - 3) / (std + 1e-4))
    np.testing.assert_allclose(group_advantages([2.0, 2.0, 2.0], "mean", "group"), [0, 0, 0])  # zero-std group
    np.testing.assert_allclose(group_advantages([[1, 3], [0, 0]], "mean"), [[-1, 1], [0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        group_advantages([1.0, float("nan")])


def test_one_agent_equals_grpo_advantage():
    """With one agent aligned/cross coincide and the credit is the reward: GRPO's (r - mean)/(std + 1e-4)."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=8)
    for mode in ("aligned", "cross"):
        combos = joint_actions(8, 1, mode)
        c = agent_credit(r, combos, 8)[0]
        np.testing.assert_allclose(c, r)
        grpo = (r - r.mean()) / (r.std(ddof=1) + 1e-4)  # TRL GRPO, scale_rewards="group"
        np.testing.assert_allclose(group_advantages(c, "mean", "group"), grpo, rtol=1e-12)
        np.testing.assert_allclose(group_advantages(c, "mean", "none"), r - r.mean(), rtol=1e-12)  # Dr. GRPO


def _hand_tree():
    # root: 2 joint actions, rewards [1, 0]; child 0 rewards [2, 4]; child 1 rewards [0, 1]
    def mk(t, r):
        return Node(turn=t, prompts=["p"], completions=[["a", "b"]], combos=[(0,), (1,)], rewards=np.array(r))

    root = mk(0, [1.0, 0.0])
    root.children = [mk(1, [2.0, 4.0]), mk(1, [0.0, 1.0])]
    return root


def test_tree_returns_by_hand():
    root = _hand_tree()
    R = compute_returns(root, 0.9)
    np.testing.assert_allclose(R, [1 + 0.9 * 3.0, 0 + 0.9 * 0.5])
    np.testing.assert_allclose(root.children[0].returns, [2.0, 4.0])
    assert [n.turn for n in iter_postorder(root)] == [1, 1, 0]


def _fake(n_agents=2, G=2):
    calls = []

    def sample(prompts, turn):
        calls.append((turn, tuple(prompts)))
        return [[f"{p}|{turn}{k}" for k in range(G)] for p in prompts]

    def reward(prompts, joint, turn):
        return np.array([float(turn + j) for j in range(len(joint[0]))])

    def transition(joint, ph, rh):
        assert all(len(h) == len(ph[0]) for h in ph) and rh[0][-1] == joint[0]
        return [f"{p[-1]}>{r[-1]}" for p, r in zip(ph, rh)]

    return sample, reward, transition, calls


def test_build_tree_sizes_and_histories():
    sample, reward, transition, calls = _fake()
    root = build_tree(["x", "y"], sample, reward, num_turns=2, G=2, transition=transition)
    assert len(root.children) == 2 and all(not c.children for c in root.children)
    assert root.children[1].prompts == ["x>x|01", "y>y|01"]  # agent's own prompt and its own response only
    cross = build_tree(["x", "y"], sample, reward, num_turns=2, G=2, joint_mode="cross", transition=transition)
    leaves = [n for n in iter_postorder(cross) if not n.children]
    assert len(leaves) == 4 and sum(len(n.rewards) for n in leaves) == 16  # G^(N*T) leaf joint actions
    with pytest.raises(ValueError, match="external transition"):
        build_tree(["x", "y"], sample, reward, num_turns=2, G=2)


def test_termination_off_by_default_and_threshold():
    sample, reward, transition, _ = _fake()
    assert not should_terminate(np.array([100.0]), None)
    full = build_tree(["x", "y"], sample, reward, num_turns=3, G=2, transition=transition)
    assert len(full.children) == 2 and not full.terminated
    # root mean reward 0.5 > 0.4: stop at the root, so returns equal rewards
    stop = build_tree(["x", "y"], sample, reward, num_turns=3, G=2, transition=transition, termination_threshold=0.4)
    assert stop.terminated and not stop.children
    np.testing.assert_allclose(compute_returns(stop, 0.9), stop.rewards)
    # threshold 1.0: root (mean 0.5) expands, turn-1 nodes (mean 1.5) stop
    mid = build_tree(["x", "y"], sample, reward, num_turns=3, G=2, transition=transition, termination_threshold=1.0)
    assert len(mid.children) == 2 and all(c.terminated and not c.children for c in mid.children)


def test_transition_wrong_count_is_named():
    sample, reward, _, _ = _fake()
    with pytest.raises(ValueError, match="must return 2 prompts"):
        build_tree(["x", "y"], sample, reward, num_turns=2, G=2, transition=lambda j, p, r: ["only one"])
