"""A recipe's units: positions along the sample dims the source cube's layout records.

The default unit is one position over all of the layout's sample dims (a
plate's ``well, field``; a climate cube's ``time``; an arrays cube's
``sample``). ``--unit DIM[,DIM]`` keeps only some of them, so that one unit
spans the others (``--unit well``: a plate's whole well, all its fields).
Nothing here knows a kind's dim names: they come from the layout.

A unit is loaded whole into memory (numpy, not dask) with the layout's
variables, its mask and coords, and the small variables that have no sample
dim (statistics); derived variables over the sample dims (thumbnails) are left
out. A unit whose mask is False everywhere (nothing was found there) is absent:
the recipe is not called for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dask
import numpy as np
import xarray as xr

from cubes.errors import ArgumentError
from cubes.layout import Layout, layout_of
from cubes.open import open_cube

__all__ = ["UnitSpace", "load_unit", "open_units", "slice_units"]

Index = tuple[int, ...]
T = TypeVar("T")

_OPEN: dict[tuple[int, str, str], xr.Dataset] = {}
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class UnitSpace:
    """The units of one source cube: their dims, shape and coordinate labels.

    Small and picklable: tasks carry it to worker processes, which open the
    cube once each (:func:`load_unit`).
    """

    url: str
    options: dict[str, Any]
    fingerprint: str
    layout: Layout
    dims: tuple[str, ...]
    labels: tuple[tuple[Any, ...], ...]  # per unit dim, the coordinate values

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.labels)

    def indexes(self) -> Iterator[Index]:
        """Every unit, in C order over the unit dims (the order of a plain nested loop)."""
        for index in np.ndindex(*self.shape):
            yield tuple(int(i) for i in index)

    def coords(self, index: Index) -> dict[str, Any]:
        """``{dim: label}`` of the unit at ``index``."""
        return {d: values[i] for d, values, i in zip(self.dims, self.labels, index, strict=True)}

    def describe(self, index: Index) -> str:
        """``well=A01, field=2``: the unit in messages."""
        return ", ".join(f"{d}={v}" for d, v in self.coords(index).items())


def uid(index: Index) -> str:
    """The unit's name in DEST: ``3-1``."""
    return "-".join(str(i) for i in index)


def parse_uid(name: str) -> Index:
    """The inverse of :func:`uid`."""
    return tuple(int(i) for i in name.split("-"))


def plain(value: Any) -> Any:
    """A coordinate value as a plain Python value (str, int, float, datetime64, ISO time)."""
    if isinstance(value, np.generic) and value.dtype.kind in "iufb":
        return value.item()
    if isinstance(value, np.datetime64):
        return value
    if hasattr(value, "isoformat"):  # cftime dates of non-standard calendars
        return value.isoformat()
    if isinstance(value, str | np.str_) or getattr(value, "dtype", None) is not None:
        return str(value)
    return value


def open_units(
    url: str, options: dict[str, Any], unit: Sequence[str] | None, fingerprint: str
) -> UnitSpace:
    """The units of the cube at ``url`` (``unit``: the dims a unit is one position of).

    Raises
    ------
    ArgumentError
        ``unit`` names a dim that is not one of the layout's sample dims.
    """
    ds = open_cube(url, storage_options=options, require_complete=True)
    layout = layout_of(ds.attrs, url)
    dims = tuple(unit) if unit else layout.sample_dims
    wrong = [d for d in dims if d not in layout.sample_dims]
    if wrong or len(set(dims)) != len(dims):
        raise ArgumentError(
            f"--unit {','.join(dims)}: a unit is one position along some of the sample dims of "
            f"{url} ({', '.join(layout.sample_dims)}); {', '.join(wrong) or 'a dim repeats'} "
            "is not one of them."
        )
    dims = tuple(d for d in layout.sample_dims if d in dims)  # the layout's order
    labels = tuple(tuple(plain(v) for v in ds[d].values) for d in dims)
    _remember(url, fingerprint, ds)
    return UnitSpace(url, options, fingerprint, layout, dims, labels)


def _remember(url: str, fingerprint: str, ds: xr.Dataset) -> None:
    with _OPEN_LOCK:
        _OPEN[(os.getpid(), url, fingerprint)] = ds


def _opened(space: UnitSpace) -> xr.Dataset:
    """The source cube, opened once per process."""
    key = (os.getpid(), space.url, space.fingerprint)
    with _OPEN_LOCK:
        ds = _OPEN.get(key)
    if ds is None:
        ds = open_cube(space.url, storage_options=space.options, require_complete=True)
        _remember(space.url, space.fingerprint, ds)
    return ds


def load_unit(space: UnitSpace, index: Index) -> xr.Dataset | None:
    """The unit at ``index``, loaded into memory; None if the cube's mask says it is absent."""
    ds = _opened(space)
    at = dict(zip(space.dims, index, strict=True))
    mask = space.layout.mask
    if mask is not None and mask in ds and not bool(ds[mask].isel(at).any()):
        return None
    sample_dims = set(space.layout.sample_dims)
    names = [
        name
        for name, var in ds.data_vars.items()
        if name in space.layout.variables
        or name == mask
        or (not sample_dims & set(var.dims) and var.chunks is None)
    ]
    with dask.config.set(scheduler="synchronous"):  # one unit is a few objects: no pool
        return ds[names].isel(at).load()


def slice_units(indexes: Sequence[T], index: int, count: int) -> list[T]:
    """Slice ``index`` of ``count`` contiguous, balanced runs of the units (array jobs)."""
    n = len(indexes)
    return list(indexes[index * n // count : (index + 1) * n // count])


def slice_of(position: int, n: int, count: int) -> int:
    """The slice holding the ``position``-th of ``n`` units (the inverse of :func:`slice_units`)."""
    return next(k for k in range(count) if position < (k + 1) * n // count)
