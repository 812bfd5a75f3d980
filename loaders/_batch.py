"""Assembling one batch of :class:`~loaders.dataset.CubeBatchDataset` from field reads.

The batch's samples are grouped by field; each field is read once (the window
covering its samples) in a thread of the pool, and its samples are cut from
that read, transformed, and written into the batch (:func:`read_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np

from cubes.errors import SchemaError
from loaders._samples import CubeInfo
from loaders.transforms import SampleTransforms

__all__ = ["read_batch"]


def read_batch(
    rows: np.ndarray,
    origin: np.ndarray,
    h: int,
    w: int,
    *,
    cubes: Sequence[CubeInfo],
    channels: int,
    read: Callable[[tuple[int, int, int], slice, slice], np.ndarray],
    transforms: SampleTransforms,
    pool: Executor,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, C, h, w)`` float32 and ``present`` ``(N, C)``; one read per field.

    Without a user transform every sample has the batch's shape, so the reader
    threads cast straight into one preallocated batch (no per-sample copies, no
    stack); a user transform may change shapes, so its samples are stacked.
    """
    direct = transforms.user is None
    out: list[np.ndarray | None] = [None] * len(rows)
    batch = np.empty((len(rows), channels, h, w), np.float32) if direct else None
    present = np.ones((len(rows), channels), dtype=bool)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (k, wi, fi) in enumerate(rows[:, :3].tolist()):
        groups.setdefault((k, wi, fi), []).append(i)

    def fill(key: tuple[int, int, int]) -> None:
        members = groups[key]
        ys, xs = origin[members, 0], origin[members, 1]
        y0, x0 = int(ys.min()), int(xs.min())
        region = read(key, slice(y0, int(ys.max()) + h), slice(x0, int(xs.max()) + w))
        cube = cubes[key[0]]
        for i, y, x in zip(members, ys.tolist(), xs.tolist(), strict=True):
            window = region[:, y - y0 : y - y0 + h, x - x0 : x - x0 + w]
            if batch is None:
                out[i] = transforms(window.astype(np.float32), cube.mean, cube.std)
            else:
                view = batch[i]
                np.copyto(view, window, casting="unsafe")  # uint16 -> float32, in place
                result = transforms(view, cube.mean, cube.std)
                if not np.shares_memory(result, view):  # CLAHE makes a new array
                    view[...] = result
        if cube.present is not None:
            present[members] = cube.present[key[1], key[2]]

    list(pool.map(fill, groups))
    return (_stack(out) if batch is None else batch), present


def _stack(samples: list[np.ndarray | None]) -> np.ndarray:
    shapes = {None if s is None else s.shape for s in samples}
    if len(shapes) != 1:
        raise SchemaError(
            f"The samples of a batch have different shapes {sorted(map(str, shapes))}; the "
            "transform= must return arrays of one shape (and dtype) for every sample."
        )
    return np.stack(samples).astype(np.float32, copy=False)  # type: ignore[arg-type]
