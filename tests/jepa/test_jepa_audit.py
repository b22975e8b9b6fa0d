"""Audit statistics: RankMe, probes, silhouette, cluster count, every training mode end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from auxfn.jepa.auditing import count_clusters, rankme, ridge_probe, silhouette
from auxfn.jepa.losses import MODES
from auxfn.jepa.training import JEPAConfig, train


def test_rankme_counts_effective_dimensions():
    rng = np.random.default_rng(0)
    assert abs(rankme(rng.standard_normal((20000, 4))) - 4.0) < 0.05
    line = rng.standard_normal((500, 1)) @ rng.standard_normal((1, 6))
    assert abs(rankme(line) - 1.0) < 1e-6
    assert rankme(np.ones((10, 3))) == 0.0


def test_ridge_probe_and_silhouette():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = rng.integers(0, 3, size=600)
    z = centres[y] + 0.3 * rng.standard_normal((600, 2))
    assert ridge_probe(z[:300], y[:300], z[300:], y[300:]) == 1.0
    noise = rng.standard_normal((600, 5))
    assert ridge_probe(noise[:300], y[:300], noise[300:], y[300:]) < 0.5  # chance is 1/3
    assert silhouette(z, y) > 0.9
    # two points per cluster at distance 1, clusters 10 apart: s = 1 - 1/10 for each point
    pts = np.array([[0.0], [1.0], [11.0], [12.0]])
    lab = np.array([0, 0, 1, 1])
    a, b = 1.0, np.array([11.5, 10.5, 10.5, 11.5])
    assert np.isclose(silhouette(pts, lab), np.mean((b - a) / b))


def test_count_clusters():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 8)) * 10
    z = np.repeat(centres, 30, axis=0) + 0.1 * rng.standard_normal((150, 8))
    assert count_clusters(z, 10) == 5
    assert count_clusters(rng.standard_normal((150, 8)), 10) == 1  # one Gaussian blob: no structure


@pytest.mark.parametrize("mode", [m for m in MODES])
def test_every_mode_trains_and_audits(tmp_path, mode):
    cfg = JEPAConfig(mode=mode, steps=6, batch_size=16, hidden=32, latent_dim=4, log_every=3, checkpoint_every=6, audit_n_render=2, figures=False)
    if mode == "random_aux":
        cfg = dataclasses.replace(cfg, random_dim=5)
    res = train(cfg, out=tmp_path / mode)
    s = res.summary
    assert s["n_classes"] == 9 and np.isfinite(s["premise/dyn_mean"]) and np.isfinite(s["premise/aux_mean"])
    assert res.model.aux_dim == (5 if mode == "random_aux" else 1)
    assert (res.model.target_encoder is not None) == (mode == "ema")
