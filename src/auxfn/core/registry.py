"""The method registry: how a method package adds ``auxfn <method> ...`` and its demo.

A method package ships ``auxfn/<package>/cli.py`` defining ``METHOD = Method(...)``;
the CLI finds it by scanning ``auxfn``'s subpackages, so no core file is edited to add
a method. Code outside auxfn registers the same way through the ``auxfn.methods``
entry-point group, through ``AUXFN_PLUGINS=module[,module...]`` (modules defining
``METHOD``), or by calling :func:`register`.

Keep ``cli.py`` modules light: import torch and the method's code inside the command
functions, so that ``auxfn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DemoContext",
    "DemoResult",
    "Method",
    "Preset",
    "register",
    "registered",
    "unregister",
]

Command = Callable[[list[str]], "int | None"]


@dataclass(frozen=True)
class DemoContext:
    """What ``auxfn demo`` gives each method's demo function."""

    out_dir: Path  # the method's own folder inside the demo's output folder
    quick: bool  # quick presets: the method's part must take under 30 s on 2 cores
    quiet: bool = False
    seed: int = 0
    device: str = "cpu"


@dataclass
class DemoResult:
    """What a method's demo shows: one row of the demo table plus material for the report."""

    shown: str  # what was shown, e.g. "harmonic oscillator: AS control vs uncontrolled"
    headline: str  # the headline figure, e.g. "tau_0.05 = 0.9 s; uncontrolled diverges"
    figures: list[Path] = field(default_factory=list)
    details: str = ""  # Markdown for the method's section of report.md
    ok: bool = True  # False when the demo ran but its claim did not hold


@dataclass(frozen=True)
class Preset:
    """A named config instance with a one-line description (``auxfn <method> presets``)."""

    help: str
    config: Any


@dataclass(frozen=True)
class Method:
    """One method's CLI surface.

    ``commands`` maps a sub-command name to ``(one-line help, function(argv) -> exit code)``;
    the function receives the arguments after ``auxfn <method> <command>``.
    """

    name: str  # as typed on the command line, e.g. "sde-control"
    summary: str  # one line for ``auxfn --help``
    commands: Mapping[str, tuple[str, Command]]
    demo: Callable[[DemoContext], DemoResult] | None = None
    order: int = 100  # position in ``auxfn demo`` and ``auxfn --help``

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c == "-" for c in self.name):
            raise ValueError(f"method name must be letters, digits and '-', got {self.name!r}")
        for cmd, entry in self.commands.items():
            if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[1])):
                raise ValueError(f"method {self.name!r}: command {cmd!r} must be (help, function)")


_REGISTRY: dict[str, Method] = {}
_DISCOVERED = False
_LOAD_ERRORS: dict[str, str] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry; a second method with the same name is an error."""
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a Method, got {type(method).__name__}")
    if method.name in ("demo",) or method.name.startswith("-"):
        raise ValueError(f"method name {method.name!r} is reserved")
    if method.name in _REGISTRY and not replace and _REGISTRY[method.name] is not method:
        raise ValueError(f"a method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _register_module(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
        method = getattr(module, "METHOD", None)
        if method is not None:
            register(method, replace=True)
    except Exception as err:  # one broken plugin must not take the whole CLI down
        _LOAD_ERRORS[module_name] = f"{type(err).__name__}: {err}"


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import auxfn

    for info in pkgutil.iter_modules(auxfn.__path__):
        if info.ispkg and info.name != "core":
            if importlib.util.find_spec(f"auxfn.{info.name}.cli") is not None:
                _register_module(f"auxfn.{info.name}.cli")
    from importlib.metadata import entry_points

    for ep in entry_points(group="auxfn.methods"):
        try:
            obj = ep.load()
            register(obj if isinstance(obj, Method) else obj.METHOD, replace=True)
        except Exception as err:
            _LOAD_ERRORS[ep.value] = f"{type(err).__name__}: {err}"
    for name in filter(None, (s.strip() for s in os.environ.get("AUXFN_PLUGINS", "").split(","))):
        _register_module(name)


def registered() -> dict[str, Method]:
    """All registered methods (discovering the built-in ones on first call), in demo order."""
    _discover()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def load_errors() -> dict[str, str]:
    """Modules that define methods but failed to import, with their error."""
    _discover()
    return dict(_LOAD_ERRORS)
