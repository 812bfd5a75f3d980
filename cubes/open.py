"""Opening cubes as lazy xarray Datasets."""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xarray as xr

from cubes import conventions as cv
from cubes.errors import (
    IncompleteCubeError,
    IncompleteCubeWarning,
    SchemaError,
    SourceNotFoundError,
)
from cubes.metadata import RootMetadata, read_root
from cubes.store import resolve_storage_options, storage_errors, zarr_store

__all__ = ["open_batch", "open_cube"]

logger = logging.getLogger(__name__)


def open_cube(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    endpoint_url: str | None = None,
    anon: bool | None = None,
    require_complete: bool = False,
    dask: bool = True,
) -> xr.Dataset:
    """Open a cube as a lazy, dask-backed :class:`xarray.Dataset`.

    Opening reads the consolidated metadata (a small request, made twice: the
    first read fails within seconds on a wrong endpoint, and tells a cube from
    what is not one), then the coordinates, masks and statistics; pixels are
    read when computed. Dask chunks follow the storage shards, so that one
    dask chunk is one object read.

    Parameters
    ----------
    url
        Local path or URL of the cube (``s3://bucket/plate.zarr``).
    storage_options
        fsspec options (``endpoint_url``, ``anon``, ``key``/``secret`` …).
    endpoint_url, anon
        Shortcuts for the matching storage options; see
        :func:`cubes.store.resolve_storage_options`.
    require_complete
        Raise :class:`IncompleteCubeError` instead of warning when the ingest
        that writes the cube has not finished.
    dask
        ``False``: xarray's own lazy arrays instead of dask's (pixels are read
        when indexed), without importing dask; what the loaders use, which
        read the pixels themselves.

    Returns
    -------
    xarray.Dataset
        ``ds.encoding["source"]`` is ``url``; ``ds.encoding["storage_options"]``
        holds the options used, so that loaders can reopen the cube in worker
        processes.

    Raises
    ------
    SourceNotFoundError
        No cube at ``url``: nothing there, a folder of other files, or a prefix
        that holds cubes (a batch: the message names them and
        :func:`open_batch`).
    SchemaError
        ``url`` is a Zarr group or array that is not a cube (an OME-NGFF export,
        a plain Zarr store); the message says what to call instead.
    StorageError
        The storage cannot be reached or refuses access (a wrong endpoint fails
        within seconds: the first request is tried twice, not 8 times).

    Examples
    --------
    >>> url = "s3://bucket/plate.zarr"
    >>> ds = open_cube(url, endpoint_url="http://127.0.0.1:9000")  # doctest: +SKIP
    >>> ds.images.sel(well="A01", field=1, channel="DNA").plot()  # doctest: +SKIP
    """
    options = resolve_storage_options(url, storage_options, endpoint_url=endpoint_url, anon=anon)
    root = read_cube_root(url, options)
    _check_complete(url, root.attrs, require_complete)
    with storage_errors(url, options):
        store = zarr_store(url, options, read_only=True)
        chunks: dict[str, Any] | None = {} if dask else None
        ds = xr.open_zarr(store, consolidated=root.consolidated, zarr_format=3, chunks=chunks)
    if dask:
        ds = _chunk_by_shards(ds)
    with storage_errors(url, options):
        ds = _load_small(ds)
    ds.encoding["source"] = url
    ds.encoding["storage_options"] = options
    return ds


def read_cube_root(url: str, storage_options: dict[str, Any] | None = None) -> RootMetadata:
    """The root metadata of the cube at ``url``, read once (tried twice: a wrong endpoint fails
    within seconds), or the error saying what is there instead.

    Raises
    ------
    SourceNotFoundError, SchemaError, StorageError
        As :func:`open_cube`.
    """
    root = read_root(url, storage_options, probe=True)
    if root is None:
        raise SourceNotFoundError(_not_there(url, storage_options or {}))
    if not root.is_cube:
        raise SchemaError(root.what())
    return root


def open_batch(
    prefix: str,
    *,
    storage_options: dict[str, Any] | None = None,
    endpoint_url: str | None = None,
    anon: bool | None = None,
    require_complete: bool = False,
) -> dict[str, xr.Dataset]:
    """Open the cubes of a batch (one per plate) as lazy Datasets, keyed by plate.

    The plates are the cubes that the batch's ``plates.csv`` lists (beside it,
    by name); without a ``plates.csv``, every cube directly under ``prefix``.
    A plate is keyed by its ``plate`` attribute (the name in ``plates.csv``),
    else by its name without ``.zarr``. Costs one listing of ``prefix``, one
    read of each cube's metadata, then what :func:`open_cube` reads per cube.

    Parameters
    ----------
    prefix
        Local folder or URL of the batch (``s3://bucket/cubes/Batch1/``).
    storage_options, endpoint_url, anon, require_complete
        As for :func:`open_cube`, for every cube.

    Returns
    -------
    dict
        ``{plate: xarray.Dataset}``, sorted by plate.

    Raises
    ------
    SourceNotFoundError
        No cube under ``prefix``, or one that ``plates.csv`` lists is missing.
    SchemaError
        ``prefix`` is itself a cube (open it with :func:`open_cube`).

    Examples
    --------
    >>> plates = open_batch("s3://bucket/cubes/Batch1/")  # doctest: +SKIP
    >>> {name: ds.sizes["well"] for name, ds in plates.items()}  # doctest: +SKIP
    {'BR00117035': 384, 'BR00117036': 384}
    """
    from cubes.listing import find_cubes

    options = resolve_storage_options(prefix, storage_options, endpoint_url=endpoint_url, anon=anon)
    found = find_cubes(prefix, options)
    if any(root.url == prefix for root in found.cubes):
        raise SchemaError(
            f"{prefix} is a cube, not a batch of cubes: open it with cubes.open_cube({prefix!r})."
        )
    if found.absent:
        raise SourceNotFoundError(
            f"{found.index_files[0]} lists cubes that are not under {prefix}: "
            f"{', '.join(found.absent[:5])}. Copy them there, or write them again with "
            "'python -m ingest'; open the others one by one with cubes.open_cube."
        )
    roots = [r for r in found.cubes if not found.index or r.url in found.index]
    if not roots:
        raise SourceNotFoundError(found.no_cubes())
    out: dict[str, xr.Dataset] = {}
    for root in roots:
        stem = _stem(root.url)
        name = str(root.attrs.get("plate") or found.index.get(root.url, {}).get("plate") or stem)
        key = name if name not in out else stem
        out[key] = open_cube(root.url, storage_options=options, require_complete=require_complete)
    return dict(sorted(out.items()))


def _stem(url: str) -> str:
    return url.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")


def _not_there(url: str, options: dict[str, Any]) -> str:
    """Why there is no cube at ``url`` (no ``zarr.json``): a batch, other files, nothing."""
    from cubes.listing import BATCH_INDEX, find_cubes

    found = find_cubes(url, options)
    cubes = [r for r in found.cubes if not found.index or r.url in found.index]
    if cubes:
        if found.index:
            plates = [found.index[r.url].get("plate") or _stem(r.url) for r in cubes]
            what = f"a batch prefix: its {BATCH_INDEX} lists {len(cubes)} plate(s)"
        else:
            plates = [_stem(r.url) for r in cubes]
            what = f"a prefix that holds {len(cubes)} cube(s)"
        names = ", ".join(plates[:5]) + (", …" if len(plates) > 5 else "")
        return (
            f"No cube at {url}: it is {what} ({names}), not a cube. Open them all with "
            f"cubes.open_batch({url!r}) (a dict plate -> Dataset), or one with "
            f"cubes.open_cube({cubes[0].url!r}); list them with 'python -m cubes ls {url}'."
        )
    if found.others:
        return f"No cube at {url}; below it: {found.others[0].what()}"
    if url in found.zarr_v2:
        return (
            f"No cube at {url}: it is a Zarr v2 store (.zgroup/.zarray); cubes are Zarr v3. "
            f"Open it with xarray.open_zarr({url!r}), or write a cube with 'python -m ingest'."
        )
    if found.files or found.folders:
        return (
            f"No cube at {url}: it holds {found.files} file(s) and {found.folders} folder(s) "
            "but no zarr.json (not a Zarr store). If it is a source, write a cube from it with "
            "'python -m ingest <source> SRC DEST' and open DEST."
        )
    return (
        f"No cube at {url}: nothing is there (an empty or missing folder or prefix). Check the "
        "URL, or write a cube there with 'python -m ingest'."
    )


def _check_complete(url: str, attrs: dict[str, Any], require_complete: bool) -> None:
    if attrs.get(cv.ATTR_COMPLETE, False):
        return
    message = (
        f"The cube at {url} is incomplete: its ingest has not finished (or was interrupted). "
        "Missing images read as the fill value. Re-run the ingest command to complete it."
    )
    if require_complete:
        raise IncompleteCubeError(message)
    warnings.warn(message, IncompleteCubeWarning, stacklevel=3)


def _load_small(ds: xr.Dataset) -> xr.Dataset:
    """Load coords, masks and statistics (small, unsharded) into memory; pixels stay lazy."""
    names = [n for n, v in ds.variables.items() if not v.encoding.get("shards")]
    if names and not any(ds.variables[n].chunks for n in names):  # no dask: read concurrently
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: ds.variables[n].load(), names))
    loaded = ds[names].load() if names else ds[[]]
    return ds.assign({n: loaded[n] for n in loaded.data_vars}).assign_coords(
        {n: loaded[n] for n in loaded.coords if n not in ds.indexes}
    )


def _chunk_by_shards(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk sharded variables so that one dask chunk covers one shard (one object)."""
    for name, var in ds.data_vars.items():
        shards = var.encoding.get("shards")
        if shards:
            ds[name] = var.chunk(dict(zip(var.dims, shards, strict=True)))
    return ds
