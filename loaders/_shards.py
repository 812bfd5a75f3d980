"""Where a chunk's bytes lie in storage, and how to decode them: :class:`ShardLayout`.

The fast read path of :mod:`loaders.reader` needs, of a Zarr v3 array's
metadata, the chunk grid, the object keys, the codec pipeline and, for sharded
arrays, the shard index. This module holds that (:class:`ShardLayout`), the shard
index entries (:func:`entry`) and the merging of nearby byte ranges into one
request (:func:`coalesce`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from cubes.errors import StorageError
from loaders._codecs import byteorder, crc32c, decoder, native_dtype, strip_crc32c
from loaders.storage import Buffer

__all__ = ["EMPTY", "MISSING", "Index", "ShardLayout", "coalesce", "entry"]

EMPTY = np.uint64(2**64 - 1)
"""Offset and length of an empty shard index entry (the chunk reads as the fill value)."""
MISSING = np.empty(0, dtype=np.uint64)  # index of a shard object that does not exist
Index = np.ndarray  # (*chunks_per_shard, 2) uint64 offsets and lengths; MISSING: no object


class ShardLayout:
    """What the fast path needs of an array's metadata: grid, keys, codecs, shard index."""

    def __init__(self, meta: Any, inner: Any, codecs: Sequence[Any], sharding: Any) -> None:
        self.chunks: tuple[int, ...] = tuple(inner)
        self.sharded = sharding is not None
        outer = tuple(meta.chunk_grid.chunk_shape)
        self.per_shard = tuple(o // i for o, i in zip(outer, self.chunks, strict=True))
        self.chunks_per_shard_count = int(np.prod(self.per_shard))
        self.encode_key: Callable[[tuple[int, ...]], str] = meta.chunk_key_encoding.encode_chunk_key
        self._steps = [cast(Callable[[Buffer], Buffer], decoder(c)) for c in reversed(codecs[1:])]
        # Without a decompressor the chunk is a view of the object read: copied before caching.
        self._copy = all(step is strip_crc32c for step in self._steps)
        dtype = native_dtype(meta)
        self._dtype = dtype.newbyteorder(byteorder(codecs[0]))
        self._native = dtype
        self._count = int(np.prod(self.chunks))
        # Blosc last (and native byte order): decompressed straight into an output array.
        self.decodes_into = bool(self._steps) and self._steps[-1] is _blosc_decompress()
        self.decodes_into &= self._dtype == self._native
        if sharding is not None:
            index_codecs = sharding.index_codecs
            self._index_dtype = np.dtype("u8").newbyteorder(byteorder(index_codecs[0]))
            self._index_crc = len(index_codecs) == 2
            size = 16 * self.chunks_per_shard_count + 4 * self._index_crc
            at_end = sharding.index_location.value == "end"
            self.index_range: tuple[int, int | None] = (-size, None) if at_end else (0, size)

    @classmethod
    def build(cls, meta: Any) -> tuple[ShardLayout | None, str]:
        """The layout, or None and why the fast path cannot read this array."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        if getattr(meta, "storage_transformers", ()):
            return None, "storage transformers"
        if type(meta.chunk_grid).__name__ != "RegularChunkGrid":
            return None, f"chunk grid {type(meta.chunk_grid).__name__}"
        if native_dtype(meta).kind not in "biuf":
            return None, f"data type {meta.data_type}"
        codecs, sharding, inner = list(meta.codecs), None, meta.chunk_grid.chunk_shape
        if isinstance(codecs[0], ShardingCodec):
            if len(codecs) != 1:
                return None, "codecs after sharding_indexed"
            sharding, codecs, inner = codecs[0], list(codecs[0].codecs), codecs[0].chunk_shape
            index = list(sharding.index_codecs)
            if not isinstance(index[0], BytesCodec) or not (
                len(index) == 1 or (len(index) == 2 and isinstance(index[1], Crc32cCodec))
            ):
                return None, f"shard index codecs {index}"
        if not isinstance(codecs[0], BytesCodec):
            return None, f"array codec {codecs[0]}"
        unsupported = [c for c in codecs[1:] if decoder(c) is None]
        if unsupported:
            return None, f"codecs {unsupported}"
        return cls(meta, inner, codecs, sharding), ""

    def object_of(self, coords: tuple[int, ...]) -> tuple[int, ...]:
        if not self.sharded:
            return coords
        return tuple(c // n for c, n in zip(coords, self.per_shard, strict=True))

    def local(self, coords: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(c % n for c, n in zip(coords, self.per_shard, strict=True))

    def decode(self, buf: Buffer, where: str) -> np.ndarray:
        for step in self._steps:
            buf = step(buf)
        flat = np.frombuffer(buf, dtype=self._dtype)
        if flat.size != self._count:
            raise StorageError(
                f"{where} decodes to {flat.size} values; expected {self._count} "
                f"{self.chunks}. The object is damaged: re-ingest the cube."
            )
        chunk = flat.reshape(self.chunks)
        if self._dtype != self._native:
            return chunk.astype(self._native)
        return chunk.copy() if self._copy else chunk

    def decode_into(self, buf: Buffer, dest: np.ndarray, where: str) -> None:
        """Decode a chunk into ``dest`` (C-contiguous, the chunk's shape); needs
        :attr:`decodes_into`."""
        from numcodecs import blosc

        for step in self._steps[:-1]:
            buf = step(buf)
        header = memoryview(buf).cast("B")
        size = int.from_bytes(header[4:8], "little") if len(header) >= 16 else -1
        if size != dest.nbytes:
            raise StorageError(
                f"{where} decodes to {size} bytes; expected {dest.nbytes} "
                f"{self.chunks}. The object is damaged: re-ingest the cube."
            )
        blosc.decompress(buf, dest)

    def parse_index(self, data: Buffer, where: str) -> Index:
        raw = np.frombuffer(data, dtype=np.uint8)
        if self._index_crc:
            raw, stored = raw[:-4], int(np.frombuffer(raw[-4:], dtype="<u4")[0])
            if crc32c(raw) != stored:
                raise StorageError(
                    f"The shard index of {where} fails its crc32c check: the shard is damaged "
                    "or was being rewritten. Re-ingest the cube."
                )
        return np.frombuffer(raw, dtype=self._index_dtype).reshape((*self.per_shard, 2))

    def index_of_shard(self, shard: Buffer, where: str) -> Index:
        view = memoryview(shard)
        start, end = self.index_range
        size = -start if end is None else end
        return self.parse_index(view[-size:] if end is None else view[:size], where)


def _blosc_decompress() -> Any:
    from numcodecs import blosc

    return blosc.decompress


def entry(index: Index, local: tuple[int, ...]) -> tuple[int, int] | None:
    """The byte range ``(start, end)`` of a chunk in its shard, or None if it is empty."""
    offset, length = index[local]
    if offset == EMPTY and length == EMPTY:
        return None
    return int(offset), int(offset + length)


def coalesce(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Sorted byte ranges merged where they overlap or lie at most ``gap`` apart."""
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
