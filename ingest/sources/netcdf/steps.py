"""The task side of the NetCDF source: one file's variables, decoded with its own packing.

:func:`read_steps` is what a write task calls: one whole-object read of a file (a
single GET on S3), then its variables decoded to float32 with that file's packing
(:class:`Packing`, :func:`decode`). NetCDF-4/HDF5 files are read with h5py directly
(an order of magnitude faster than going through xarray); classic files through
xarray's ``scipy`` engine.

``from ingest.sources.netcdf.catalog import read_steps, decode, Packing`` keeps working.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubes.errors import SchemaError
from cubes.store import filesystem, storage_errors
from ingest.sources.netcdf._header import VarHeader, hdf5_variables, sniff_engine

__all__ = ["Packing", "decode", "packing_of", "read_steps"]


@dataclass(frozen=True)
class Packing:
    """How one variable is stored in one file (decode with :func:`decode`)."""

    dtype: str
    scale_factor: Any = None
    add_offset: Any = None
    fill_values: tuple[Any, ...] = ()
    unsigned: bool = False


def packing_of(var: VarHeader) -> Packing:
    """The :class:`Packing` that ``var``'s attributes declare."""
    fills = []
    for key in ("_FillValue", "missing_value"):
        if key in var.attrs:
            fills.extend(np.atleast_1d(var.attrs[key]).tolist())
    unsigned = var.attrs.get("_Unsigned", "false")
    if isinstance(unsigned, bytes):
        unsigned = unsigned.decode("utf-8", errors="replace")
    return Packing(
        var.dtype,
        var.attrs.get("scale_factor"),
        var.attrs.get("add_offset"),
        tuple(fills),
        str(unsigned).lower() == "true",
    )


def decode(raw: np.ndarray, packing: Packing) -> np.ndarray:
    """CF-decode ``raw`` with one file's packing: fill/missing -> NaN, then scale and offset.

    Computed in the packing attributes' float type (float32 when both are float32,
    as xarray does), returned as float32.
    """
    stored = raw
    if packing.unsigned and raw.dtype.kind == "i":
        raw = raw.view(raw.dtype.str.replace("i", "u"))
    attrs = [a for a in (packing.scale_factor, packing.add_offset) if a is not None]
    wide = raw.dtype.itemsize > 2 or any(np.asarray(a).dtype != np.float32 for a in attrs)
    data: np.ndarray[Any, Any] = raw.astype(np.float64 if wide else np.float32)
    fills = [f for f in packing.fill_values if not np.isnan(f)]
    if fills:
        # compared as stored: a signed fill of an _Unsigned variable wraps as it does
        held = np.asarray(fills).astype(stored.dtype) if stored is not raw else fills
        data[np.isin(stored, np.asarray(held, dtype=stored.dtype))] = np.nan
    if packing.scale_factor is not None:
        data *= packing.scale_factor
    if packing.add_offset is not None:
        data += packing.add_offset
    return data.astype(np.float32, copy=False)


def read_steps(
    file_url: str,
    storage_options: dict[str, Any] | None,
    variables: Sequence[str],
    engine: str | None = None,
    *,
    record_dim: str | None = None,
    keep_packing: bool = False,
) -> dict[str, np.ndarray]:
    """Read ``variables`` of one file, decoded with that file's own packing.

    One whole-object read (a single GET on S3), then every variable decoded to
    float32 (``_FillValue``/``missing_value`` -> NaN, then ``scale_factor`` and
    ``add_offset``), or the raw stored values with ``keep_packing=True``. With
    ``record_dim`` given, that dim is moved first.

    Returns
    -------
    dict
        ``{name: array}``; a variable the file lacks raises :class:`SchemaError`.
    """
    fs, path = filesystem(file_url, storage_options)
    with storage_errors(file_url, storage_options):
        data = fs.cat_file(path)
    engine = engine or sniff_engine(file_url, data[:4])
    read = _read_hdf5 if engine == "h5netcdf" else _read_xarray
    raws = read(file_url, data, engine, variables)
    out = {}
    for name in variables:
        var, raw = raws[name]
        if record_dim is not None and record_dim in var.dims and var.dims[0] != record_dim:
            raw = np.moveaxis(raw, var.dims.index(record_dim), 0)
        out[name] = raw.copy() if keep_packing else decode(raw, packing_of(var))
    return out


def _missing(file_url: str, name: str, names: Sequence[str]) -> SchemaError:
    return SchemaError(
        f"{file_url} has no variable '{name}' (it has {', '.join(names)}). Re-plan: the "
        "file changed since the catalog was read."
    )


def _read_hdf5(
    file_url: str, data: bytes, engine: str, variables: Sequence[str]
) -> dict[str, tuple[VarHeader, np.ndarray]]:
    """``{name: (header, stored values)}`` read with h5py from the file's bytes."""
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        headers, datasets = hdf5_variables(f)
        out = {}
        for name in variables:
            if name not in headers:
                raise _missing(file_url, name, [n for n, v in headers.items() if v.dims != (n,)])
            out[name] = (headers[name], np.asarray(datasets[name][()]))
    return out


def _read_xarray(
    file_url: str, data: bytes, engine: str, variables: Sequence[str]
) -> dict[str, tuple[VarHeader, np.ndarray]]:
    """``{name: (header, stored values)}`` read with xarray (classic files)."""
    import xarray as xr

    out = {}
    with xr.open_dataset(
        io.BytesIO(data),
        engine=engine,
        decode_cf=False,
        decode_times=False,
        mask_and_scale=False,
        cache=False,
    ) as ds:
        for name in variables:
            if name not in ds.variables:
                raise _missing(file_url, name, list(map(str, ds.data_vars)))
            var = ds.variables[name]
            raw = np.asarray(var.values)
            dims = tuple(map(str, var.dims))
            out[name] = (VarHeader(name, dims, raw.shape, str(raw.dtype), var.attrs), raw)
    return out
