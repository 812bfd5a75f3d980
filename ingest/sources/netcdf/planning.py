"""Planning a climate cube from NetCDF/HDF5 files: list SRC, read headers, build the plan.

Only headers are read (:func:`~ingest.sources.netcdf.catalog.read_catalog`).
The cube holds one float32 variable per selected data variable on the record
axis (``time``), the full regular axis including gap steps, the files' grid
coordinates as they are, a ``present (time)`` mask and per-variable statistics
(per level for variables with a level dim). Each write task fills one shard of
``S`` time steps of every variable (:mod:`ingest.sources.netcdf.reader`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

import cubes
from cubes import conventions as cv
from cubes.errors import SchemaError, SourceNotFoundError
from cubes.layout import Layout, StatSpec
from cubes.store import filesystem, is_local, storage_errors
from ingest.codecs import MANTISSA_BITS, compressor
from ingest.plan import IngestPlan, ShardTask
from ingest.sources.base import ArgumentError, SourceOptions
from ingest.sources.netcdf.catalog import Catalog, read_catalog
from ingest.sources.netcdf.reader import ReadContext, read_block

__all__ = [
    "COMPRESSOR",
    "EXTENSIONS",
    "KIND_CLIMATE",
    "STATS",
    "NetcdfOptions",
    "list_files",
    "plan",
    "steps_per_shard",
    "steps_per_task",
]

logger = logging.getLogger(__name__)

KIND_CLIMATE = "climate"
EXTENSIONS = (".nc", ".nc4", ".h5", ".hdf5", ".cdf")
STATS = ("mean", "std", "min", "max", "nan_count")
# Chosen by benchmarks/codecs.py on ERA-Interim fields decoded to float32 and on
# synth-climate (docs/codecs.md): Blosc zstd 1 + byte shuffle in 1 MiB blocks stores
# fewer bytes than zstd 1 + bitshuffle (the codec until 2026-12) and decodes ~1.5x as
# fast. ``--codec`` picks another (``zstd3`` for packed fields of few distinct values).
COMPRESSOR = compressor(np.float32)
MAX_STEPS_PER_SHARD = 8
MAX_SHARD_BYTES = 64 * 2**20
MAX_TASK_BYTES = 256 * 2**20  # decoded float32 blocks of one write task
_PACKING_ATTRS = (
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
    "_Unsigned",
    "coordinates",
)


@dataclass(frozen=True)
class NetcdfOptions(SourceOptions):
    """Options of the NetCDF source.

    Attributes
    ----------
    variables
        Data variables to keep (default: every variable on the record dim).
    concat_dim
        The record dimension (default: the unlimited dim, else ``time``).
    steps_per_shard
        Time steps per shard and write task (default: :func:`steps_per_shard`).
    chunks
        Chunk sizes by dim (``{"lat": 181}``); default one step x the full grid.
    stats_period
        ``(start, end)``: the statistics count the steps of this period only
        (a training period, as anemoi-datasets does); None: all steps.
    keep_bits
        Lossy, opt-in: round the float32 values to this many mantissa bits (0 to
        23) before they are stored (:func:`ingest.codecs.keep_bits`; each
        variable's attrs then say ``keep_bits``); None: values as decoded.
    """

    variables: tuple[str, ...] | None = None
    concat_dim: str | None = None
    steps_per_shard: int | None = None
    stats_period: tuple[str, str] | None = None
    chunks: dict[str, int] | None = None
    keep_bits: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_bits is not None and not 0 <= self.keep_bits <= MANTISSA_BITS:
            raise ArgumentError(
                f"--keep-bits {self.keep_bits}: a float32 has {MANTISSA_BITS} mantissa bits; "
                f"keep 0 to {MANTISSA_BITS} of them, or leave --keep-bits out (lossless)."
            )
        if self.steps_per_shard is not None and self.steps_per_shard < 1:
            raise ArgumentError(
                f"--steps-per-shard {self.steps_per_shard}: give a number of steps >= 1."
            )


def list_files(src: str, storage_options: dict[str, Any]) -> list[str]:
    """The NetCDF/HDF5 files SRC names: a folder or prefix, a glob, one file or a URL list.

    Raises
    ------
    SourceNotFoundError
        SRC does not exist, or holds no file ending in one of :data:`EXTENSIONS`.
    """
    fs, root = filesystem(src, storage_options)
    fs.invalidate_cache()  # a listing cached by an earlier run in this process is stale
    with storage_errors(src, storage_options):
        if any(c in src for c in "*?["):
            paths = sorted(fs.glob(root))
        elif fs.isdir(root):
            paths = sorted(fs.find(root))
        elif fs.isfile(root) and not root.lower().endswith(EXTENSIONS):
            text = fs.cat_file(root).decode()
            return [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
        elif fs.isfile(root):
            paths = [root]
        else:
            raise SourceNotFoundError(
                f"{src} does not exist. Give a folder or s3:// prefix of NetCDF files, a glob "
                "('data/*.nc'), or a text file listing their URLs."
            )
    local = "file" in np.atleast_1d(fs.protocol)
    urls = [p if local else fs.unstrip_protocol(p) for p in paths]
    urls = [u for u in urls if posixpath.basename(u).lower().endswith(EXTENSIONS)]
    if not urls:
        raise SourceNotFoundError(
            f"No NetCDF/HDF5 files under {src} ({len(paths)} listed, none ending in "
            f"{', '.join(EXTENSIONS)}). Point SRC at the folder holding the .nc files."
        )
    return urls


def steps_per_shard(cat: Catalog, wanted: int | None = None) -> int:
    """``wanted``, else the largest ``S <= 8`` whose shard of every variable is <= 64 MB."""
    if wanted is not None:
        return wanted
    step_bytes = max(int(np.prod(v.shape)) * 4 for v in cat.variables.values())
    return max(1, min(MAX_STEPS_PER_SHARD, MAX_SHARD_BYTES // max(step_bytes, 1)))


def steps_per_task(cat: Catalog, size: int) -> int:
    """Steps per write task: whole shards of ``size``, spanning about two files' steps.

    A task reads every file it needs whole (one GET each); a file whose steps
    cross a task boundary is read by both tasks. Tasks of about twice a file's
    steps read each file ~1.5 times instead of ~4 times (one shard of 8 daily
    steps per task over monthly files), while a task's blocks stay within
    :data:`MAX_TASK_BYTES`.
    """
    per_file = int(np.median([len(f.steps) for f in cat.files])) if cat.files else 1
    step_bytes = sum(int(np.prod(v.shape)) * 4 for v in cat.variables.values())
    shards = max(1, -(-2 * per_file // size))
    fits = max(1, MAX_TASK_BYTES // max(step_bytes * size, 1))
    return size * min(shards, fits)


def plan(src: str, dest: str, options: NetcdfOptions) -> list[IngestPlan]:
    """Plan the climate cube of the NetCDF files SRC names (headers only)."""
    urls = list_files(src, options.storage_options)
    cat = read_catalog(
        urls,
        options.storage_options,
        concat_dim=options.concat_dim,
        variables=options.variables,
        on_error=options.on_error,
    )
    size = steps_per_shard(cat, options.steps_per_shard)
    per_task = steps_per_task(cat, size)
    if cat.static:
        logger.info("Static variables left out: %s", ", ".join(cat.static))
    _check_chunk_dims(cat, options.chunks, src)
    template, encoding = _template(cat, size, options.chunks, compressor(np.float32, options.codec))
    if options.keep_bits is not None:  # lossy on request: said on every variable
        for name in cat.variables:
            template[name].attrs["keep_bits"] = options.keep_bits
    layout = _layout(cat)
    logger.info(
        "Planned %d steps of %s in shards of %d steps from %d files",
        len(cat.axis),
        ", ".join(cat.variables),
        size,
        len(cat.files),
    )
    return [
        IngestPlan(
            source_format="netcdf",
            src=src,
            dest=dest,
            template=template,
            encoding=encoding,
            layout=layout,
            tasks=_tasks(cat, per_task),
            task_shape=(per_task,),
            append_dim=cat.record_dim,
            stats_mask=_period_mask(template, cat.record_dim, options.stats_period, src),
            reader=read_block,
            context=_context(cat, per_task, options),
            ignored=[url for url, _ in cat.skipped],
            attrs=_attrs(src, cat),
            codec=options.codec,
        )
    ]


def _period_mask(
    template: xr.Dataset, dim: str, period: tuple[str, str] | None, src: str
) -> np.ndarray | None:
    """The steps of ``period`` on the record axis; they and only they count for statistics."""
    if period is None:
        return None
    positions = xr.DataArray(np.arange(template.sizes[dim]), coords={dim: template[dim].values})
    try:
        chosen = positions.sel({dim: slice(*period)}).values
    except (KeyError, TypeError, ValueError) as exc:
        raise ArgumentError(
            f"--stats-period {'/'.join(period)}: not a period of the time axis of {src} ({exc})."
        ) from exc
    if not len(chosen):
        first, last = template[dim].values[[0, -1]]
        raise ArgumentError(
            f"--stats-period {'/'.join(period)} holds no step of {src} ({first} .. {last})."
        )
    mask = np.zeros(template.sizes[dim], dtype=bool)
    mask[chosen] = True
    for name in template.data_vars:
        if "stat" in template[name].attrs:
            template[name].attrs["period"] = "/".join(period)
    return mask


def _level_dim(cat: Catalog, name: str) -> str | None:
    """The level dim of a variable: a dim between the record dim and the last two."""
    dims = cat.variables[name].dims[1:-2]
    return dims[0] if dims else None


def _layout(cat: Catalog) -> Layout:
    names = tuple(cat.variables)
    window = tuple(cat.variables[names[0]].dims[-2:])
    stats = {}
    for name in names:
        level = _level_dim(cat, name)
        stats[name] = StatSpec(name, (level,) if level else (), STATS)
    return Layout(
        kind=KIND_CLIMATE,
        sample_dims=(cat.record_dim,),
        window_dims=window,
        variables=names,
        channel_dim=None,
        mask=cv.PRESENT,
        mask_item="time step",
        statistics=stats,
        time_dim=cat.record_dim,
    )


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in _PACKING_ATTRS}


def _check_chunk_dims(cat: Catalog, chunks: dict[str, int] | None, src: str) -> None:
    dims = {d for v in cat.variables.values() for d in v.dims}
    unknown = sorted(set(chunks or {}) - dims)
    if unknown:
        raise ArgumentError(
            f"--chunks names {', '.join(unknown)}, which no variable of {src} has (dims: "
            f"{', '.join(sorted(dims))})."
        )


def _chunking(
    dims: tuple[str, ...], shard: tuple[int, ...], chunks: dict[str, int], codec: Any
) -> dict[str, Any]:
    """One step x the full grid per chunk unless ``chunks`` says otherwise (``lat=181``);
    a shard is ``shard[0]`` steps x the whole grid, rounded up to whole chunks."""
    inner = tuple(
        chunks.get(d, 1 if k == 0 else n) for k, (d, n) in enumerate(zip(dims, shard, strict=True))
    )
    if shard[0] % inner[0]:
        raise ArgumentError(
            f"--chunks {dims[0]}={inner[0]} does not divide the {shard[0]} steps of a shard: "
            "give a divisor, or --steps-per-shard a multiple of it."
        )
    outer = (shard[0], *(-(-n // c) * c for n, c in zip(shard[1:], inner[1:], strict=True)))
    return {"chunks": inner, "shards": outer, "compressors": [codec]}


def _template(
    cat: Catalog, size: int, chunks: dict[str, int] | None, codec: Any
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The cube's schema and its encoding."""
    dim, n = cat.record_dim, len(cat.axis)
    coords: dict[str, Any] = {dim: xr.Variable((dim,), cat.axis.values)}
    encoding: dict[str, dict[str, Any]] = {}
    if cat.axis.units is not None:
        encoding[dim] = {"units": cat.axis.units, "calendar": cat.axis.calendar}
    for name, coord in cat.coords.items():
        coords[name] = xr.Variable(coord.dims, coord.values, _clean(coord.attrs))
    data_vars: dict[str, Any] = {
        cv.PRESENT: xr.Variable((dim,), da.zeros(n, dtype=bool, chunks=-1))
    }
    for name, info in cat.variables.items():
        shape = (n, *info.shape)
        data = da.zeros(shape, dtype=np.float32, chunks=(size, *info.shape))
        data_vars[name] = xr.Variable(info.dims, data, _clean(info.attrs))
        encoding[name] = _chunking(info.dims, (size, *info.shape), chunks or {}, codec)
        level = _level_dim(cat, name)
        stat_dims = (level,) if level else ()
        stat_shape = (info.shape[info.dims.index(level) - 1],) if level else ()
        for stat in STATS:
            full = da.full(stat_shape, np.nan, dtype=np.float64)
            data_vars[f"{name}_{stat}"] = xr.Variable(stat_dims, full, {"stat": stat})
    return xr.Dataset(data_vars, coords=coords), encoding


def _tasks(cat: Catalog, size: int) -> list[ShardTask]:
    """One task per ``size`` steps; inputs ``(axis position, file URL)`` of its present steps."""
    n_shards = -(-len(cat.axis) // size)
    inputs: list[list[tuple[int, str]]] = [[] for _ in range(n_shards)]
    for entry in cat.files:
        for position in entry.steps:
            inputs[position // size].append((position, entry.url))
    return [ShardTask(index=(k,), inputs=tuple(sorted(v))) for k, v in enumerate(inputs)]


def _context(cat: Catalog, size: int, options: NetcdfOptions) -> ReadContext:
    return ReadContext(
        storage_options=options.storage_options,
        record_dim=cat.record_dim,
        variables=tuple(cat.variables),
        steps_per_task=size,
        n_steps=len(cat.axis),
        shapes={n: tuple(v.shape) for n, v in cat.variables.items()},
        engines={f.url: f.engine for f in cat.files},
        file_steps={f.url: tuple(f.steps) for f in cat.files},
        file_vars={f.url: f.variables for f in cat.files},
        on_error=options.on_error,
        keep_bits=options.keep_bits,
    )


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes that survive JSON (numpy scalars and arrays converted)."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray | np.generic):
            value = value.tolist()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _attrs(src: str, cat: Catalog) -> dict[str, Any]:
    if not cat.variables:
        raise SchemaError(f"{src}: no data variables on the record dim '{cat.record_dim}'.")
    return {
        cv.ATTR_KIND: KIND_CLIMATE,
        cv.ATTR_PROVENANCE: {
            "source_format": "netcdf",
            "src": src if not is_local(src) else os.path.abspath(src),
            "n_files": len(cat.files),
            "calendar": cat.axis.calendar,
            "software": f"cellcubes {cubes.__version__}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "source_attrs": _jsonable(cat.attrs),
    }
