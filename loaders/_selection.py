"""Orthogonal selections over a chunked array, for :mod:`loaders.reader`.

A selection (an int, a slice or integer positions per dim) is normalised to
positions per dim (:func:`normalize`), split per dim into the chunks it touches
(:func:`dim_parts`), combined into one :data:`Piece` per chunk (:func:`piece_of`),
and each chunk's part is copied into the output (:func:`assign`, :func:`fill`).
Runs of consecutive positions stay slices, so most copies are plain views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Piece", "Sel", "assign", "dim_parts", "fill", "normalize", "piece_of"]

Sel = slice | np.ndarray
Piece = tuple[tuple[int, ...], tuple[Sel, ...], tuple[Sel, ...]]  # chunk coords, out, local


def piece_of(parts: tuple[tuple[int, Sel, Sel], ...]) -> Piece:
    """One chunk's piece from its part along each dim (as :func:`dim_parts` gives them)."""
    return tuple(p[0] for p in parts), tuple(p[1] for p in parts), tuple(p[2] for p in parts)


def normalize(
    selection: Sequence[Any], shape: tuple[int, ...], where: str
) -> list[tuple[np.ndarray, bool]]:
    """Positions per dim, and whether the dim is dropped (an int)."""
    if len(selection) != len(shape):
        raise IndexError(f"{len(selection)} selections for the {len(shape)} dims of {where}.")
    dims = []
    for d, (item, n) in enumerate(zip(selection, shape, strict=True)):
        if isinstance(item, slice):
            dims.append((np.arange(*item.indices(n), dtype=np.int64), False))
            continue
        idx = np.asarray(item)
        idx = idx.astype(np.int64) if idx.size == 0 else idx
        if idx.dtype.kind not in "iu" or idx.ndim > 1:
            raise IndexError(
                f"Selection {item!r} for dim {d} of {where}: give an int, a slice or ints."
            )
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(
                f"Selection {item!r} is out of bounds for dim {d} of {where} (size {n})."
            )
        dims.append(
            (np.atleast_1d(np.where(idx < 0, idx + n, idx)).astype(np.int64), idx.ndim == 0)
        )
    return dims


def dim_parts(idx: np.ndarray, size: int) -> list[tuple[int, Sel, Sel]]:
    """``(chunk, positions in the output, positions in the chunk)`` along one dim."""
    if isinstance(_as_slice(idx), slice):  # a run: slices all the way
        first, stop = int(idx[0]), int(idx[-1]) + 1
        parts: list[tuple[int, Sel, Sel]] = []
        for k in range(first // size, (stop - 1) // size + 1):
            lo, hi = max(first, k * size), min(stop, (k + 1) * size)
            parts.append((k, slice(lo - first, hi - first), slice(lo - k * size, hi - k * size)))
        return parts
    chunk = idx // size
    scattered: list[tuple[int, Sel, Sel]] = []
    for k in np.unique(chunk):
        pos = np.flatnonzero(chunk == k)
        scattered.append((int(k), _as_slice(pos), _as_slice(idx[pos] - k * size)))
    return scattered


def _as_slice(a: np.ndarray) -> Sel:
    if len(a) == 1 or (len(a) > 1 and np.all(np.diff(a) == 1)):
        return slice(int(a[0]), int(a[-1]) + 1)
    return a


def _ix(sel: tuple[Sel, ...]) -> Any:
    """``sel`` as an index that numpy applies orthogonally."""
    arrays = sum(not isinstance(s, slice) for s in sel)
    if arrays <= 1:
        return sel
    return np.ix_(*[np.arange(s.start, s.stop) if isinstance(s, slice) else s for s in sel])


def assign(
    out: np.ndarray, out_sel: tuple[Sel, ...], chunk: np.ndarray, local: tuple[Sel, ...]
) -> None:
    """Copy the ``local`` part of ``chunk`` to ``out_sel`` of ``out``."""
    block = chunk[tuple(s if isinstance(s, slice) else slice(None) for s in local)]
    for axis, s in enumerate(local):
        if not isinstance(s, slice):
            block = np.take(block, s, axis=axis)
    out[_ix(out_sel)] = block


def fill(out: np.ndarray, out_sel: tuple[Sel, ...], value: Any) -> None:
    """Set ``out_sel`` of ``out`` to ``value`` (a chunk that is not stored)."""
    out[_ix(out_sel)] = value
