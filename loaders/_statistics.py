"""Normalisation setup of :class:`~loaders.dataset.CubeBatchDataset`: statistics per field.

The mean and standard deviation of each field of the C axis (a plate's
channel, a climate variable, one pressure level of one) come from the
statistics the cube stores, where its layout says (:func:`stored_statistics`).
Where a cube stores none usable (or under CLAHE, which changes them), they are
estimated from up to 16 of its samples read whole (:func:`estimate_cube_statistics`);
the dataset says which it did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np
import xarray as xr

from loaders._samples import CubeInfo
from loaders._space import Field, Space
from loaders.transforms import estimate_statistics, pick_fields

__all__ = ["estimate_cube_statistics", "stored_statistics", "usable"]


def stored_statistics(
    ds: xr.Dataset, space: Space, fields: tuple[Field, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per field, the stored mean and std (NaN where the cube stores none)."""
    out = np.full((2, len(fields)), np.nan)
    for c, f in enumerate(fields):
        spec = space.layout.statistics.get(f.variable)
        if spec is None:
            continue
        dims = space.channel_dims[f.variable]
        for row, stat in enumerate(("mean", "std")):
            var = ds.get(spec.var(stat))
            if var is None:
                continue
            at = {}
            for d, value in zip(dims, f.key, strict=True):
                if d in var.dims:
                    values = [v.item() if hasattr(v, "item") else v for v in ds[d].values]
                    at[d] = values.index(value) if d in ds.coords else int(value)
            picked = var.isel(at)
            if picked.ndim == 0:
                out[row, c] = float(picked.values)
    return out[0], out[1]


def usable(mean: np.ndarray | None, std: np.ndarray | None) -> bool:
    """A finite mean and a positive std for every field."""
    return (
        mean is not None
        and std is not None
        and not np.isnan(mean).any()
        and not np.isnan(std).any()
        and bool(np.all(std > 0))
    )


def estimate_cube_statistics(
    cube: CubeInfo,
    rows: np.ndarray,
    read: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None, np.ndarray]],
    *,
    n_dims: int,
    targets: bool,
    timed: bool,
    pool: Executor,
) -> int:
    """Set the cube's mean and std (and the targets') from up to 16 of its samples, read whole.

    ``rows`` are the cube's rows of the sample table; ``read(row)`` gives one
    sample's ``(inputs, targets, present)`` over the whole extent of the window
    dims, CLAHE applied if asked, not normalised. Returns how many were read.
    """
    positions = np.unique(rows[:, : 1 + n_dims], axis=0)
    picked = positions[pick_fields(len(positions))]

    def channels_first(data: np.ndarray, timed: bool) -> np.ndarray:
        return np.moveaxis(data, 1, 0) if timed else data  # (k, C, ...) -> (C, k, ...)

    read_all: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
    for i in range(0, len(picked), 4):  # 4 samples at a time: bounded memory
        read_all.extend(pool.map(read, picked[i : i + 4]))

    def inputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, _, present in read_all:
            yield channels_first(x, timed), present

    cube.mean, cube.std = estimate_statistics(inputs())
    if targets:

        def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for _, y, _ in read_all:
                assert y is not None
                yield channels_first(y, timed), np.ones(y.shape[1 if timed else 0], bool)

        cube.target_mean, cube.target_std = estimate_statistics(outputs())
    cube.stats_samples = [
        tuple(_plain(cube.labels[d][p]) for d, p in zip(cube.labels, row[1:], strict=True))
        for row in picked
    ]
    return len(picked)


def _plain(value: object) -> object:
    """A label as a plain Python value (numpy scalars unwrapped)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
