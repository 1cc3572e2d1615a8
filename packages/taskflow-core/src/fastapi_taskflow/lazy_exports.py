"""Names a package exports but imports only when first used (PEP 562).

``fastapi_taskflow`` and ``fastapi_taskflow.admin`` export classes whose modules import
FastAPI (about half a second). The ``taskflow`` command line imports these packages for
their other names and never needs FastAPI: with those classes imported on first use, it
starts without it. ``from fastapi_taskflow import TaskManager`` works as before; type
checkers read the names from the package's ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for its lazy ``exports``.

    Args:
        package: the package's ``__name__``.
        exports: each lazily exported name, with the module (relative to ``package``)
            that defines it.

    The first access of a name imports its module and keeps the value in the package,
    so later accesses are plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
