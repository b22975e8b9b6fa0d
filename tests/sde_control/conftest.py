"""sde_control tests run with one torch thread (tests/conftest.py: ``one_torch_thread``); shared
fixtures of the simulation-engine tests."""

import dataclasses

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _same_paths(a, b, tol=1e-12):
    """Same paths (to tol, relative to 1 + |x|), same ‖u‖² (relative) and the same divergence record."""
    assert a.xs.shape == b.xs.shape
    assert torch.equal(torch.isnan(a.xs), torch.isnan(b.xs))
    err = ((a.xs - b.xs).abs() / (1.0 + b.xs.abs())).nan_to_num(0.0).max()
    assert float(err) < tol, float(err)
    uerr = ((a.u_sq - b.u_sq).abs() / (1.0 + b.u_sq.abs())).nan_to_num(0.0).max()
    assert float(uerr) < tol, float(uerr)
    assert torch.equal(a.diverged, b.diverged)
    torch.testing.assert_close(a.diverged_at, b.diverged_at, rtol=0, atol=0)


@pytest.fixture
def same_paths():
    """``same_paths(a, b, tol=1e-12)``: two ``Trajectories`` agree (paths, ‖u‖², divergence record)."""
    return _same_paths


@pytest.fixture(scope="session")
def trained_harmonic(tmp_path_factory):
    """The harmonic oscillator with an AS controller trained by the quick preset (shared; tests that
    change its weights restore them)."""
    from auxfn.sde_control import preset, train

    cfg = dataclasses.replace(preset("harmonic", "as", "quick"), eval_paths=0, certify_samples=1000)
    res = train(cfg, out=tmp_path_factory.mktemp("harmonic_as") / "run", quiet=True)
    assert res.summary["reached_zero"]
    return res.sde
