"""Public names imported from their modules on first use (PEP 562 ``__getattr__``).

A package lists where each heavy name lives; ``import ingest`` and the command
line's parser then import neither xarray, dask, pandas nor zarr.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` from the module ``homes[name]``.

    Examples
    --------
    >>> __getattr__ = lazy_names(__name__, {"write_cubes": "ingest.writer"})
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    return __getattr__
