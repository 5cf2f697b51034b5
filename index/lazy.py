"""Names a package exports without importing them until first use (PEP 562), so that a light
module of a package (the command line needs several) loads without numpy, Pillow and LMDB."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def exporter(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name `n` lives in the submodule
    `exports[n]`; a name once loaded is kept in `namespace` (the package's globals)."""
    names = sorted(exports)

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value  # the next lookup is a plain attribute
        return value

    return getattr_, lambda: names
