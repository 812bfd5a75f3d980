"""Opening cubes as lazy xarray Datasets."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import xarray as xr
import zarr

from cubes import conventions as cv
from cubes.errors import IncompleteCubeError, IncompleteCubeWarning, SourceNotFoundError
from cubes.store import check_location, resolve_storage_options, storage_errors, zarr_store

__all__ = ["open_cube"]

logger = logging.getLogger(__name__)


def open_cube(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    endpoint_url: str | None = None,
    anon: bool | None = None,
    require_complete: bool = False,
) -> xr.Dataset:
    """Open a cube as a lazy, dask-backed :class:`xarray.Dataset`.

    Opening reads the consolidated metadata only (one small request); pixels
    are read when computed. Dask chunks follow the storage shards, so that one
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

    Returns
    -------
    xarray.Dataset
        ``ds.encoding["source"]`` is ``url``; ``ds.encoding["storage_options"]``
        holds the options used, so that loaders can reopen the cube in worker
        processes.

    Raises
    ------
    SourceNotFoundError
        No cube at ``url``.
    StorageError
        The storage cannot be reached or refuses access.

    Examples
    --------
    >>> url = "s3://bucket/plate.zarr"
    >>> ds = open_cube(url, endpoint_url="http://127.0.0.1:9000")  # doctest: +SKIP
    >>> ds.images.sel(well="A01", field=1, channel="DNA").plot()  # doctest: +SKIP
    """
    options = resolve_storage_options(url, storage_options, endpoint_url=endpoint_url, anon=anon)
    with storage_errors(url, options):
        store = zarr_store(url, options, read_only=True)
        try:
            group = zarr.open_group(store, mode="r", zarr_format=3, use_consolidated=None)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            check_location(url, options)
            raise SourceNotFoundError(
                f"No cube at {url}: there is no Zarr v3 group there. Check the URL, or write a "
                "cube there with 'python -m ingest'."
            ) from exc
        _check_complete(url, dict(group.attrs), require_complete)
        ds = xr.open_zarr(
            store, consolidated=group.metadata.consolidated_metadata is not None, chunks={}
        )
    ds = _chunk_by_shards(ds)
    with storage_errors(url, options):
        ds = _load_small(ds)
    ds.encoding["source"] = url
    ds.encoding["storage_options"] = options
    return ds


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
