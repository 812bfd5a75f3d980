"""``CubeBatchDataset``: batches of plate fields (or patches) as torch tensors.

xbatcher's :class:`~xbatcher.BatchSchema` decides what a sample is (one
``(well, field)`` with a ``y``/``x`` window from ``input_dims``). Reading does
not go through xarray or dask: each batch is grouped by field, and each field
is one zarr read of the chunks it needs (one shard object for a whole field),
issued concurrently from a thread pool. Stores are opened lazily in each
process, so the dataset works in ``DataLoader`` workers under fork, forkserver
and spawn alike.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
import xbatcher
import zarr

from cubes import conventions as cv
from cubes import open_cube
from cubes.errors import SchemaError
from cubes.store import group_array, zarr_store

__all__ = ["CubeBatchDataset"]

logger = logging.getLogger(__name__)

CubeLike = str | xr.Dataset


@dataclass
class _Cube:
    """What the dataset keeps of one cube: where it is, and its small metadata."""

    url: str | None  # None: an in-memory Dataset, read through xarray
    storage_options: dict[str, Any]
    wells: np.ndarray
    fields: np.ndarray
    present: np.ndarray | None  # (well, field, selected channel)
    mean: np.ndarray | None
    std: np.ndarray | None
    data: xr.DataArray | None  # kept only when url is None


class CubeBatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches of cube samples.

    Use it with ``DataLoader(dataset, batch_size=None, ...)`` (or
    :meth:`loader`): item ``i`` is batch ``i``, already collated.

    Parameters
    ----------
    cubes
        A cube URL, a Dataset from :func:`cubes.open_cube` (or any Dataset with
        the plate dims), or a list of them, treated as one dataset.
    input_dims
        Window per sample along ``y``/``x``, as in xbatcher (default: the whole
        field). Windows tile the field; ``input_overlap`` makes them overlap.
    batch_size
        Samples per batch; the last batch may be smaller unless ``drop_last``.
    channels
        Channel names to keep, in this order (default: all).
    normalize
        Standardise each channel with the statistics stored in the cube.
    storage_options
        fsspec options for cube URLs (``endpoint_url``, ``anon`` …).
    threads
        Concurrent field reads per process.

    Each batch is a dict: ``images`` float32 ``(N, C, H, W)``; ``present`` bool
    ``(N, C)``; ``well`` (names), ``field`` (site numbers), ``cube`` (position in
    ``cubes``), and ``y``/``x`` (window origin in pixels), one per sample.

    Notes
    -----
    Fields with none of the selected channels present are not samples. Each
    batch carries ``present`` ``(N, C)``: missing images read as the fill value.

    Examples
    --------
    >>> window = {"y": 256, "x": 256}
    >>> ds = CubeBatchDataset("s3://bkt/plate.zarr", input_dims=window)  # doctest: +SKIP
    >>> for batch in ds.loader(num_workers=2):  # doctest: +SKIP
    ...     model(batch["images"])
    """

    def __init__(
        self,
        cubes: CubeLike | Sequence[CubeLike],
        *,
        input_dims: dict[str, int] | None = None,
        input_overlap: dict[str, int] | None = None,
        batch_size: int = 16,
        channels: Sequence[str] | None = None,
        normalize: bool = False,
        drop_last: bool = False,
        storage_options: dict[str, Any] | None = None,
        threads: int = 16,
        variable: str = cv.IMAGES,
    ) -> None:
        if batch_size < 1:
            raise SchemaError(f"batch_size must be at least 1, not {batch_size}.")
        items = [cubes] if isinstance(cubes, str | xr.Dataset) else list(cubes)
        if not items:
            raise SchemaError("CubeBatchDataset needs at least one cube (URL or Dataset).")
        self.variable = variable
        self.batch_size = batch_size
        self.threads = threads
        self.normalize = normalize
        self._cubes: list[_Cube] = []
        samples = []
        for k, item in enumerate(items):
            ds = (
                item
                if isinstance(item, xr.Dataset)
                else open_cube(item, storage_options=storage_options, require_complete=True)
            )
            if k == 0:
                self.channels, self._channel_index = _select_channels(ds, channels, variable)
                self.input_dims = _check_input_dims(ds, input_dims, variable)
            self._cubes.append(self._describe(ds, item))
            samples.append(self._samples(k, ds, input_overlap or {}))
        self._samples_table = np.concatenate(samples)
        n = len(self._samples_table)
        if n == 0:
            raise SchemaError(
                f"No samples: none of the fields of {_names(items)} has any of the channels "
                f"{list(self.channels)} present. Check the cubes' 'present' mask and --channels."
            )
        self._n_batches = n // batch_size if drop_last else -(-n // batch_size)
        if self._n_batches == 0:
            raise SchemaError(
                f"{n} samples make no full batch of {batch_size} with drop_last=True; lower "
                "batch_size or set drop_last=False."
            )
        self._local = _ProcessLocal()

    # --- construction -------------------------------------------------------------------

    def _describe(self, ds: xr.Dataset, item: CubeLike) -> _Cube:
        url = item if isinstance(item, str) else ds.encoding.get("source")
        stats = {}
        for name in ("mean", "std"):
            var = ds.get(cv.stat_var(name))
            stats[name] = None if var is None else np.asarray(var.values)[self._channel_index]
        if self.normalize and (
            stats["mean"] is None or np.isnan(stats["mean"]).any() or np.any(stats["std"] == 0)
        ):
            raise SchemaError(
                f"normalize=True needs per-channel statistics, which {url or 'the Dataset'} lacks "
                f"for some of {list(self.channels)}. Re-ingest it, or pass normalize=False."
            )
        return _Cube(
            url=url,
            storage_options=dict(ds.encoding.get("storage_options", {})),
            wells=np.array([str(w) for w in ds["well"].values], dtype=object),
            fields=np.asarray(ds["field"].values).astype(np.int64),
            present=(
                np.asarray(ds[cv.PRESENT].values, dtype=bool)[:, :, self._channel_index]
                if cv.PRESENT in ds
                else None
            ),
            mean=stats["mean"],
            std=stats["std"],
            data=None if url else ds[self.variable],
        )

    def _samples(self, k: int, ds: xr.Dataset, overlap: dict[str, int]) -> np.ndarray:
        """Rows ``(cube, well, field, y0, x0)`` from xbatcher's selectors, present fields only."""
        schema = xbatcher.BatchSchema(
            ds[self.variable],
            input_dims=self.input_dims,
            input_overlap=overlap,
            batch_dims={"well": 1, "field": 1},
            concat_input_bins=False,
        )
        rows = [
            (k, s["well"].start, s["field"].start, s["y"].start, s["x"].start)
            for (s,) in schema.selectors.values()
        ]
        table = np.array(rows, dtype=np.int64).reshape(-1, 5)
        present = self._cubes[k].present
        if present is not None:
            any_channel = np.asarray(present.any(axis=-1))
            table = table[any_channel[table[:, 1], table[:, 2]]]
        return table

    # --- torch Dataset ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_batches

    @property
    def n_samples(self) -> int:
        """Samples per epoch (before ``drop_last``)."""
        return len(self._samples_table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._n_batches <= index < self._n_batches:
            raise IndexError(f"batch {index} out of range for {self._n_batches} batches")
        index %= self._n_batches
        rows = self._samples_table[index * self.batch_size : (index + 1) * self.batch_size]
        h, w = self.input_dims["y"], self.input_dims["x"]
        out = np.empty((len(rows), len(self._channel_index), h, w), dtype=np.float32)
        present = np.ones((len(rows), len(self._channel_index)), dtype=bool)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (k, wi, fi, _, _) in enumerate(rows):
            groups.setdefault((int(k), int(wi), int(fi)), []).append(i)

        def fill(key: tuple[int, int, int]) -> None:
            members = groups[key]
            ys, xs = rows[members, 3], rows[members, 4]
            y0, x0 = int(ys.min()), int(xs.min())
            region = self._read(key, slice(y0, int(ys.max()) + h), slice(x0, int(xs.max()) + w))
            cube = self._cubes[key[0]]
            for i, y, x in zip(members, ys, xs, strict=True):
                out[i] = region[:, y - y0 : y - y0 + h, x - x0 : x - x0 + w]
                if self.normalize:  # in the reader thread, not after the batch
                    out[i] -= cube.mean[:, None, None]  # type: ignore[index]
                    out[i] /= cube.std[:, None, None]  # type: ignore[index]
            if cube.present is not None:
                present[members] = cube.present[key[1], key[2]]

        list(self._local.pool(self.threads).map(fill, groups))
        return {
            "images": torch.from_numpy(out),
            "present": torch.from_numpy(present),
            "well": [str(self._cubes[int(k)].wells[wi]) for k, wi in rows[:, :2]],
            "field": torch.tensor(
                [int(self._cubes[int(k)].fields[fi]) for k, fi in rows[:, [0, 2]]]
            ),
            "cube": torch.from_numpy(rows[:, 0].copy()),
            "y": torch.from_numpy(rows[:, 3].copy()),
            "x": torch.from_numpy(rows[:, 4].copy()),
        }

    def _read(self, key: tuple[int, int, int], ys: slice, xs: slice) -> np.ndarray:
        """Pixels ``(channel, y, x)`` of one field's window, as stored."""
        k, wi, fi = key
        cube = self._cubes[k]
        if cube.data is not None:
            sel = cube.data[wi, fi][self._channel_index, ys, xs]
            return np.asarray(sel.values)
        array = self._local.array(self, k)
        return np.asarray(array.oindex[wi, fi, self._channel_index, ys, xs])

    # --- workers ------------------------------------------------------------------------

    def loader(self, *, num_workers: int = 2, shuffle: bool = False, **kwargs: Any) -> Any:
        """A ``torch.utils.data.DataLoader`` over the batches, set up for this dataset.

        Workers start with forkserver (no inherited event loops or thread pools),
        stay alive between epochs, and pin memory when CUDA is available.
        ``kwargs`` override these defaults.
        """
        options: dict[str, Any] = {
            "batch_size": None,
            "shuffle": shuffle,
            "num_workers": num_workers,
            "pin_memory": torch.cuda.is_available(),
        }
        if num_workers > 0:
            options.update(multiprocessing_context="forkserver", persistent_workers=True)
        options.update(kwargs)
        return torch.utils.data.DataLoader(self, **options)


class _ProcessLocal:
    """Open arrays and the thread pool of one process; rebuilt after fork/pickle."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._arrays: dict[int, zarr.Array] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_ProcessLocal, ())  # a worker starts with nothing open

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: nothing of the parent's is usable
            self.__init__()  # type: ignore[misc]

    def pool(self, threads: int) -> ThreadPoolExecutor:
        self._check_pid()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="cube-read")
            return self._pool

    def array(self, ds: CubeBatchDataset, k: int) -> zarr.Array:
        self._check_pid()
        with self._lock:
            if k not in self._arrays:
                cube = ds._cubes[k]
                store = zarr_store(cube.url or "", cube.storage_options, read_only=True)
                group = zarr.open_group(store, mode="r", zarr_format=3)
                self._arrays[k] = group_array(group, ds.variable)
            return self._arrays[k]


def _select_channels(
    ds: xr.Dataset, channels: Sequence[str] | None, variable: str
) -> tuple[tuple[str, ...], np.ndarray]:
    if variable not in ds:
        raise SchemaError(f"The Dataset has no variable '{variable}'; it has {list(ds.data_vars)}.")
    missing = [d for d in cv.PLATE_DIMS if d not in ds[variable].dims]
    if missing:
        raise SchemaError(
            f"'{variable}' has dims {ds[variable].dims}; a plate cube has {cv.PLATE_DIMS} "
            f"(missing {missing})."
        )
    names = [str(c) for c in np.asarray(ds["channel"].values)]
    if channels is None:
        return tuple(names), np.arange(len(names))
    unknown = [c for c in channels if c not in names]
    if unknown or not channels:
        raise SchemaError(
            f"channels={list(channels)}: unknown or empty selection; the cube has {names}."
        )
    return tuple(channels), np.array([names.index(c) for c in channels])


def _check_input_dims(
    ds: xr.Dataset, input_dims: dict[str, int] | None, variable: str
) -> dict[str, int]:
    sizes = {str(d): int(s) for d, s in ds[variable].sizes.items()}
    dims = dict(input_dims or {})
    unknown = [d for d in dims if d not in ("y", "x")]
    if unknown:
        raise SchemaError(
            f"input_dims has {unknown}; a sample window is along 'y' and 'x' only (each sample "
            "is one well and field, with the selected channels)."
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


def _names(items: list[CubeLike]) -> str:
    return ", ".join(i if isinstance(i, str) else "<Dataset>" for i in items)
