"""auxfn.core.lazy: lazy public names of a package."""

from __future__ import annotations

import sys
import types

import pytest

from auxfn.core.lazy import lazy_exports


def test_names_load_on_first_use_and_are_cached(monkeypatch):
    pkg = types.ModuleType("fakepkg")
    sub = types.ModuleType("fakepkg.sub")
    sub.f = lambda: 42
    monkeypatch.setitem(sys.modules, "fakepkg", pkg)
    monkeypatch.setitem(sys.modules, "fakepkg.sub", sub)
    pkg.__all__, pkg.__getattr__, pkg.__dir__ = lazy_exports("fakepkg", {"sub": ("f",)})
    assert pkg.__all__ == ["f"] and "f" not in vars(pkg) and "f" in pkg.__dir__()
    assert pkg.f() == 42 and vars(pkg)["f"] is sub.f  # cached after the first lookup
    with pytest.raises(AttributeError, match="'fakepkg' has no attribute 'g'"):
        _ = pkg.g


def test_ambiguous_exports_are_rejected():
    with pytest.raises(ValueError, match="exported by both"):
        lazy_exports("p", {"a": ("x",), "b": ("x",)})
    with pytest.raises(ValueError, match="also a submodule name"):
        lazy_exports("p", {"train": ("train",)})
