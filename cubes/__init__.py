"""What a cube is, and how to open it.

A cube is a Zarr v3 group in any fsspec store that follows the conventions in
:mod:`cubes.conventions`. ``cubes`` imports neither ``ingest`` nor ``loaders``,
and never imports torch.
"""

from __future__ import annotations

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

try:
    from importlib.metadata import version as _version

    __version__ = _version("cellcubes")
except Exception:  # noqa: BLE001 - not installed (running from a checkout)
    __version__ = "0+unknown"
