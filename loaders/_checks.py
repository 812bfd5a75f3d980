"""Validation of CubeBatchDataset's arguments: each error names the argument and the remedy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from cubes.errors import SchemaError
from cubes.layout import Layout, layout_of
from loaders import order

__all__ = [
    "check_crop",
    "check_epoch",
    "check_input_dims",
    "check_numbers",
    "distributed",
    "names",
    "select_channels",
]


def distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1:
        raise SchemaError(f"world_size={world_size}: give the number of ranks, 1 or more.")
    if not 0 <= rank < world_size:
        raise SchemaError(
            f"rank={rank} with world_size={world_size}: rank must be in 0 .. {world_size - 1}. "
            "Pass the process's rank in the job (or initialise torch.distributed first)."
        )
    return rank, world_size


def check_numbers(
    batch_size: int,
    seed: int,
    shuffle_buffer: int | None,
    uneven: str,
    threads: int,
    memory_cache_mb: float,
) -> None:
    if batch_size < 1:
        raise SchemaError(f"batch_size must be at least 1, not {batch_size}.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SchemaError(f"seed={seed!r}: give a non-negative integer.")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise SchemaError(
            f"shuffle_buffer={shuffle_buffer}: give a number of samples (1 or more), or None "
            "for 4 * batch_size."
        )
    if uneven not in order.UNEVEN:
        raise SchemaError(
            f"uneven={uneven!r}: give 'pad' (repeat samples so every rank has as many "
            "batches) or 'drop' (drop the last batches)."
        )
    if threads < 1:
        raise SchemaError(f"threads={threads}: give 1 or more concurrent reads.")
    if memory_cache_mb < 0:
        raise SchemaError(f"memory_cache_mb={memory_cache_mb}: give a size in MiB, or 0 for none.")


def check_epoch(epoch: int) -> int:
    if not isinstance(epoch, int | np.integer) or epoch < 0:
        raise SchemaError(f"epoch={epoch!r}: give a non-negative integer.")
    return int(epoch)


# The dims this loader serves today: a plate's. Other layouts (climate, arrays) are read
# through their recorded layout once the loader serves any cube.
PLATE_DIMS = ("well", "field", "channel", "y", "x")


def plate_variable(ds: xr.Dataset) -> str:
    """The variable holding the samples, from the cube's recorded layout.

    Raises
    ------
    SchemaError
        The cube's layout is not one this loader serves (not a plate).
    """
    layout = _layout(ds)
    if layout is None:  # a Dataset built by hand: the plate's name
        return "images"
    if tuple(layout.sample_dims) + (layout.channel_dim,) + tuple(layout.window_dims) != PLATE_DIMS:
        raise SchemaError(
            f"{ds.encoding.get('source', 'The cube')} is a {layout.kind} cube (samples over "
            f"{layout.sample_dims}); CubeBatchDataset serves plate cubes {PLATE_DIMS} so far. Read "
            "it with cubes.open_cube."
        )
    return layout.variables[0]


def stat_var(ds: xr.Dataset, variable: str, stat: str) -> str:
    """The name of ``variable``'s statistic ``stat`` in the cube, per its layout."""
    layout = _layout(ds)
    spec = layout.statistics.get(variable) if layout is not None else None
    return spec.var(stat) if spec is not None else f"channel_{stat}"


def _layout(ds: xr.Dataset) -> Layout | None:
    try:
        return layout_of(ds.attrs, str(ds.encoding.get("source", "")))
    except SchemaError:
        return None


def select_channels(
    ds: xr.Dataset, channels: Sequence[str] | None, variable: str
) -> tuple[tuple[str, ...], np.ndarray]:
    if variable not in ds:
        raise SchemaError(f"The Dataset has no variable '{variable}'; it has {list(ds.data_vars)}.")
    missing = [d for d in PLATE_DIMS if d not in ds[variable].dims]
    if missing:
        raise SchemaError(
            f"'{variable}' has dims {ds[variable].dims}; a plate cube has {PLATE_DIMS} "
            f"(missing {missing})."
        )
    names = [str(c) for c in np.asarray(ds["channel"].values)]
    if channels is None:
        return tuple(names), np.arange(len(names))
    if isinstance(channels, str):
        channels = [channels]
    unknown = [c for c in channels if c not in names]
    if unknown or not channels:
        what = f"unknown {unknown}" if unknown else "empty selection"
        raise SchemaError(
            f"channels={list(channels)}: {what}; the cube has {names}. Pick names from "
            "that list, or pass channels=None for all."
        )
    return tuple(channels), np.array([names.index(c) for c in channels])


def check_input_dims(
    ds: xr.Dataset, input_dims: dict[str, int] | None, variable: str
) -> dict[str, int]:
    sizes = {str(d): int(s) for d, s in ds[variable].sizes.items()}
    dims = dict(input_dims or {})
    unknown = [d for d in dims if d not in ("y", "x")]
    if unknown:
        raise SchemaError(
            f"input_dims has {unknown}; a sample window is along 'y' and 'x' only (each sample "
            "is one well and field, with the selected channels). Remove the other keys."
        )
    dims.setdefault("y", sizes["y"])
    dims.setdefault("x", sizes["x"])
    for dim, size in dims.items():
        if not 1 <= size <= sizes[dim]:
            raise SchemaError(
                f"input_dims['{dim}'] = {size}, but the cube's '{dim}' has {sizes[dim]} pixels; "
                f"give a window of 1 to {sizes[dim]}."
            )
    return {"y": dims["y"], "x": dims["x"]}


def check_crop(crop: dict[str, int] | None, window: dict[str, int]) -> dict[str, int] | None:
    if crop is None:
        return None
    unknown = [d for d in crop if d not in ("y", "x")]
    if unknown:
        raise SchemaError(f"random_crop has {unknown}; crop along 'y' and 'x' only.")
    size = {d: int(crop.get(d, window[d])) for d in ("y", "x")}
    for dim in ("y", "x"):
        if not 1 <= size[dim] <= window[dim]:
            raise SchemaError(
                f"random_crop['{dim}'] = {size[dim]}, but each sample's window is "
                f"{window[dim]} pixels along '{dim}' (input_dims); give a crop of 1 to "
                f"{window[dim]}, or a larger input_dims."
            )
    return size


def names(items: list[str | xr.Dataset]) -> str:
    return ", ".join(i if isinstance(i, str) else "<Dataset>" for i in items)
