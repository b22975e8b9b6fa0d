"""t-SNE of the audit latents: drawn with scikit-learn when it is installed, skipped with a note when not."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from auxfn.jepa.auditing import tsne_available, tsne_embedding
from auxfn.jepa.training import JEPAConfig, train

TINY = JEPAConfig(steps=6, batch_size=16, hidden=32, latent_dim=4, log_every=3, checkpoint_every=6, audit_n_render=2)


def test_tsne_keeps_separated_clusters_apart():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    centres = rng.standard_normal((4, 16)) * 10
    z = centres[y] + 0.5 * rng.standard_normal((100, 16))
    emb = tsne_embedding(z, seed=3)
    assert emb.shape == (100, 2)
    # every point is nearer its own cluster's centroid than any other in the 2-D picture
    cent = np.stack([emb[y == c].mean(0) for c in range(4)])
    assert np.all(np.argmin(((emb[:, None] - cent[None]) ** 2).sum(-1), axis=1) == y)
    np.testing.assert_allclose(tsne_embedding(z, seed=3), emb)  # same seed, same picture
    with pytest.raises(ValueError, match="N >= 5"):
        tsne_embedding(z[:3])


def test_audit_draws_the_tsne_figure(tmp_path):
    pytest.importorskip("sklearn")
    res = train(TINY, out=tmp_path / "r")
    assert (res.run_dir / "figures" / "tsne.png").exists() and (res.run_dir / "figures" / "pca.png").exists()
    assert "t-SNE figure skipped" not in (res.run_dir / "report.md").read_text()


def test_without_sklearn_the_tsne_figure_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # makes the import fail as if not installed
    assert not tsne_available() and tsne_embedding(np.zeros((10, 2))) is None
    res = train(TINY, out=tmp_path / "r")
    assert not (res.run_dir / "figures" / "tsne.png").exists() and (res.run_dir / "figures" / "pca.png").exists()
    assert "t-SNE figure skipped: scikit-learn is not installed" in (res.run_dir / "report.md").read_text()
