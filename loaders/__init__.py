"""Feeding cubes to PyTorch: :class:`CubeBatchDataset` and its :class:`CubeLoader`.

``loaders`` reads cubes and never writes them. :mod:`loaders.order` holds the
sample order and the sharding across ranks, as pure functions of
``(seed, epoch)``; :mod:`loaders.reader` and :mod:`loaders.cache` the read path.
"""

from __future__ import annotations

from loaders.dataset import CubeBatchDataset
from loaders.loader import CubeLoader, to_device

__all__ = ["CubeBatchDataset", "CubeLoader", "to_device"]
