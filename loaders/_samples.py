"""The sample table of :class:`~loaders.dataset.CubeBatchDataset`, and what it keeps of each cube.

Each cube is described once (:class:`CubeInfo`: where it is, its wells and
fields, ``present`` mask and stored statistics). Its samples are rows
``(cube, well, field, y0, x0)`` from xbatcher's selectors over present fields
(:func:`sample_rows`); the rows of all cubes form one table in cube order
(:func:`sample_table`), dealt into batches per rank (:func:`check_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import xbatcher

from cubes import conventions as cv
from cubes.errors import SchemaError
from loaders import order
from loaders._checks import names, stat_var

__all__ = ["CubeInfo", "CubeLike", "check_counts", "describe_cube", "sample_rows", "sample_table"]

CubeLike = str | xr.Dataset


@dataclass
class CubeInfo:
    """What the dataset keeps of one cube: where it is, and its small metadata."""

    url: str | None  # None: an in-memory Dataset, read through xarray
    storage_options: dict[str, Any]
    wells: np.ndarray
    fields: np.ndarray
    present: np.ndarray | None  # (well, field, selected channel)
    mean: np.ndarray | None
    std: np.ndarray | None
    data: xr.DataArray | None  # kept only when url is None
    channel_index: np.ndarray  # positions of the selected channels in this cube
    stats_fields: list[tuple[str, int]] | None = None  # set when the statistics were estimated


def describe_cube(ds: xr.Dataset, item: CubeLike, index: np.ndarray, variable: str) -> CubeInfo:
    """``ds`` (opened from ``item``) with the channels at positions ``index`` selected."""
    url = item if isinstance(item, str) else ds.encoding.get("source")
    stats = {}
    for name in ("mean", "std"):
        var = ds.get(stat_var(ds, variable, name))
        stats[name] = None if var is None else np.asarray(var.values, np.float64)[index]
    return CubeInfo(
        url=url,
        storage_options=dict(ds.encoding.get("storage_options", {})),
        wells=np.array([str(w) for w in ds["well"].values], dtype=object),
        fields=np.asarray(ds["field"].values).astype(np.int64),
        present=(
            np.asarray(ds[cv.PRESENT].values, dtype=bool)[:, :, index] if cv.PRESENT in ds else None
        ),
        mean=stats["mean"],
        std=stats["std"],
        data=None if url else ds[variable],
        channel_index=index,
    )


def sample_rows(
    k: int,
    ds: xr.Dataset,
    variable: str,
    input_dims: dict[str, int],
    overlap: dict[str, int],
    present: np.ndarray | None,
) -> np.ndarray:
    """Rows ``(cube, well, field, y0, x0)`` from xbatcher's selectors, present fields only."""
    schema = xbatcher.BatchSchema(
        ds[variable],
        input_dims=input_dims,
        input_overlap=overlap,
        batch_dims={"well": 1, "field": 1},
        concat_input_bins=False,
    )
    rows = [
        (k, s["well"].start, s["field"].start, s["y"].start, s["x"].start)
        for (s,) in schema.selectors.values()
    ]
    table = np.array(rows, dtype=np.int64).reshape(-1, 5)
    if present is not None:
        any_channel = np.asarray(present.any(axis=-1))
        table = table[any_channel[table[:, 1], table[:, 2]]]
    return table


def sample_table(samples: list[np.ndarray], items: list[CubeLike], channels: Any) -> np.ndarray:
    """The cubes' rows as one table, sorted in cube order (shards contiguous)."""
    table = np.concatenate(samples)
    ordered = table[np.lexsort(table.T[::-1])]
    if len(table) == 0:
        raise SchemaError(
            f"No samples: none of the fields of {names(items)} has any of the channels "
            f"{list(channels)} present. Check the cubes' 'present' mask and channels=."
        )
    return ordered


def check_counts(
    n: int, bs: int, world_size: int, *, drop_last: bool, uneven: str
) -> order.BatchCounts:
    """Batches per rank of ``n`` samples; raises if a rank would get none."""
    counts = order.batch_counts(
        n,
        bs,
        world_size,
        drop_last=drop_last,
        uneven=uneven,  # type: ignore[arg-type]
    )
    if counts.per_rank == 0:
        why = (
            f"{n} samples make no full batch of {bs} with drop_last=True"
            if n // bs == 0 and drop_last
            else f"{n} samples in batches of {bs} give fewer batches than the "
            f"{world_size} ranks with uneven='drop'"
        )
        raise SchemaError(f"{why}; lower batch_size, set drop_last=False or use uneven='pad'.")
    return counts
