"""Theorem 1 on tabular MDPs: the quotient encoder is exact; merging non-bisimilar states costs loss."""

from __future__ import annotations

import numpy as np
import torch

from auxfn.jepa.auditing import latent_audit
from auxfn.jepa.bisim import largest_bisimulation
from auxfn.jepa.envs import CountingMDP, GridWorldMDP, NuisanceProduct, RingMDP, transition_table
from auxfn.jepa.theory import optimal_coarsening_losses, quotient_model

MDPS = [
    (CountingMDP(img=16), "reward"),
    (NuisanceProduct(GridWorldMDP(size=4, walls=((1, 1),)), 3), "reward"),
    (RingMDP(7), "reward"),
]


def test_quotient_encoder_has_zero_loss_and_no_collapsed_pairs():
    for mdp, kind in MDPS:
        table = transition_table(mdp)
        p = mdp.aux(np.arange(mdp.n_states), kind)
        bis = largest_bisimulation(table, p)
        enc, trans, aux = quotient_model(table, p, bis.classes)
        # zero losses on every state and action (not only on average)
        for a in range(mdp.n_actions):
            assert np.array_equal(np.einsum("sc,cd->sd", enc, trans[:, a]), enc[table[:, a]])
        assert np.array_equal(enc @ aux, p)
        losses = optimal_coarsening_losses(table, p, bis.classes)
        assert losses["dyn"] == 0.0 and losses["aux"] == 0.0
        states = np.arange(mdp.n_states)
        stats = latent_audit(enc, states, bis)
        assert stats["n_collapsed_pairs"] == 0 and stats["n_separated_classes"] == bis.n_classes


def test_merging_non_bisimilar_classes_has_positive_optimal_loss():
    rng = np.random.default_rng(0)
    for mdp, kind in MDPS:
        table = transition_table(mdp)
        p = mdp.aux(np.arange(mdp.n_states), kind)
        bis = largest_bisimulation(table, p)
        k = bis.n_classes
        for _ in range(40):
            # a random coarsening of the classes that merges at least two of them
            n_groups = int(rng.integers(1, k))
            merge = rng.integers(0, n_groups, size=k)
            merge[rng.choice(k, size=n_groups, replace=False)] = np.arange(n_groups)
            groups = merge[bis.classes]
            losses = optimal_coarsening_losses(table, p, groups)
            assert losses["dyn"] + losses["aux"] > 1e-12
        # a coarsening that merges only bisimilar states (identity on classes) is free
        finer = optimal_coarsening_losses(table, p, np.arange(mdp.n_states))
        assert finer["dyn"] == 0.0 and finer["aux"] == 0.0


def test_closed_form_is_the_minimum_over_free_tables():
    """Fit free T and P tables by gradient descent in float64 and compare with the closed form."""
    mdp = CountingMDP(img=16)
    table = transition_table(mdp)
    p = mdp.aux(np.arange(9), "reward")
    groups = np.array([0, 0, 1, 1, 2, 1, 1, 3, 3])  # merges 2~3 (depth 2) and 7~8 (depth 3) among others
    closed = optimal_coarsening_losses(table, p, groups)
    g = torch.as_tensor(groups)
    enc = torch.eye(4, dtype=torch.float64)[g]
    tr = torch.zeros(4, 2, 4, dtype=torch.float64, requires_grad=True)
    aux = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([tr, aux], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)
    tt, pp = torch.as_tensor(table), torch.as_tensor(p)

    def objective():
        dyn = torch.stack([((enc @ tr[:, a] - enc[tt[:, a]]) ** 2).mean() for a in range(2)]).mean()
        return dyn, ((enc @ aux - pp) ** 2).mean()

    def closure():
        opt.zero_grad()
        loss = sum(objective())
        loss.backward()
        return loss

    opt.step(closure)
    dyn, l_p = (v.detach() for v in objective())
    assert abs(float(dyn) - closed["dyn"]) < 1e-10 and abs(float(l_p) - closed["aux"]) < 1e-10
    # the merge respects p (4 stays alone) but not the dynamics: only L_dyn pays
    assert closed["dyn"] > 0.05 and closed["aux"] == 0.0


def test_collapse_statistics_flag_merged_encoder():
    mdp = CountingMDP(img=16)
    bis = largest_bisimulation(mdp, "reward")
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7])  # 7 and 8 share a code
    enc = np.eye(8)[groups] + 1e-9 * np.random.default_rng(0).standard_normal((9, 8))
    stats = latent_audit(enc, np.arange(9), bis)
    assert stats["n_collapsed_pairs"] == 1 and stats["n_separated_classes"] == 8
    assert stats["worst_pairs"][0]["classes"] == [7, 8] and stats["worst_pairs"][0]["depth"] == 3
