"""Writing whole shards in one PUT, without zarr's read before the write.

zarr 3.1 writes into a sharded array through its partial-shard path whatever
the selection: before each shard's PUT it GETs the shard (on S3 through s3fs: a
HEAD, a 404, then a LIST to tell a missing key from a missing folder), three
round trips and the server's CPU for each task (measured on the moto server:
16 HEAD + 16 LIST for the 12 shards and 4 thumbnail shards of a 4-well plate).
A write task owns its shards whole (:mod:`ingest.plan`), so there is nothing to
read: :func:`write_region` encodes each shard with the array's own codecs and
stores it with one ``set`` (one PUT, atomic on S3; write-then-rename on disk, as
zarr does). Anything else (a region that is not whole shards, an array without
sharding) goes through zarr's ``array[selection] = value`` as before.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import zarr

__all__ = ["write_region"]


def write_region(array: zarr.Array, selection: Any, value: np.ndarray) -> None:
    """``array[selection] = value``, each whole shard encoded and stored in one request.

    Parameters
    ----------
    array
        A zarr v3 array (opened for writing).
    selection
        ``Ellipsis``, or a tuple of slices (step 1) and integers over the leading
        dims; the rest of the dims are whole.
    value
        The region's values (an integer's dim left out, as numpy indexes).
    """
    region = _whole_shards(array, selection)
    if region is None:
        array[selection] = value
        return
    starts, shape = region
    value = np.asarray(value, dtype=array.dtype)
    if value.size != int(np.prod(shape)):
        array[selection] = value  # let zarr broadcast, or name the mismatch
        return
    zarr.core.sync.sync(_write_shards(array, starts, value.reshape(shape)))


def _whole_shards(
    array: zarr.Array, selection: Any
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The region's first element and shape if it is whole shards of a sharded array.

    A shard cut by the array's edge counts as whole when the region reaches the
    edge. None for anything else.
    """
    from zarr.codecs.sharding import ShardingCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    meta = array.metadata
    if meta.zarr_format != 3 or len(meta.codecs) != 1:
        return None
    if not isinstance(meta.codecs[0], ShardingCodec):
        return None
    if not isinstance(meta.chunk_grid, RegularChunkGrid):
        return None
    parts = selection if isinstance(selection, tuple) else (selection,)
    parts = () if parts == (Ellipsis,) else parts
    if len(parts) > array.ndim:
        return None
    starts, shape = [], []
    shard = meta.chunk_grid.chunk_shape
    for k, (n, size) in enumerate(zip(array.shape, shard, strict=True)):
        part = parts[k] if k < len(parts) else slice(None)
        if isinstance(part, (int, np.integer)) and 0 <= part < n:
            part = slice(int(part), int(part) + 1)
        if not isinstance(part, slice):
            return None
        start, stop, step = part.indices(n)
        if step != 1 or start % size or (stop % size and stop != n) or stop <= start:
            return None
        starts.append(start)
        shape.append(stop - start)
    return tuple(starts), tuple(shape)


async def _write_shards(array: zarr.Array, starts: tuple[int, ...], value: np.ndarray) -> None:
    """Encode and store each shard of the region (``starts`` + ``value.shape``), together."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    async_array = array._async_array
    meta, pipeline = async_array.metadata, async_array.codec_pipeline
    prototype = default_buffer_prototype()
    shard = meta.chunk_grid.chunk_shape
    per_dim = [range(0, n, s) for n, s in zip(value.shape, shard, strict=True)]

    async def one(offset: tuple[int, ...]) -> None:
        coords = tuple((a + o) // s for a, o, s in zip(starts, offset, shard, strict=True))
        part = value[tuple(slice(o, o + s) for o, s in zip(offset, shard, strict=True))]
        if part.shape != tuple(shard):  # cut by the array's edge: the rest is fill value
            padded = np.full(shard, meta.fill_value, dtype=value.dtype)
            padded[tuple(slice(0, n) for n in part.shape)] = part
            part = padded
        spec = meta.get_chunk_spec(coords, async_array.config, prototype)
        key = async_array.store_path / meta.encode_chunk_key(coords)
        if not spec.config.write_empty_chunks and bool(np.all(part == meta.fill_value)):
            await key.delete()  # as zarr does: no shard for fill values only
            return
        buffer = prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(part))
        (encoded,) = await pipeline.encode([(buffer, spec)])
        if encoded is None:
            await key.delete()
        else:
            await key.set(encoded)

    await asyncio.gather(*(one(offset) for offset in itertools.product(*per_dim)))
