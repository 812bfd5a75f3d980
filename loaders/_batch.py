"""Assembling one batch of :class:`~loaders.dataset.CubeBatchDataset` from chunk-aligned reads.

The batch's samples are grouped by cube, variable and sample position (the
time position aside: the windows of a batch share their time chunks): each
group is one :meth:`~loaders.reader.CubeReader.read_many` in a thread of the
pool, which fetches and decodes each chunk once, and its samples are cast into
the preallocated float32 batch (no per-sample copies, no stack). Then, in
order: CLAHE per sample, normalisation of the whole batch, NaN filled (if
asked), the user's transform per sample (:func:`read_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubes.errors import SchemaError
from loaders._samples import CubeInfo, VariableRead
from loaders._space import Space
from loaders.transforms import clahe

__all__ = ["Batch", "read_batch", "sample_shape"]

Read = Callable[[int, str, list[list[Any]]], list[np.ndarray]]


@dataclass
class Batch:
    inputs: np.ndarray  # (N, [k,] C, *shape) float32
    targets: np.ndarray | None  # (N, [m,] C_t, *shape_t) float32
    present: np.ndarray  # (N, C) bool


def sample_shape(
    space: Space, cube: CubeInfo, window: dict[str, int], targets: bool
) -> tuple[int, ...]:
    """The shape of one field of a sample (inputs, or targets) of ``cube`` with patch ``window``.

    The dims are the space's (found once, :func:`~loaders._space.resolve_space`); only
    their sizes are looked up: the patch along window dims, the cube's along the others.
    """
    dims = space.target_shape_dims if targets else space.input_shape_dims
    return tuple(window[d] if d in space.window else cube.sizes[d] for d in dims)


def _selection(
    space: Space, vr: VariableRead, row: np.ndarray, origin: np.ndarray, window: dict[str, int]
) -> list[Any]:
    """One sample's orthogonal selection of ``vr``'s variable."""
    sample_dims, window_dims = space.sample_dims, space.window_dims
    sel: list[Any] = []
    for d in vr.dims:
        if d in vr.channel_dims:
            sel.append(vr.channel_index[vr.channel_dims.index(d)])
            continue
        role = space.role(d)
        if role == "time":
            assert vr.step_rows is not None
            sel.append(int(row[1 + sample_dims.index(d)]) + vr.step_rows)
        elif role == "sample":
            sel.append(int(row[1 + sample_dims.index(d)]))
        elif role == "window":
            o = int(origin[window_dims.index(d)])
            sel.append(slice(o, o + window[d]))
        else:
            sel.append(slice(None))
    return sel


def _arrange(space: Space, vr: VariableRead, data: np.ndarray) -> np.ndarray:
    """A read in the variable's dim order as ``([steps,] P, *shape)``, P the flat channels."""
    kept = [d for d in vr.dims if d in vr.channel_dims or space.role(d) not in ("sample",)]
    time = [d for d in kept if d not in vr.channel_dims and space.role(d) == "time"]
    rest = [d for d in kept if d not in vr.channel_dims and space.role(d) != "time"]
    order = [kept.index(d) for d in time + list(vr.channel_dims) + rest]
    data = data.transpose(order)
    lead = len(time)
    n_channels = int(np.prod([len(i) for i in vr.channel_index], dtype=np.int64))
    return data.reshape(
        data.shape[:lead] + (n_channels,) + data.shape[lead + len(vr.channel_dims) :]
    )


def read_batch(
    rows: np.ndarray,
    origin: np.ndarray,
    window: dict[str, int],
    *,
    space: Space,
    cubes: Sequence[CubeInfo],
    read: Read,
    pool: Executor,
    clahe_inputs: bool = False,
    normalize: str | None = None,
    fill_nan: float | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    empty: Callable[[tuple[int, ...], Any], np.ndarray] = np.empty,
) -> Batch:
    """Read, cast and transform the samples ``rows`` (table rows) with patches at ``origin``.

    ``empty(shape, dtype)`` allocates the batch's arrays (:mod:`loaders._buffers`).
    """
    n, w = len(rows), space.windows
    first = cubes[int(rows[0, 0])]
    shape = sample_shape(space, first, window, targets=False)
    lead_in = (w.input_steps,) if w is not None else ()
    inputs = empty((n, *lead_in, len(space.inputs), *shape), np.float32)
    targets = None
    if space.targets:
        t_shape = sample_shape(space, first, window, targets=True)
        lead_t = (w.target_steps,) if w is not None else ()
        targets = empty((n, *lead_t, len(space.targets), *t_shape), np.float32)
    time_dim = None if w is None else w.dim
    keyed = [i + 1 for i, d in enumerate(space.sample_dims) if d != time_dim]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(rows.tolist()):
        for v in range(len(space.variables)):
            groups.setdefault((row[0], v, *(row[j] for j in keyed)), []).append(i)

    def fill(key: tuple[int, ...]) -> None:
        members = groups[key]
        cube_k, v = key[0], key[1]
        vr = cubes[cube_k].reads[v]
        selections = [_selection(space, vr, rows[i], origin[i], window) for i in members]
        boxes, cuts = _merge_windows(space, vr, selections)
        reads = read(cube_k, vr.variable, boxes)
        timed = w is not None
        for (box, cut), i in zip(cuts, members, strict=True):
            data = _arrange(space, vr, reads[box][cut])
            slots, flat = vr.inputs
            if len(slots):
                part = data[vr.input_rows] if timed else data
                _put(inputs[i], slots, _take(part, flat, int(timed)), timed)
            slots, flat = vr.targets
            if len(slots) and targets is not None:
                part = data[vr.target_rows] if timed else data
                _put(targets[i], slots, _take(part, flat, int(timed)), timed)

    list(pool.map(fill, groups))
    present = _present(rows, cubes, len(space.sample_dims), len(space.inputs))
    if clahe_inputs:
        list(pool.map(lambda i: inputs.__setitem__(i, clahe(inputs[i])), range(n)))
    if normalize is not None:
        _normalize(inputs, rows[:, 0], cubes, targets=False, timed=w is not None)
        if targets is not None and normalize == "all":
            _normalize(targets, rows[:, 0], cubes, targets=True, timed=w is not None)
    if fill_nan is not None:
        for array in (inputs, targets):
            if array is not None:
                np.nan_to_num(array, copy=False, nan=fill_nan, posinf=np.inf, neginf=-np.inf)
    if transform is not None:
        inputs = _stack(list(pool.map(lambda s: np.asarray(transform(s)), inputs)))
    return Batch(inputs, targets, present)


def _merge_windows(
    space: Space, vr: VariableRead, selections: list[list[Any]]
) -> tuple[list[list[Any]], list[tuple[int, tuple[slice, ...]]]]:
    """One read per set of samples that differ only in their patch: the patches' bounding box.

    A plate field's patches (or the windows of one start at several patches)
    become one selection, as the field's one read; returns the selections to
    read and, per sample, which of them holds it and where.
    """
    window_at = [
        j for j, d in enumerate(vr.dims) if d not in vr.channel_dims and space.role(d) == "window"
    ]
    merged: dict[tuple[Any, ...], list[int]] = {}
    for m, sel in enumerate(selections):
        signature = tuple(_signature(item) for j, item in enumerate(sel) if j not in window_at)
        merged.setdefault(signature, []).append(m)
    kept = [j for j, item in enumerate(selections[0]) if not isinstance(item, int)]
    boxes: list[list[Any]] = []
    cuts: list[tuple[int, tuple[slice, ...]]] = [(0, ())] * len(selections)
    for members in merged.values():
        box = list(selections[members[0]])
        for j in window_at:
            box[j] = slice(
                min(selections[m][j].start for m in members),
                max(selections[m][j].stop for m in members),
            )
        for m in members:
            cut = [slice(None)] * len(kept)
            for j in window_at:
                lo = box[j].start
                cut[kept.index(j)] = slice(selections[m][j].start - lo, selections[m][j].stop - lo)
            cuts[m] = (len(boxes), tuple(cut))
        boxes.append(box)
    return boxes, cuts


def _signature(item: Any) -> Any:
    if isinstance(item, slice):
        return (item.start, item.stop)
    if isinstance(item, np.ndarray):
        return tuple(item.tolist())
    return item


def _take(data: np.ndarray, flat: np.ndarray, axis: int) -> np.ndarray:
    """``data``'s channels ``flat`` along ``axis``; a view when they are all, in order."""
    if len(flat) == data.shape[axis] and np.array_equal(flat, np.arange(len(flat))):
        return data
    return np.take(data, flat, axis=axis)


def _put(out: np.ndarray, slots: np.ndarray, part: np.ndarray, timed: bool) -> None:
    """Cast ``part`` into ``out``'s channel ``slots`` (axis 1 with time steps, else 0)."""
    if timed:
        out[:, slots] = part
    elif len(slots) == out.shape[0] and np.array_equal(slots, np.arange(len(slots))):
        np.copyto(out, part, casting="unsafe")  # e.g. uint16 -> float32, in place
    else:
        out[slots] = part


def _present(rows: np.ndarray, cubes: Sequence[CubeInfo], n_dims: int, c: int) -> np.ndarray:
    present = np.ones((len(rows), c), dtype=bool)
    for k in np.unique(rows[:, 0]).tolist():
        mask = cubes[k].present
        if mask is None:
            continue
        mine = rows[:, 0] == k
        present[mine] = mask[tuple(rows[mine, 1 + d] for d in range(n_dims))]
    return present


def _normalize(
    data: np.ndarray, cube_of: np.ndarray, cubes: Sequence[CubeInfo], *, targets: bool, timed: bool
) -> None:
    """``(x - mean) / std`` in place, per channel, with each sample's cube's statistics."""
    for k in np.unique(cube_of).tolist():
        cube = cubes[k]
        mean, std = (cube.target_mean, cube.target_std) if targets else (cube.mean, cube.std)
        if mean is None or std is None:
            continue
        axis = 2 if timed else 1
        shape = [1] * data.ndim
        shape[axis] = len(mean)
        m = mean.astype(np.float32).reshape(shape[1:])
        s = std.astype(np.float32).reshape(shape[1:])
        mine = np.flatnonzero(cube_of == k)
        if len(mine) == len(data):
            data -= m
            data /= s
        else:
            data[mine] = (data[mine] - m) / s


def _stack(samples: list[np.ndarray]) -> np.ndarray:
    shapes = {s.shape for s in samples}
    if len(shapes) != 1:
        raise SchemaError(
            f"The samples of a batch have different shapes {sorted(map(str, shapes))}; the "
            "transform= must return arrays of one shape (and dtype) for every sample."
        )
    return np.stack(samples).astype(np.float32, copy=False)
