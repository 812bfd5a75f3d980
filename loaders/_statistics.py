"""Normalisation setup of :class:`~loaders.dataset.CubeBatchDataset`: per-channel statistics.

Whether a cube's stored per-channel mean and std can be used
(:func:`usable_statistics`) and, where not (or under CLAHE, which changes
them), their estimate from up to 16 of the cube's fields
(:func:`estimate_cube_statistics`). The dataset says which it did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np

from loaders._samples import CubeInfo
from loaders.transforms import SampleTransforms, estimate_statistics, pick_fields

__all__ = ["estimate_cube_statistics", "usable_statistics"]


def usable_statistics(cube: CubeInfo) -> bool:
    """The cube stores a finite mean and a positive std for every selected channel."""
    return (
        cube.mean is not None
        and cube.std is not None
        and not np.isnan(cube.mean).any()
        and not np.isnan(cube.std).any()
        and bool(np.all(cube.std > 0))
    )


def estimate_cube_statistics(
    cube: CubeInfo,
    rows: np.ndarray,
    read: Callable[[int, int], np.ndarray],
    *,
    channels: int,
    clahe: bool,
    pool: Executor,
) -> int:
    """Set ``cube.mean``, ``cube.std`` and ``cube.stats_fields`` from some of its fields.

    ``rows`` are the cube's rows of the sample table; ``read(well, field)`` gives
    a whole field's pixels ``(channel, y, x)``. Returns how many fields were read.
    """
    shards = np.unique(rows[:, 1:3], axis=0)
    picked = shards[pick_fields(len(shards))]
    equalise = SampleTransforms(clahe=clahe)

    def field(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wi, fi = int(key[0]), int(key[1])
        pixels = read(wi, fi).astype(np.float32)
        present = np.ones(channels, bool) if cube.present is None else cube.present[wi, fi]
        return equalise(pixels, None, None), present

    def fields() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(picked), 4):  # 4 fields at a time: bounded memory
            yield from pool.map(field, picked[i : i + 4])

    cube.mean, cube.std = estimate_statistics(fields())
    cube.stats_fields = [(str(cube.wells[wi]), int(cube.fields[fi])) for wi, fi in picked]
    return len(picked)
