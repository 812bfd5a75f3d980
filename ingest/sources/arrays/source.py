"""Planning an ``arrays`` cube: ``python -m ingest arrays SRC DEST``.

Planning lists SRC once, reads the files' headers in parallel (a ranged GET per
``.npy``, the zip directory of an ``.npz``, the whole of a ``.pt``) and numbers the
samples. The cube holds one variable per key, ``(sample, {var}_dim0, ...)`` in the
key's own dtype, the coords ``sample`` and ``source_file`` (the path under SRC), the
mask ``present (sample)`` and per-variable statistics. Each write task fills one
shard of ``samples_per_shard`` samples in every variable.
"""

from __future__ import annotations

import logging
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

import cubes
from cubes import conventions as cv
from cubes.errors import SchemaError
from cubes.layout import Layout, StatSpec
from cubes.store import is_local
from ingest.codecs import compressor
from ingest.plan import IngestPlan, ShardTask
from ingest.sources.arrays.catalog import (
    ArraysCatalog,
    ArraySpec,
    FileHeader,
    list_array_files,
    plan_samples,
    read_header,
)
from ingest.sources.arrays.options import ArraysOptions, ArraysSource
from ingest.sources.arrays.reader import ArraysContext, read_samples

__all__ = ["COMPRESSOR", "KIND_ARRAYS", "ArraysOptions", "ArraysSource", "plan"]

logger = logging.getLogger(__name__)

KIND_ARRAYS = "arrays"
SAMPLE = "sample"
SOURCE_FILE = "source_file"
STATS = ("mean", "std", "min", "max")
MAX_SAMPLES_PER_SHARD = 256
MAX_SHARD_BYTES = 32 * 2**20
HEADER_THREADS = 32
COMPRESSOR = compressor(np.uint16)  # integers; floats get compressor(np.float32)


def plan(src: str, dest: str, options: ArraysOptions) -> IngestPlan:
    """The plan of the cube of the array files under ``src`` (reads headers only).

    Raises
    ------
    SourceNotFoundError
        ``src`` holds no array file.
    SchemaError
        A file is unreadable or refused (Python objects), or its variables differ from
        the first file's; the message names the file.
    """
    listing = list_array_files(src, options.storage_options)
    headers = _read_headers(listing.files, listing.sizes, options.storage_options)
    catalog = plan_samples(headers, batched=options.batched)
    n = catalog.n_samples
    if n == 0:
        raise SchemaError(
            f"The files under {src} hold no samples (every batch is empty). Point SRC at "
            "non-empty files, or drop --batched if each file is one sample."
        )
    per_shard = min(options.samples_per_shard or default_samples_per_shard(catalog.variables), n)
    tasks = _tasks(catalog, per_shard)
    logger.info(
        "Planned %d samples from %d files in %d shards of %d samples",
        n,
        len(catalog.files),
        len(tasks),
        per_shard,
    )
    context = ArraysContext(
        storage_options=options.storage_options,
        ranges={f.url: (f.start, f.stop) for f in catalog.files},
        variables={k: (v.shape, v.dtype.str) for k, v in catalog.variables.items()},
        samples_per_shard=per_shard,
        n_samples=n,
        batched=catalog.batched,
        on_error=options.on_error,
    )
    return IngestPlan(
        source_format=KIND_ARRAYS,
        src=src,
        dest=dest,
        template=_template(catalog, _relative(src, catalog.source_file())),
        encoding=_encoding(catalog.variables, per_shard, options.codec),
        codec=options.codec,
        layout=_layout(catalog.variables),
        tasks=tasks,
        reader=read_samples,
        context=context,
        task_shape=(per_shard,),
        ignored=list(listing.ignored),
        attrs=_attrs(src, catalog),
    )


def default_samples_per_shard(variables: dict[str, ArraySpec]) -> int:
    """The most samples, up to 256, that keep a shard of the largest variable <= 32 MiB."""
    largest = max(int(np.prod(v.shape)) * v.dtype.itemsize for v in variables.values())
    return max(1, min(MAX_SAMPLES_PER_SHARD, MAX_SHARD_BYTES // max(largest, 1)))


def _read_headers(
    urls: tuple[str, ...], sizes: dict[str, int], storage_options: dict[str, Any]
) -> list[FileHeader]:
    """Every file's header, read in a thread pool (in the files' order)."""
    with ThreadPoolExecutor(max_workers=min(HEADER_THREADS, len(urls))) as pool:
        return list(
            pool.map(lambda url: read_header(url, storage_options, size=sizes.get(url)), urls)
        )


def _tasks(catalog: ArraysCatalog, per_shard: int) -> list[ShardTask]:
    """One task per shard; its inputs: each file holding one of its samples (first, url)."""
    n_shards = -(-catalog.n_samples // per_shard)
    inputs: list[list[tuple[int, str]]] = [[] for _ in range(n_shards)]
    for f in catalog.files:
        if f.stop == f.start:
            continue
        for k in range(f.start // per_shard, (f.stop - 1) // per_shard + 1):
            inputs[k].append((f.start, f.url))
    return [ShardTask(index=(k,), inputs=tuple(v)) for k, v in enumerate(inputs)]


def _relative(src: str, urls: np.ndarray) -> np.ndarray:
    """Each file's path under SRC (its name where SRC is one file)."""
    local = is_local(src)
    base = os.path.abspath(src) if local else src
    base = base.replace("\\", "/").rstrip("/")
    out = []
    for url in urls:
        path = str(os.path.abspath(url) if local else url).replace("\\", "/")
        rel = posixpath.relpath(path, base) if path.startswith(base + "/") else path
        out.append(posixpath.basename(path) if path == base else rel)
    return np.array(out, dtype=object)


def _template(catalog: ArraysCatalog, source_file: np.ndarray) -> xr.Dataset:
    """The cube's schema: the variables (lazy), coords, mask and statistics."""
    n = catalog.n_samples
    data_vars: dict[str, Any] = {}
    for name, spec in catalog.variables.items():
        dims = (SAMPLE, *(f"{name}_dim{i}" for i in range(len(spec.shape))))
        data_vars[name] = (dims, da.zeros((n, *spec.shape), dtype=spec.dtype))
    data_vars[cv.PRESENT] = (
        SAMPLE,
        np.zeros(n, dtype=bool),
        {"long_name": "True where the sample was read and written"},
    )
    for name, spec in catalog.variables.items():
        for stat in _stat_names(spec):
            data_vars[f"{name}_{stat}"] = ((), np.full((), np.nan), {"stat": stat})
    coords = {
        SAMPLE: (SAMPLE, np.arange(n, dtype=np.int64)),
        SOURCE_FILE: (SAMPLE, source_file, {"long_name": "the sample's file, under SRC"}),
    }
    return xr.Dataset(data_vars, coords=coords)


def _stat_names(spec: ArraySpec) -> tuple[str, ...]:
    return (*STATS, "nan_count") if spec.dtype.kind == "f" else STATS


def _layout(variables: dict[str, ArraySpec]) -> Layout:
    return Layout(
        kind=KIND_ARRAYS,
        sample_dims=(SAMPLE,),
        window_dims=(),
        variables=tuple(variables),
        channel_dim=None,
        mask=cv.PRESENT,
        mask_item="sample",
        statistics={k: StatSpec(k, (), _stat_names(v)) for k, v in variables.items()},
    )


def _encoding(
    variables: dict[str, ArraySpec], per_shard: int, codec: str | None = None
) -> dict[str, dict[str, Any]]:
    """One chunk per sample, ``per_shard`` samples per shard; ``codec``, else the default for
    the variable's dtype (integers as the plates' pixels, floats as climate fields)."""
    return {
        name: {
            "chunks": (1, *spec.shape),
            "shards": (per_shard, *spec.shape),
            "compressors": [compressor(spec.dtype, codec)],
        }
        for name, spec in variables.items()
    }


def _attrs(src: str, catalog: ArraysCatalog) -> dict[str, Any]:
    return {
        cv.ATTR_KIND: KIND_ARRAYS,
        cv.ATTR_PROVENANCE: {
            "source_format": KIND_ARRAYS,
            "src": src if not is_local(src) else os.path.abspath(src),
            "n_files": len(catalog.files),
            "n_samples": catalog.n_samples,
            "batched": catalog.batched,
            "source_fingerprint": catalog.fingerprint,
            "software": f"cellcubes {cubes.__version__}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
