"""Feeding cubes to PyTorch: :class:`CubeBatchDataset` and its :class:`CubeLoader`.

``loaders`` reads cubes and never writes them. :mod:`loaders.order` holds the
sample order and the sharding across ranks, as pure functions of
``(seed, epoch)``; :mod:`loaders.reader` and :mod:`loaders.cache` the read path;
:mod:`loaders.checkpoints` saves and resumes training (model, optimizer, loader).
"""

from __future__ import annotations

from loaders.checkpoints import Checkpoints, DamagedCheckpointWarning
from loaders.dataset import CubeBatchDataset
from loaders.loader import CubeLoader, to_device

__all__ = [
    "Checkpoints",
    "CubeBatchDataset",
    "CubeLoader",
    "DamagedCheckpointWarning",
    "to_device",
]
