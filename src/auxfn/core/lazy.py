"""Lazy public names for a package (PEP 562), so that importing it stays light.

``auxfn --help`` imports every method's ``cli`` module and therefore its package; a package
whose ``__init__`` imported its models would load torch for every CLI call. A method package
instead writes::

    __all__, __getattr__, __dir__ = lazy_exports(__name__, {"model": ("JSLDS",), ...})

and each public name is imported from its submodule on first use (then cached in the
package's namespace, so later lookups skip ``__getattr__``). No submodule may share its name
with a public name, or the submodule would shadow it once imported.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` exporting ``{submodule: names}``."""
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is exported by both {where[name]!r} and {module!r}")
            if name in exports:
                raise ValueError(f"{package}: public name {name!r} is also a submodule name")
            where[name] = module
    public = sorted(where)

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return public, __getattr__, __dir__
