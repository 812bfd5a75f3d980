"""CellProfiler illumination functions: ``<batch>/illum/<Plate>/<Plate>_Illum<Channel>.npy``.

They are stored in the cube as the variable ``illum`` ``(channel, y, x)`` float32,
NaN for channels without one, and never applied to the stored pixels.
"""

from __future__ import annotations

import functools
import io
import posixpath
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from cubes.errors import SchemaError
from cubes.store import filesystem, join_url, storage_errors
from ingest.sources.cellpainting.layout import ILLUM

__all__ = ["illum_extras", "illum_folder", "load_illum"]


def illum_folder(plate_folder: str, plate: str) -> str:
    """``…/<batch>/images/<Plate>__…-Measurement1`` -> ``…/<batch>/illum/<Plate>``, or ""."""
    if not plate_folder or not plate:
        return ""
    batch = posixpath.dirname(posixpath.dirname(plate_folder.replace("\\", "/")))
    return join_url(batch, "illum", plate) if batch else ""


def illum_extras(
    template: xr.Dataset, folder: str, shape: tuple[int, int], options: dict[str, Any]
) -> dict[str, Any]:
    """Add ``illum`` to ``template`` if ``folder`` holds illumination functions; its writer."""
    if not folder:
        return {}
    fs, path = filesystem(folder, options)
    with storage_errors(folder, options):
        listing = fs.find(path, maxdepth=1) if fs.exists(path) else []
    plate = posixpath.basename(folder.rstrip("/"))
    channels = [str(c) for c in template["channel"].values]
    urls: dict[int, str] = {}
    for item in listing:
        name = posixpath.basename(item.replace("\\", "/"))
        stem = name[len(f"{plate}_Illum") : -len(".npy")]
        if name.startswith(f"{plate}_Illum") and name.endswith(".npy") and stem in channels:
            urls[channels.index(stem)] = join_url(folder, name)
    if not urls:
        return {}
    template[ILLUM] = (
        ("channel", "y", "x"),
        da.zeros((len(channels), *shape), dtype=np.float32, chunks=(1, *shape)),
        {
            "long_name": "CellProfiler illumination correction functions (divide by them)",
            "applied": 0,
            "sources": [urls.get(i, "") for i in range(len(channels))],
        },
    )
    load = functools.partial(load_illum, tuple(sorted(urls.items())), len(channels), shape, options)
    return {ILLUM: load}


def load_illum(
    urls: tuple[tuple[int, str], ...],
    n_channels: int,
    shape: tuple[int, int],
    options: dict[str, Any],
) -> np.ndarray:
    """Read the ``.npy`` functions into ``(channel, y, x)`` float32, NaN where there is none."""
    out = np.full((n_channels, *shape), np.nan, dtype=np.float32)
    for position, url in urls:
        fs, path = filesystem(url, options)
        with storage_errors(url, options):
            data = fs.cat_file(path)
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.shape != shape:
            raise SchemaError(
                f"Illumination function {url} is {array.shape}; the plate's images are {shape}. "
                "Remove it, or regenerate it for these images."
            )
        out[position] = array
    return out
