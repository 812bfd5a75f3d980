"""Feeding cubes to PyTorch: :class:`CubeBatchDataset`.

``loaders`` reads cubes and never writes them.
"""

from __future__ import annotations

from loaders.dataset import CubeBatchDataset

__all__ = ["CubeBatchDataset"]
