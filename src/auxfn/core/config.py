"""Helpers for configs written as frozen dataclasses.

Every method's config is a ``@dataclass(frozen=True)`` whose ``__post_init__``
validates its fields with the ``check_*`` helpers below. This module turns such
configs into JSON and back (nested dataclasses, enums, tuples, paths, optionals,
literals), applies ``replace``-style overrides given as ``"a.b=value"`` strings,
and lists the fields in which two configs differ (used when a checkpoint is
loaded into a run).

Errors are :class:`ConfigError` (a ``ValueError``) with messages that name the
field, the value and what is allowed, e.g.
``config field 'alpha' = 1.5 is out of range: allowed 0 < alpha < 1``.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from auxfn.core.errors import ConfigError, UserError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "check_choice",
    "check_import_path",
    "check_positive",
    "check_range",
    "config_diff",
    "from_dict",
    "from_json",
    "import_object",
    "is_import_path",
    "load_config",
    "override",
    "save_config",
    "to_dict",
    "to_json",
]


# --------------------------------------------------------------------------- validation


def _fmt(value: Any) -> str:
    return repr(value.value) if isinstance(value, enum.Enum) else repr(value)


def check_range(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high`` (``<`` where the side is open).

    A NaN is always out of range. ``None`` for a bound means unbounded on that side.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{low:g} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high:g}"
        raise ConfigError(
            f"config field '{field}' = {_fmt(value)} is out of range: allowed {lo}{field}{hi}"
        )


def check_positive(field: str, value: float) -> None:
    """Raise ``ConfigError`` unless ``value > 0``."""
    check_range(field, value, 0, None, low_open=True)


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        allowed = ", ".join(_fmt(c) for c in choices)
        raise ConfigError(f"config field '{field}' = {_fmt(value)} is not allowed: choose one of {allowed}")


def is_import_path(value: Any) -> bool:
    """True for ``"package.module:attr"``: dotted identifiers, one colon, a (dotted) attribute."""
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    return all(part and all(p.isidentifier() for p in part.split(".")) for part in value.split(":"))


def check_import_path(field: str, value: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is empty or an import path ``"package.module:attr"``."""
    if value and not is_import_path(value):
        raise ConfigError(f"config field '{field}' = {value!r} is not an import path: allowed 'package.module:attribute'")


def import_object(path: str, field: str, *, require_callable: bool = True) -> Any:
    """The object named by the import path ``"package.module:attr"`` (``attr`` may be dotted).

    Config fields that name a user's factory (a cell, a task, a system) are resolved here, so a run
    records a path instead of an object and can be rebuilt from its folder. Failures are
    :class:`UserError` naming ``field`` and ``path``.
    """
    if not is_import_path(path):
        raise UserError(f"{field} {path!r} is not an import path: allowed 'package.module:attribute'")
    module_name, attr = path.split(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or an error raised while the user's module runs
        raise UserError(f"{field} {path!r} cannot be imported: module {module_name!r} failed to import "
                        f"({type(err).__name__}: {err}); install it or add its folder to PYTHONPATH") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{field} {path!r} cannot be imported: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if require_callable and not callable(obj):
        raise UserError(f"{field} {path!r} is not callable")
    return obj


# --------------------------------------------------------------------------- to JSON


def to_dict(obj: Any) -> Any:
    """Convert a (nested) dataclass into JSON primitives.

    Enums become their value, tuples and lists become lists, paths become strings.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return to_dict(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON: {obj!r}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text of a (nested) dataclass; see :func:`to_dict`."""
    return json.dumps(to_dict(obj), indent=indent, sort_keys=False)


# --------------------------------------------------------------------------- from JSON


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, field: str) -> Any:
    """Convert JSON ``value`` to type ``tp`` or raise ``ConfigError`` naming ``field``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any or tp is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, field)
            except ConfigError:
                continue
        raise ConfigError(
            f"config field '{field}' = {value!r} matches none of {_type_name(tp)}"
        )
    if origin is typing.Literal:
        if value not in args:
            check_choice(field, value, args)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config field '{field}' must be a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _prefix=f"{field}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            try:  # also accept the member name, as typed on a command line
                return tp[value]
            except (KeyError, TypeError):
                check_choice(field, value, [m.value for m in tp])
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{field}' must be a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(
                    f"config field '{field}' = {value!r} must have {len(args)} entries, got {len(value)}"
                )
            items = [_convert(a, v, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            elem = args[0] if args else Any
            items = [_convert(elem, v, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config field '{field}' must be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, f"{field}.{k}") for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"config field '{field}' must be a path, got {value!r}")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{field}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config field '{field}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{field}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{field}' must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config field '{field}' has unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from JSON primitives (inverse of :func:`to_dict`).

    Missing fields take their defaults; unknown fields are an error that lists the
    known ones. Validation in ``__post_init__`` runs as usual.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config field '{_prefix}{unknown[0]}' for {cls.__name__}; "
            f"known fields: {', '.join(fields)}"
        )
    kwargs = {name: _convert(hints[name], value, f"{_prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field without default is missing
        raise ConfigError(f"cannot build {cls.__name__}: {err}") from None


def from_json(cls: type[T], text: str) -> T:
    """Inverse of :func:`to_json`."""
    return from_dict(cls, json.loads(text))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` as JSON to ``path``."""
    path = Path(path)
    path.write_text(to_json(cfg) + "\n")
    return path


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config`; ``path`` may hold ``{"config": ...}``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, Mapping) and "config" in data and isinstance(data["config"], Mapping):
        data = data["config"]
    return from_dict(cls, data)


# --------------------------------------------------------------------------- overrides


def _parse_text(tp: Any, text: str) -> Any:
    """Interpret a command-line string for a field of type ``tp`` as JSON where that fits."""
    if tp is str or (isinstance(tp, type) and issubclass(tp, (enum.Enum, Path))):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    origin = typing.get_origin(tp)
    if origin in (tuple, list) or "," in text:
        return [_auto(part.strip()) for part in text.strip("()[]").split(",") if part.strip()]
    return text


def _auto(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def override(cfg: T, overrides: Mapping[str, Any] | Iterable[str]) -> T:
    """Return a copy of ``cfg`` with fields replaced, like ``dataclasses.replace``.

    ``overrides`` is a mapping ``{"a.b": value}`` or strings ``"a.b=value"`` as typed on
    a command line (values parsed as JSON where the field's type wants it, so
    ``sizes=64,64`` and ``sizes=[64,64]`` both give a tuple). Nested dataclasses are
    reached with dots. Each replaced level is re-validated by its ``__post_init__``.
    """
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
        from_text = False
    else:
        items = []
        for text in overrides:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {text!r} must look like field=value")
            items.append((key.strip(), value))
        from_text = True
    for key, value in items:
        cfg = _override_one(cfg, key.split("."), value, from_text, prefix="")
    return cfg


def _override_one(cfg: Any, parts: list[str], value: Any, from_text: bool, prefix: str) -> Any:
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"config field '{prefix.rstrip('.')}' is not a dataclass and has no fields")
    name = parts[0]
    fields = {f.name for f in dataclasses.fields(cfg) if f.init}
    if name not in fields:
        raise ConfigError(
            f"unknown config field '{prefix}{name}' for {type(cfg).__name__}; known fields: {', '.join(sorted(fields))}"
        )
    if len(parts) > 1:
        new = _override_one(getattr(cfg, name), parts[1:], value, from_text, f"{prefix}{name}.")
    else:
        tp = typing.get_type_hints(type(cfg))[name]
        raw = _parse_text(tp, value) if from_text and isinstance(value, str) else to_dict(value)
        new = _convert(tp, raw, f"{prefix}{name}")
    return dataclasses.replace(cfg, **{name: new})


# --------------------------------------------------------------------------- diff


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two configs (or their dicts)."""
    a = to_dict(a) if dataclasses.is_dataclass(a) else a
    b = to_dict(b) if dataclasses.is_dataclass(b) else b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                out.append(f"{prefix}{key}")
            else:
                out.extend(config_diff(a[key], b[key], f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".")]
