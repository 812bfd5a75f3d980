"""What a cube is, and how to open it.

A cube is a Zarr v3 group in any fsspec store that follows the conventions in
:mod:`cubes.conventions`. ``cubes`` imports neither ``ingest`` nor ``loaders``,
and never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cubes.errors import (
    ArgumentError,
    CubeError,
    CubeExistsError,
    IncompleteCubeError,
    IncompleteCubeWarning,
    InvalidImageError,
    SchemaError,
    SourceNotFoundError,
    StorageError,
)

if TYPE_CHECKING:
    from cubes.open import open_batch, open_cube

__all__ = [
    "ArgumentError",
    "CubeError",
    "CubeExistsError",
    "IncompleteCubeError",
    "IncompleteCubeWarning",
    "InvalidImageError",
    "SchemaError",
    "SourceNotFoundError",
    "StorageError",
    "open_batch",
    "open_cube",
]


def __getattr__(name: str) -> Any:
    """``open_cube`` and ``open_batch`` import xarray on first use, not with ``cubes``."""
    if name in ("open_batch", "open_cube"):
        from cubes import open as _open

        return getattr(_open, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    from importlib.metadata import version as _version

    __version__ = _version("cellcubes")
except Exception:  # noqa: BLE001 - not installed (running from a checkout)
    __version__ = "0+unknown"
