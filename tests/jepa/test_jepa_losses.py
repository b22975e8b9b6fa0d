"""Losses: closed forms, shapes, two-hot identities and the gradient routing of every mode."""

from __future__ import annotations

import pytest
import torch

from auxfn.jepa.losses import (
    LOSS_MODES,
    jepa_losses,
    symlog,
    two_hot,
    two_hot_ce,
    two_hot_decode,
    vicreg_terms,
)
from auxfn.jepa.models import AuxHead, Encoder, JEPAModel, Transition

OBS = (3, 8, 8)


def _model(**kw):
    torch.manual_seed(0)
    return JEPAModel(OBS, n_actions=2, aux_dim=1, latent_dim=6, hidden=16, **kw).double()


def _batch(b=12, k=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, *OBS, generator=g, dtype=torch.float64), torch.randint(0, 2, (b,), generator=g),
            torch.rand(b, *OBS, generator=g, dtype=torch.float64), torch.rand(b, k, generator=g, dtype=torch.float64))


def _grads(loss, params):
    gs = torch.autograd.grad(loss, list(params), allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def _norm(gs):
    return float(sum((g**2).sum() for g in gs) ** 0.5)


def test_losses_equal_their_definitions():
    m = _model()
    o, a, o2, p = _batch()
    out = jepa_losses(m, o, a, o2, p, mode="joint", c_p=3.0)
    z, z2 = m.encoder(o), m.encoder(o2)
    dyn = ((m.transition(z, a) - z2) ** 2).mean()
    aux = ((m.aux_head(z) - p) ** 2).mean()
    assert torch.allclose(out["dyn"], dyn) and torch.allclose(out["aux"], aux)
    assert torch.allclose(out["total"], dyn + 3.0 * aux)
    assert set(out) == {"total", "dyn", "aux"} and all(v.shape == () for v in out.values())


@pytest.mark.parametrize("mode,enc_dyn,enc_aux", [
    ("joint", True, True), ("random_aux", True, True), ("aux_only", False, True), ("dyn_only", True, False),
    ("stopgrad", True, False), ("ema", True, False), ("vicreg", True, False), ("frozen", False, False),
])
def test_gradient_routing(mode, enc_dyn, enc_aux):
    m = _model(ema=mode == "ema")
    o, a, o2, p = _batch()
    out = jepa_losses(m, o, a, o2, p, mode=mode)
    enc = list(m.encoder.parameters())
    assert (_norm(_grads(out["dyn"], enc)) > 0) == enc_dyn
    assert (_norm(_grads(out["aux"], enc)) > 0) == enc_aux
    # the heads always learn: T from L_dyn, P from L_p
    assert _norm(_grads(out["dyn"], list(m.transition.parameters()))) > 0
    assert _norm(_grads(out["aux"], list(m.aux_head.parameters()))) > 0
    if m.target_encoder is not None:
        assert all(not q.requires_grad for q in m.target_encoder.parameters())


def test_stopgrad_is_the_source_branch_gradient_of_joint():
    """joint's encoder gradient = source-branch part (stopgrad) + target-branch part."""
    m = _model()
    o, a, o2, p = _batch()
    enc = list(m.encoder.parameters())
    g_joint = _grads(jepa_losses(m, o, a, o2, p, mode="joint")["dyn"], enc)
    g_sg = _grads(jepa_losses(m, o, a, o2, p, mode="stopgrad")["dyn"], enc)
    z = m.encoder(o).detach()
    target_only = ((m.transition(z, a) - m.encoder(o2)) ** 2).mean()
    g_tgt = _grads(target_only, enc)
    for gj, gs, gt in zip(g_joint, g_sg, g_tgt):
        assert torch.allclose(gj, gs + gt, atol=1e-12)


def test_joint_gradient_matches_finite_differences():
    m = _model()
    o, a, o2, p = _batch(b=5)
    w = m.encoder.net[1][0].weight
    loss = lambda: jepa_losses(m, o, a, o2, p, mode="joint", c_p=2.0)["total"]  # noqa: E731
    (g,) = torch.autograd.grad(loss(), [w])
    h = 1e-6
    for idx in [(0, 0), (3, 17), (5, 100)]:
        with torch.no_grad():
            w[idx] += h
            up = loss()
            w[idx] -= 2 * h
            down = loss()
            w[idx] += h
        assert abs(float((up - down) / (2 * h)) - float(g[idx])) < 1e-6


def test_ema_update_is_a_convex_step():
    m = _model(ema=True)
    with torch.no_grad():
        for q in m.encoder.parameters():
            q.add_(1.0)
    before = [q.clone() for q in m.target_encoder.parameters()]
    m.update_target(0.25)
    for t, s, b in zip(m.target_encoder.parameters(), m.encoder.parameters(), before):
        assert torch.allclose(t, 0.75 * b + 0.25 * s)


def test_two_hot_identities():
    x = torch.tensor([-50.0, -3.2, -0.1, 0.0, 0.7, 4.0, 1000.0], dtype=torch.float64)
    th = two_hot(x, -10, 10, 101)
    assert torch.allclose(th.sum(-1), torch.ones(7, dtype=torch.float64))
    bins = torch.linspace(-10, 10, 101, dtype=torch.float64)
    assert torch.allclose((th * bins).sum(-1), symlog(x).clamp(-10, 10))
    assert ((th > 0).sum(-1) <= 2).all()
    # CE is minimised (= entropy of the two-hot) by logits = log two-hot; decode recovers x
    logits = torch.log(th + 1e-30)
    assert torch.allclose(two_hot_decode(logits[1:6]), x[1:6], atol=1e-9)
    ent = -(th * torch.log(th + 1e-30)).sum(-1)
    assert torch.allclose(two_hot_ce(logits, x), ent, atol=1e-9)


def test_twohot_model_and_vicreg_terms():
    m = _model(aux_loss="twohot", num_bins=11, vmin=-2, vmax=2)
    o, a, o2, p = _batch()
    out = jepa_losses(m, o, a, o2, p, mode="joint")
    assert out["aux"] > 0 and m.predict_aux(m.encoder(o)).shape == (12, 1)
    z = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2.0
    var, cov = vicreg_terms(z)
    assert float(var) == 0.0 and float(cov) < 0.02  # std 2 > 1: no variance penalty; independent dims
    var0, _ = vicreg_terms(torch.zeros(10, 3))
    assert abs(float(var0) - (1 - 1e-2)) < 1e-6
    out = jepa_losses(_model(), o, a, o2, p, mode="vicreg")
    assert {"vicreg_var", "vicreg_cov"} <= set(out)


def test_bad_inputs():
    m = _model()
    o, a, o2, p = _batch()
    with pytest.raises(ValueError, match=r"aux_target must have shape \(B=12, k=1\)"):
        jepa_losses(m, o, a, o2, p.repeat(1, 2))
    with pytest.raises(ValueError, match=r"actions must have shape \(12,\)"):
        jepa_losses(m, o, a[:3], o2, p)
    with pytest.raises(ValueError, match="not a loss mode"):
        jepa_losses(m, o, a, o2, p, mode="teacher")
    with pytest.raises(ValueError, match="needs a model built with ema=True"):
        jepa_losses(m, o, a, o2, p, mode="ema")
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 3, 8, 8\)"):
        m.encoder(torch.zeros(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="arch must be"):
        Encoder(OBS, arch="vit")
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4\)"):
        AuxHead(4, 1)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="a must be an integer tensor"):
        Transition(4, 2)(torch.zeros(2, 4), torch.zeros(2))
    assert "frozen" in LOSS_MODES
