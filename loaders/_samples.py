"""The sample table of :class:`~loaders.dataset.CubeBatchDataset`, and what it keeps of each cube.

Each cube is described once (:class:`CubeInfo`: where it is, its sample
labels, which samples are present, its statistics and, per variable, what to
read: :class:`VariableRead`). Its samples are rows ``(cube, *sample
positions, *window origins)``: every present position of the sample dims (or
every valid time window, :mod:`loaders.windows`) times every ``input_dims``
patch from xbatcher's selectors (:func:`sample_rows`). The rows of all cubes
form one table in cube order (:func:`sample_table`), dealt into batches per rank
(:func:`check_counts`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import xbatcher

from cubes.errors import SchemaError
from loaders import order
from loaders._space import Field, Space
from loaders.windows import lead_steps, select_time_range, valid_windows

__all__ = [
    "CubeInfo",
    "CubeLike",
    "VariableRead",
    "check_counts",
    "describe_cube",
    "sample_rows",
    "sample_table",
]

CubeLike = str | xr.Dataset


@dataclass(frozen=True)
class VariableRead:
    """How one variable of one cube is read into a batch.

    ``channel_index`` holds, per channel dim, the positions read; a field is a
    flat position into their product. ``inputs``/``targets`` pair the batch's
    C slots with those flat positions. With time windows, ``step_rows`` are the
    window's steps read (inputs first), and ``input_rows``/``target_rows`` their
    places in the read.
    """

    variable: str
    dims: tuple[str, ...]
    channel_dims: tuple[str, ...]
    channel_index: tuple[np.ndarray, ...]
    inputs: tuple[np.ndarray, np.ndarray]
    targets: tuple[np.ndarray, np.ndarray]
    step_rows: np.ndarray | None = None
    input_rows: np.ndarray | None = None
    target_rows: np.ndarray | None = None


@dataclass
class CubeInfo:
    """What the dataset keeps of one cube: where it is, and its small metadata."""

    url: str | None  # None: an in-memory Dataset, read through xarray
    storage_options: dict[str, Any]
    data: xr.Dataset | None  # kept only when url is None
    sizes: dict[str, int]
    labels: dict[str, np.ndarray]  # coordinate values of the sample dims
    present: np.ndarray | None  # (*sample dims, C): the input fields found
    reads: list[VariableRead]
    block: tuple[int, ...]  # samples per storage shard along each sample dim
    lead: int = 1  # steps, with time windows
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None
    stats_samples: list[Any] | None = None  # set when the statistics were estimated


def _positions(ds: xr.Dataset, dims: tuple[str, ...], f: Field, where: str) -> tuple[int, ...]:
    out = []
    for dim, value in zip(dims, f.key, strict=True):
        if dim not in ds.coords:
            out.append(int(value))
            continue
        values = [v.item() if hasattr(v, "item") else v for v in np.asarray(ds[dim].values)]
        if value not in values:
            raise SchemaError(
                f"{where} has no {f.label!r} ('{dim}' = {value!r} is not among {values}); every "
                "cube of a dataset needs the channels of the first."
            )
        out.append(values.index(value))
    return tuple(out)


def _variable_read(
    ds: xr.Dataset, space: Space, variable: str, lead: int, where: str
) -> VariableRead:
    dims = tuple(str(d) for d in ds[variable].dims)
    ch_dims = space.channel_dims[variable]
    pos = {
        (group, slot): _positions(ds, ch_dims, f, where)
        for group, fields in (("in", space.inputs), ("tgt", space.targets))
        for slot, f in enumerate(fields)
        if f.variable == variable
    }
    # positions in the order the fields ask for them: reading in that order makes the
    # usual case (inputs are the variable's channels, in order) a view, not a gather
    index = tuple(
        np.array(list(dict.fromkeys(p[d] for p in pos.values())), dtype=np.int64)
        for d in range(len(ch_dims))
    )
    sizes = tuple(len(i) for i in index)

    def pairs(group: str) -> tuple[np.ndarray, np.ndarray]:
        slots = [s for g, s in pos if g == group]
        flat = [
            int(
                np.ravel_multi_index(
                    tuple(index[d].tolist().index(p[d]) for d in range(len(ch_dims))), sizes
                )
            )
            if ch_dims
            else 0
            for p in (pos[(group, s)] for s in slots)
        ]
        return np.asarray(slots, dtype=np.int64), np.asarray(flat, dtype=np.int64)

    inputs, targets = pairs("in"), pairs("tgt")
    w = space.windows
    if w is None:
        return VariableRead(variable, dims, ch_dims, index, inputs, targets)
    offsets = np.concatenate(
        [np.arange(w.input_steps), w.input_steps - 1 + lead + np.arange(w.target_steps)]
    )
    rows = np.concatenate(
        [
            np.arange(w.input_steps) if len(inputs[0]) else np.zeros(0, np.int64),
            w.input_steps + np.arange(w.target_steps) if len(targets[0]) else np.zeros(0, np.int64),
        ]
    ).astype(np.int64)
    n_in = w.input_steps if len(inputs[0]) else 0
    return VariableRead(
        variable,
        dims,
        ch_dims,
        index,
        inputs,
        targets,
        step_rows=offsets[rows],
        input_rows=np.arange(n_in),
        target_rows=np.arange(n_in, len(rows)),
    )


def _present(ds: xr.Dataset, space: Space, where: str) -> np.ndarray | None:
    """``(*sample dims, C)``: whether each input field was found at each sample position."""
    mask = space.layout.mask
    if mask is None or mask not in ds:
        return None
    da = ds[mask]
    columns = []
    for f in space.inputs:
        dims = space.channel_dims[f.variable]
        positions = _positions(ds, dims, f, where)
        sel = {d: p for d, p in zip(dims, positions, strict=True) if d in da.dims}
        part = da.isel(sel)
        extra = [d for d in part.dims if d not in space.sample_dims]
        if extra:
            part = part.any(extra)
        shape = [ds.sizes[d] for d in space.sample_dims]
        values = np.asarray(
            part.transpose(*[d for d in space.sample_dims if d in part.dims]).values
        )
        expand = tuple(slice(None) if d in part.dims else None for d in space.sample_dims)
        columns.append(np.broadcast_to(values[expand], shape))
    return np.stack(columns, axis=-1).astype(bool)


def _block(ds: xr.Dataset, space: Space) -> tuple[int, ...]:
    """Samples per storage shard (or chunk) along each sample dim, of the first input variable."""
    da = ds[space.inputs[0].variable]
    shape = da.encoding.get("shards") or da.encoding.get("chunks")
    out = []
    for d in space.sample_dims:
        if shape is None or d not in da.dims:
            out.append(1)
        else:
            out.append(max(1, int(shape[da.dims.index(d)])))
    return tuple(out)


def describe_cube(ds: xr.Dataset, item: CubeLike, space: Space) -> CubeInfo:
    """``ds`` (opened from ``item``) as the dataset reads it."""
    url = item if isinstance(item, str) else ds.encoding.get("source")
    where = url or "The in-memory Dataset"
    lead = 1
    if space.windows is not None:
        lead = lead_steps(space.windows.lead, ds[space.windows.dim].values)
    labels = {
        d: np.asarray(ds[d].values) if d in ds.coords else np.arange(ds.sizes[d])
        for d in space.sample_dims
    }
    return CubeInfo(
        url=url,
        storage_options=dict(ds.encoding.get("storage_options", {})),
        data=None if url else ds,
        sizes={str(d): int(n) for d, n in ds.sizes.items()},
        labels=labels,
        present=_present(ds, space, where),
        reads=[_variable_read(ds, space, v, lead, where) for v in space.variables],
        block=_block(ds, space),
        lead=lead,
    )


def _origins(space: Space, sizes: dict[str, int]) -> np.ndarray:
    """The patch origins along the window dims, from xbatcher's selectors."""
    if not space.window:
        return np.zeros((1, 0), dtype=np.int64)
    dims = list(space.window)
    grid = xr.DataArray(np.broadcast_to(np.uint8(0), [sizes[d] for d in dims]), dims=dims)
    schema = xbatcher.BatchSchema(
        grid, input_dims=space.window, input_overlap=space.overlap, concat_input_bins=False
    )
    starts = [[s[d].start or 0 for d in dims] for (s,) in schema.selectors.values()]
    return np.unique(np.array(starts, dtype=np.int64).reshape(-1, len(dims)), axis=0)


def sample_rows(k: int, cube: CubeInfo, space: Space) -> np.ndarray:
    """Rows ``(cube, *sample positions, *window origins)`` of the present samples of cube ``k``."""
    dims = space.sample_dims
    shape = [cube.sizes[d] for d in dims]
    found: np.ndarray = np.ones(shape, dtype=bool)
    if cube.present is not None:
        found = np.asarray(cube.present.any(axis=-1), dtype=bool)
    w = space.windows
    if w is None:
        positions = np.argwhere(found).astype(np.int64).reshape(-1, len(dims))
        if space.time_range is not None and space.layout.time_dim in dims:
            t = dims.index(space.layout.time_dim)
            keep = select_time_range(np.arange(shape[t]), cube.labels[dims[t]], space.time_range)
            positions = positions[np.isin(positions[:, t], keep)]
    else:
        t = dims.index(w.dim)
        others = [range(n) for i, n in enumerate(shape) if i != t]
        parts = []
        for combo in itertools.product(*others):
            index: list[Any] = list(combo)
            index.insert(t, slice(None))
            starts = valid_windows(
                found[tuple(index)],
                input_steps=w.input_steps,
                target_steps=w.target_steps,
                lead=cube.lead,
            )
            starts = select_time_range(starts, cube.labels[w.dim], space.time_range)
            block = np.zeros((len(starts), len(dims)), dtype=np.int64)
            block[:, [i for i in range(len(dims)) if i != t]] = combo
            block[:, t] = starts
            parts.append(block)
        positions = np.concatenate(parts) if parts else np.zeros((0, len(dims)), np.int64)
    origins = _origins(space, cube.sizes)
    n, m = len(positions), len(origins)
    table = np.empty((n * m, 1 + len(dims) + origins.shape[1]), dtype=np.int64)
    table[:, 0] = k
    table[:, 1 : 1 + len(dims)] = np.repeat(positions, m, axis=0)
    table[:, 1 + len(dims) :] = np.tile(origins, (n, 1))
    return table


def sample_table(samples: list[np.ndarray], where: str, space: Space) -> np.ndarray:
    """The cubes' rows as one table, sorted in cube order (shards contiguous)."""
    table = np.concatenate(samples)
    if len(table) == 0:
        what = (
            f"windows of {space.windows.input_steps} input and {space.windows.target_steps} "
            f"target steps (lead {space.windows.lead}) over present steps"
            if space.windows is not None
            else f"positions with any of {[f.label for f in space.inputs]} present"
        )
        if space.time_range is not None:
            what += f" in time_range={space.time_range}"
        raise SchemaError(
            f"No samples in {where}: no {what}. Check the cubes' 'present' mask, the channels "
            "or variables, and the time arguments."
        )
    return table[np.lexsort(table.T[::-1])]


def shard_keys(table: np.ndarray, cubes: list[CubeInfo], n_dims: int) -> np.ndarray:
    """Per row: ``(cube, *sample position // block)``, the samples of one storage shard alike."""
    blocks = np.array([c.block for c in cubes], dtype=np.int64).reshape(len(cubes), n_dims)
    keys = table[:, : 1 + n_dims].copy()
    keys[:, 1:] //= blocks[table[:, 0]]
    return keys


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
