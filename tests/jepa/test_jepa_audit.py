"""Audit statistics: RankMe, probes, silhouette, cluster count, every training mode end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from auxfn.jepa.auditing import (
    adjusted_rand_index,
    cluster_labels,
    count_clusters,
    count_clusters_silhouette,
    rankme,
    ridge_probe,
    silhouette,
)
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


def test_count_clusters_silhouette():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 8)) * 10
    z = np.repeat(centres, 30, axis=0) + 0.1 * rng.standard_normal((150, 8))
    assert count_clusters_silhouette(z, 10) == 5
    assert count_clusters_silhouette(rng.standard_normal((150, 8)), 10) == 1  # one Gaussian blob: no structure


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_count_clusters_finds_known_counts(k):
    """k Gaussian clusters (centres >= 4 apart, within-cluster std 0.15 per axis in 8-D)."""
    rng = np.random.default_rng(k)
    centres = np.zeros((1, 8)) if k == 1 else _spread_centres(rng, k, 8, min_dist=4.0)
    z = np.repeat(centres, 40, axis=0) + 0.15 * rng.standard_normal((40 * k, 8))
    assert count_clusters(z, min_size=20) == k
    # scale-free and invariant to rigid motions: the same count after z -> 1e3 R z + t
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert count_clusters(1e3 * z @ q + 5.0, min_size=20) == k


def _spread_centres(rng, k, d, min_dist):
    out = []
    while len(out) < k:
        c = rng.uniform(-6, 6, size=d)
        if all(np.linalg.norm(c - o) >= min_dist for o in out):
            out.append(c)
    return np.array(out)


def test_count_clusters_counts_what_is_visible():
    rng = np.random.default_rng(5)
    # one isotropic high-dimensional blob: all points about equally far apart -> 1, not N singletons
    assert count_clusters(rng.standard_normal((300, 32)), min_size=16) == 1
    # 9 classes on a line whose neighbours overlap (spacing 1, std 1) read as one elongated cloud
    line = np.repeat(np.arange(9.0), 40)[:, None] * np.eye(4)[0] + rng.standard_normal((360, 4))
    assert count_clusters(line, min_size=20) <= 3
    # the same 9 classes pulled apart (spacing 10, std 0.3) read as 9 clusters
    apart = np.repeat(np.arange(9.0), 40)[:, None] * 10 * np.eye(4)[0] + 0.3 * rng.standard_normal((360, 4))
    assert count_clusters(apart, min_size=20) == 9
    # a collapsed cloud (every point equal) and stray points below min_size
    assert count_clusters(np.ones((50, 3)), min_size=5) == 1
    two = np.r_[np.zeros((30, 2)), np.full((30, 2), 10.0), [[50.0, -50.0]]] + 0.01 * rng.standard_normal((61, 2))
    assert count_clusters(two, min_size=5) == 2  # the far point is a stray
    three = np.r_[two[:60], np.full((5, 2), 50.0) + 0.01 * rng.standard_normal((5, 2))]
    assert count_clusters(three, min_size=5) == 3 and count_clusters(three, min_size=6) == 2
    with pytest.raises(ValueError, match="kappa must be > 0"):
        count_clusters(two, kappa=0.0)
    with pytest.raises(ValueError, match="min_size must be >= 2"):
        count_clusters(two, min_size=1)


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


def test_adjusted_rand_index_and_cluster_labels():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, a) == 1.0 and adjusted_rand_index(a, np.array([5, 5, 3, 3, 9, 9])) == 1.0

    x, y = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
    # sum C(n_ij,2) = 1; rows: 1 + 1 = 2; cols: C(3,2) + 0 = 3; expected 2*3/6 = 1; max (2+3)/2 = 2.5 -> (1-1)/(2.5-1) = 0
    assert adjusted_rand_index(x, y) == 0.0
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 30)
    z = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=float)[y] + 0.2 * rng.standard_normal((120, 2))
    lab = cluster_labels(z, min_size=10)
    assert adjusted_rand_index(lab, y) == 1.0 and lab.min() == 0
