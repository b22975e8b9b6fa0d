"""Config helpers: JSON round trip of nested dataclasses, validation messages, overrides, diffs."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from auxfn.core.config import (
    ConfigError,
    check_choice,
    check_import_path,
    check_positive,
    check_range,
    config_diff,
    from_dict,
    from_json,
    import_object,
    is_import_path,
    load_config,
    override,
    save_config,
    to_dict,
    to_json,
)


class Mode(enum.Enum):
    JOINT = "joint"
    AUX_ONLY = "aux_only"


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0, 1, low_open=True)


@dataclass(frozen=True)
class Cfg:
    name: str = "x"
    mode: Mode = Mode.JOINT
    sizes: tuple[int, ...] = (64, 64)
    out: Path = Path("runs/a")
    optim: Optim = field(default_factory=Optim)
    maybe: float | None = None
    kind: Literal["mse", "ce"] = "mse"
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=lambda: {"dyn": 1.0})
    alpha: float = 0.5

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, 0, 1, low_open=True, high_open=True)


def test_round_trip_nested_enums_tuples_paths():
    cfg = Cfg(
        mode=Mode.AUX_ONLY, sizes=(3, 4, 5), out=Path("/tmp/r"), optim=Optim(lr=0.02, betas=(0.5, 0.6)),
        maybe=2.5, kind="ce", tags=["a", "b"], weights={"dyn": 2.0, "aux": 0.5},
    )
    d = to_dict(cfg)
    assert d["mode"] == "aux_only" and d["sizes"] == [3, 4, 5] and d["out"] == "/tmp/r"
    assert d["optim"] == {"lr": 0.02, "betas": [0.5, 0.6]}
    json.dumps(d)  # pure JSON primitives
    back = from_json(Cfg, to_json(cfg))
    assert back == cfg
    assert isinstance(back.sizes, tuple) and isinstance(back.optim.betas, tuple)
    assert isinstance(back.mode, Mode) and isinstance(back.out, Path)


def test_save_and_load(tmp_path):
    cfg = Cfg(alpha=0.25)
    path = save_config(cfg, tmp_path / "c.json")
    assert load_config(Cfg, path) == cfg
    (tmp_path / "run.json").write_text(json.dumps({"auxfn_version": "0", "config": to_dict(cfg)}))
    assert load_config(Cfg, tmp_path / "run.json") == cfg


def test_missing_fields_take_defaults():
    assert from_dict(Cfg, {"alpha": 0.1}) == Cfg(alpha=0.1)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"alpha": 1.5}, "config field 'alpha' = 1.5 is out of range: allowed 0 < alpha < 1"),
        ({"optim": {"lr": 0.0}}, "config field 'lr' = 0.0 is out of range: allowed 0 < lr <= 1"),
        ({"mode": "both"}, "config field 'mode' = 'both' is not allowed: choose one of 'joint', 'aux_only'"),
        ({"kind": "l1"}, "config field 'kind' = 'l1' is not allowed: choose one of 'mse', 'ce'"),
        ({"sizes": [1, "a"]}, "config field 'sizes[1]' must be an integer"),
        ({"optim": {"betas": [0.9]}}, "config field 'optim.betas' = [0.9] must have 2 entries"),
        ({"bogus": 1}, "unknown config field 'bogus' for Cfg"),
        ({"optim": {"lrr": 1}}, "unknown config field 'optim.lrr' for Optim"),
        ({"name": 3}, "config field 'name' must be a string"),
        ({"alpha": True}, "config field 'alpha' must be a number"),
    ],
)
def test_validation_messages_name_field_value_and_range(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(Cfg, data)
    assert needle in str(err.value)


def test_check_helpers():
    check_range("x", 1, 1, 2)
    with pytest.raises(ConfigError, match=r"'x' = 1 is out of range: allowed 1 < x <= 2"):
        check_range("x", 1, 1, 2, low_open=True)
    with pytest.raises(ConfigError, match="out of range"):
        check_range("x", float("nan"), 0, 1)
    with pytest.raises(ConfigError, match=r"allowed 0 < b"):
        check_positive("b", -2.1)
    with pytest.raises(ConfigError, match="choose one of 'a', 'b'"):
        check_choice("m", "c", ["a", "b"])
    assert issubclass(ConfigError, ValueError)


def test_override_from_cli_strings():
    cfg = Cfg()
    new = override(cfg, ["alpha=0.3", "optim.lr=0.05", "sizes=8,16", "mode=aux_only", "out=/x", "maybe=null"])
    assert new == Cfg(alpha=0.3, optim=Optim(lr=0.05), sizes=(8, 16), mode=Mode.AUX_ONLY, out=Path("/x"))
    assert override(cfg, ["sizes=[1, 2]", "optim.betas=0.1,0.2"]).optim.betas == (0.1, 0.2)
    assert override(cfg, {"optim.lr": 0.5, "mode": Mode.AUX_ONLY}) == Cfg(optim=Optim(lr=0.5), mode=Mode.AUX_ONLY)
    assert cfg == Cfg()  # the original is untouched (frozen)


def test_override_errors_name_the_field():
    with pytest.raises(ConfigError, match="unknown config field 'optim.momentum'"):
        override(Cfg(), ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="'alpha' = 2.0 is out of range"):
        override(Cfg(), ["alpha=2"])
    with pytest.raises(ConfigError, match="must look like field=value"):
        override(Cfg(), ["alpha"])


def test_config_diff():
    a, b = Cfg(), Cfg(alpha=0.2, optim=Optim(lr=0.1))
    assert sorted(config_diff(a, b)) == ["alpha", "optim.lr"]
    assert config_diff(a, to_dict(a)) == []
    assert config_diff({"x": 1}, {"x": 1, "y": 2}) == ["y"]


def test_import_paths(tmp_path, monkeypatch):
    from auxfn.core.errors import UserError

    for ok in ("pkg.mod:make", "m:Cls.build", "_a.b:c"):
        assert is_import_path(ok)
        check_import_path("f", ok)
    for bad in ("pkg.mod", "a:b:c", "pkg..mod:x", "pkg.mod:", ":x", "1pkg:x", "pkg mod:x", 3):
        assert not is_import_path(bad)
    check_import_path("f", "")  # empty: the field is unset
    with pytest.raises(ConfigError, match=r"config field 'cell_factory' = 'not a path' is not an import path"):
        check_import_path("cell_factory", "not a path")
    (tmp_path / "user_objs.py").write_text("import math\nVALUE = 3\ndef make():\n    return 'made'\n")
    (tmp_path / "broken_objs.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_object("user_objs:make", "f")() == "made"
    assert import_object("user_objs:math.sqrt", "f")(9.0) == 3.0  # a dotted attribute
    assert import_object("user_objs:VALUE", "f", require_callable=False) == 3
    with pytest.raises(UserError, match=r"system_factory 'user_objs:VALUE' is not callable"):
        import_object("user_objs:VALUE", "system_factory")
    with pytest.raises(UserError, match=r"'user_objs' has no attribute 'missing'"):
        import_object("user_objs:missing", "f")
    with pytest.raises(UserError, match=r"module 'broken_objs' failed to import \(RuntimeError: boom\).*PYTHONPATH"):
        import_object("broken_objs:x", "f")
    with pytest.raises(UserError, match=r"module 'no_such_mod_q' failed to import \(ModuleNotFoundError"):
        import_object("no_such_mod_q:x", "f")
