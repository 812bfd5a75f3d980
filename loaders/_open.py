"""Opening the cubes of a :class:`~loaders.dataset.CubeBatchDataset`: one sample space, one table.

The first cube's layout and the dataset's arguments give the sample space
(:func:`loaders._space.resolve_space`); every cube is described against it
(its statistics from where its layout stores them), checked to have room for
the window, and its samples listed. The result is what the dataset keeps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from cubes import open_cube
from cubes.errors import SchemaError
from loaders._samples import CubeInfo, CubeLike, describe_cube, sample_rows, sample_table
from loaders._space import Space, resolve_space
from loaders._statistics import stored_statistics

__all__ = ["open_cubes"]


def _check_room(cube: CubeInfo, space: Space) -> None:
    for dim, size in space.window.items():
        if cube.sizes.get(dim, 0) < size:
            raise SchemaError(
                f"{cube.url or 'An in-memory Dataset'} has {cube.sizes.get(dim, 0)} along "
                f"'{dim}', less than the window of {size} (input_dims); every cube needs "
                "room for it."
            )


def open_cubes(
    items: list[CubeLike], arguments: dict[str, Any], storage_options: dict[str, Any] | None
) -> tuple[Space, list[CubeInfo], np.ndarray]:
    """The sample space, each cube's description and the sample table (cube order)."""
    space: Space | None = None
    cubes: list[CubeInfo] = []
    samples = []
    for k, item in enumerate(items):
        ds = (
            item
            if isinstance(item, xr.Dataset)
            else open_cube(item, storage_options=storage_options, require_complete=True, dask=False)
        )
        if space is None:
            space = resolve_space(ds, **arguments)
        cube = describe_cube(ds, item, space)
        _check_room(cube, space)
        cube.mean, cube.std = stored_statistics(ds, space, space.inputs)
        if space.targets:
            cube.target_mean, cube.target_std = stored_statistics(ds, space, space.targets)
        cubes.append(cube)
        samples.append(sample_rows(k, cube, space))
    assert space is not None  # items is not empty
    where = ", ".join(i if isinstance(i, str) else "<Dataset>" for i in items)
    return space, cubes, sample_table(samples, where, space)
