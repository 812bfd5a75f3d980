"""Chunk-aligned reads of a cube array at storage speed: :class:`CubeReader`.

A read is an orthogonal selection of one array (an int, a slice or positions
per dim; :meth:`CubeReader.read_many` takes a batch of them). The reader maps it to
the inner chunks it touches, takes what it can from the caches, and reads the
rest with as few requests as the layout allows:

- most of a shard's chunks needed (:data:`WHOLE_SHARD_FRACTION`): one GET of the
  whole shard object, whose index is parsed from its tail;
- a few chunks (a channel subset, a small window): the shard index (one suffix
  range request, then kept in a small per-reader dict), then one ranged GET per
  run of needed chunks (runs closer than ``coalesce_bytes`` merged), concurrently;
- unsharded arrays: one GET per chunk object, concurrently.

A read that spans several objects fetches them concurrently (:data:`IO_THREADS`).

Each chunk is decoded once (Blosc, Zstd and gzip release the GIL, so the
callers' threads decode in parallel) and the window is sliced from it. Missing
objects and empty index entries read as the fill value. Layouts and codecs not
decoded here are read through zarr (``array.oindex``), said in a debug log.

Storage is reached through obstore or fsspec: see :data:`DEFAULT_BACKEND` and
:data:`BACKEND_ENV`. In :class:`ReadStats`, ``requests`` counts requests sent to
storage (each coalesced range is one); opening the array's metadata is not counted.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cubes.errors import SchemaError, SourceNotFoundError
from cubes.store import resolve_storage_options, storage_errors, zarr_store
from loaders._buffers import BufferPool
from loaders._codecs import native_dtype
from loaders._selection import Piece, Sel, assign, dim_parts, fill, normalize, piece_of
from loaders._shards import MISSING, Index, ShardLayout, coalesce, entry
from loaders._stats import STAT_KEYS as STAT_KEYS  # re-exported: it was defined here
from loaders._stats import ReadStats
from loaders.storage import (
    BACKEND_ENV,
    DEFAULT_BACKEND,
    Buffer,
    FsspecStorage,
    ObstoreStorage,
    Storage,
    choose_backend,
)

if TYPE_CHECKING:
    from loaders.cache import DiskCache, MemoryCache

__all__ = ["BACKEND_ENV", "DEFAULT_BACKEND", "CubeReader", "ReadStats"]

logger = logging.getLogger(__name__)

COALESCE_BYTES = 256 * 1024
"""Needed byte ranges of one object closer than this are read as one request."""
WHOLE_SHARD_FRACTION = 0.5
"""Read the whole shard in one GET when at least this fraction of its chunks is needed."""
INDEX_ENTRIES = 4096
"""Shard indexes kept per reader (a plate's index of 8 chunks is 132 bytes)."""
IO_THREADS = 8
"""Objects fetched concurrently by one read that spans several objects."""
PARALLEL_DECODE_BYTES = 4 * 2**20
"""A read decodes its chunks in parallel from this many compressed bytes (and 4 chunks) on:
below, handing chunks to threads costs more than decoding them in the caller's thread."""
OUTPUT_ARRAYS = 8
"""Output arrays a reader recycles (:class:`~loaders._buffers.BufferPool`): warm pages."""
_DECODED = object()  # a chunk decoded straight into its place in the output


class CubeReader:
    """Reads selections of one cube array; thread-safe; one per cube and variable per process.

    Parameters
    ----------
    url
        The cube (a Zarr v3 group): local path, ``file://`` or ``s3://`` URL.
    storage_options
        fsspec-style options (``endpoint_url``, ``anon``, ``key``/``secret`` …),
        completed by :func:`cubes.store.resolve_storage_options`.
    variable
        The array to read.
    backend
        ``"obstore"``, ``"fsspec"`` or ``"auto"``: ``$CELLCUBES_READ_BACKEND`` if
        set, else :data:`DEFAULT_BACKEND` where it can serve the URL and options,
        else fsspec.
    disk_cache, memory_cache
        Optional caches of raw bytes and of decoded chunks.
    stats
        Counters to add to (default: a new :class:`ReadStats`, as ``.stats``).

    Attributes
    ----------
    shape, dtype, fill_value
        Of the array. ``backend`` names the backend in use.

    Raises
    ------
    SourceNotFoundError
        No array ``variable`` at ``url``.
    SchemaError
        An unknown backend, or options that the requested backend cannot use.

    Examples
    --------
    >>> reader = CubeReader("s3://bkt/plate.zarr")  # doctest: +SKIP
    >>> reader.read(0, 1, np.array([0, 4]), slice(0, 256), slice(0, 256)).shape  # doctest: +SKIP
    (2, 256, 256)
    """

    coalesce_bytes = COALESCE_BYTES
    whole_shard_fraction = WHOLE_SHARD_FRACTION

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        variable: str = "images",
        *,
        backend: str = "auto",
        disk_cache: DiskCache | None = None,
        memory_cache: MemoryCache | None = None,
        stats: ReadStats | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.variable = variable.strip("/")
        self._options = resolve_storage_options(self.url, storage_options)
        self.backend = choose_backend(self.url, self._options, backend)
        self._storage: Storage = (
            ObstoreStorage(self.url, self._options)
            if self.backend == "obstore"
            else FsspecStorage(self.url, self._options)
        )
        self.disk_cache, self.memory_cache = disk_cache, memory_cache
        self.stats = stats if stats is not None else ReadStats()
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, Index] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._buffers = BufferPool(OUTPUT_ARRAYS)
        self._zarr_array: Any = None
        meta = self._open_metadata()
        if meta is None:  # not Zarr v3: zarr reads it
            self._layout, reason = None, "not a Zarr v3 array"
            array = self._zarr()
            self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
            fill = array.fill_value
        else:
            self._layout, reason = ShardLayout.build(meta)
            self.shape, self.dtype = tuple(int(n) for n in meta.shape), native_dtype(meta)
            fill = meta.fill_value
        self.fill_value = np.asarray(fill, dtype=self.dtype)[()]
        if self._layout is None:
            logger.debug("Reading %s/%s through zarr: %s", self.url, self.variable, reason)
        logger.debug("CubeReader(%s/%s): backend %s", self.url, self.variable, self.backend)

    def __repr__(self) -> str:
        return f"CubeReader({self.url!r}, variable={self.variable!r}, backend={self.backend!r})"

    # --- public reads -------------------------------------------------------------------

    def read(self, well: int, field: int, channels: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
        """A plate's pixels ``(len(channels), y, x)`` of one field's window (5-D arrays).

        ``channels`` are positions along the channel dim, in any order, repeats allowed.
        """
        if len(self.shape) != 5:
            raise SchemaError(
                f"{self.url}/{self.variable} has {len(self.shape)} dims; read() needs "
                "(well, field, channel, y, x). Use read_orthogonal() for other arrays."
            )
        return self.read_orthogonal((well, field, np.asarray(channels), ys, xs))

    def read_orthogonal(self, selection: Sequence[Any]) -> np.ndarray:
        """The array's orthogonal selection, as ``array.oindex[selection]`` would give it.

        One item per dim: an int (the dim is dropped), a slice, or integer positions.
        """
        return self.read_many([selection])[0]

    def read_many(self, selections: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """Several orthogonal selections at once: each chunk fetched and decoded once.

        The selections of a batch of windows overlap (consecutive time windows
        share steps; patches of one field share its chunks): their chunks are
        collected, taken from the memory cache or fetched together (one job per
        storage object, concurrently), decoded once each, and copied into
        every output that needs them. Returns one array per selection, as
        :meth:`read_orthogonal` gives it.
        """
        where = f"{self.url}/{self.variable}"
        all_dims = [normalize(selection, self.shape, where) for selection in selections]
        if self._layout is None:
            return [self._read_with_zarr(dims) for dims in all_dims]
        shapes = [tuple(len(idx) for idx, _ in dims) for dims in all_dims]
        outs = [self._buffers.empty(shape, self.dtype) for shape in shapes]
        needed: dict[tuple[int, ...], list[tuple[int, Piece]]] = {}
        for i, dims in enumerate(all_dims):
            for parts in itertools.product(*self._dim_parts(dims)):
                piece = piece_of(parts)
                needed.setdefault(piece[0], []).append((i, piece))
        chunks = self._chunks(list(needed), self._destinations(needed, outs))
        for coords, users in needed.items():
            chunk = chunks[coords]
            if chunk is _DECODED:
                continue
            for i, (_, out_sel, local) in users:
                if chunk is None:
                    fill(outs[i], out_sel, self.fill_value)
                else:
                    assign(outs[i], out_sel, chunk, local)
        return [
            out[tuple(0 if squeeze else slice(None) for _, squeeze in dims)]
            for out, dims in zip(outs, all_dims, strict=True)
        ]

    def _destinations(
        self, needed: dict[tuple[int, ...], list[tuple[int, Piece]]], outs: list[np.ndarray]
    ) -> dict[tuple[int, ...], np.ndarray]:
        """Where a chunk can be decoded in place: the output region it fills alone, whole."""
        if self.memory_cache is not None or not self._fast.decodes_into:
            return {}
        chunk_shape = self._fast.chunks
        out: dict[tuple[int, ...], np.ndarray] = {}
        for coords, users in needed.items():
            if len(users) != 1:
                continue
            i, (_, out_sel, local) = users[0]
            whole = all(
                isinstance(s, slice) and s.start == 0 and s.stop == n
                for s, n in zip(local, chunk_shape, strict=True)
            )
            if whole and all(isinstance(s, slice) for s in out_sel):
                region = outs[i][out_sel]
                if region.flags.c_contiguous:
                    out[coords] = region
        return out

    def _chunks(
        self,
        coords: list[tuple[int, ...]],
        destinations: dict[tuple[int, ...], np.ndarray] | None = None,
    ) -> dict[tuple[int, ...], Any]:
        """Decoded chunks (``None``: not stored) from the memory cache, else fetched and decoded;
        a chunk with a destination is decoded there (:data:`_DECODED`)."""
        found: dict[tuple[int, ...], np.ndarray | None] = {}
        todo = []
        cache = self.memory_cache
        for c in coords:
            chunk = None if cache is None else cache.get(self._memory_key(c))
            if chunk is None:
                todo.append(c)
            else:
                found[c] = chunk
        if self.memory_cache is not None:
            self.stats.add(memory_hits=len(coords) - len(todo), memory_misses=len(todo))
        if not todo:
            return found
        start = time.perf_counter()
        with storage_errors(self.url, self._options):
            raw = self._fetch([(c, (), ()) for c in todo])
        fetched = time.perf_counter()

        def decode(c: tuple[int, ...]) -> Any:
            buf = raw[c]
            if buf is None:
                return None
            where = f"{self.url}/{self.variable} chunk {c}"
            if destinations and c in destinations:
                self._fast.decode_into(buf, destinations[c], where)
                return _DECODED
            chunk = self._fast.decode(buf, where)
            if self.memory_cache is not None:
                self.memory_cache.put(self._memory_key(c), chunk)
            return chunk

        size = sum(memoryview(b).nbytes for b in (raw[c] for c in todo) if b is not None)
        if len(todo) >= 4 and size >= PARALLEL_DECODE_BYTES:  # codecs release the GIL
            found.update(zip(todo, self._executor().map(decode, todo), strict=True))
        else:
            found.update((c, decode(c)) for c in todo)
        self.stats.add(read_seconds=fetched - start, decode_seconds=time.perf_counter() - fetched)
        return found

    # --- planning -----------------------------------------------------------------------

    @property
    def _fast(self) -> ShardLayout:
        """The layout; the fast path runs only when there is one."""
        return cast(ShardLayout, self._layout)

    def _dim_parts(self, dims: list[tuple[np.ndarray, bool]]) -> list[list[tuple[int, Sel, Sel]]]:
        return [dim_parts(idx, n) for (idx, _), n in zip(dims, self._fast.chunks, strict=True)]

    def _memory_key(self, coords: tuple[int, ...]) -> tuple[str, str, tuple[int, ...]]:
        return (self.url, self.variable, coords)

    def _fetch(self, todo: list[Piece]) -> dict[tuple[int, ...], Buffer | None]:
        """Raw bytes of each piece's chunk (``None``: fill), one job per storage object."""
        layout = self._fast
        jobs: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for coords, _, _ in todo:
            jobs.setdefault(layout.object_of(coords), []).append(coords)
        fetch = self._fetch_shard if layout.sharded else self._fetch_chunk
        if len(jobs) == 1:
            results = [fetch(*next(iter(jobs.items())))]
        else:
            results = list(self._executor().map(lambda job: fetch(*job), jobs.items()))
        return {k: v for result in results for k, v in result.items()}

    def _fetch_chunk(
        self, obj: tuple[int, ...], wanted: list[tuple[int, ...]]
    ) -> dict[tuple[int, ...], Buffer | None]:
        key = self._key(obj)
        data = self._disk_get(key, None)
        if data is None:
            data = self._get(key)
            if data is not None:
                self._disk_put(key, None, data)
        return dict.fromkeys(wanted, data)

    def _fetch_shard(
        self, obj: tuple[int, ...], wanted: list[tuple[int, ...]]
    ) -> dict[tuple[int, ...], Buffer | None]:
        """Most of a shard: the whole object, one GET. A few chunks: index, then ranges."""
        layout = self._fast
        key = self._key(obj)
        with self._lock:
            if self._indexes.get(key) is MISSING:
                return dict.fromkeys(wanted)
        most = len(wanted) >= self.whole_shard_fraction * layout.chunks_per_shard_count
        whole = self._disk_get(key, None, count_miss=most)
        if whole is None and most:
            whole = self._get(key)
            if whole is None:
                self._remember(key, MISSING)
                return dict.fromkeys(wanted)
            self._disk_put(key, None, whole)
        if whole is not None:  # a whole shard cached earlier serves subsets too
            index = self._remember(key, layout.index_of_shard(whole, self._where(key)))
            view = memoryview(whole)
            return {
                c: None if (r := entry(index, layout.local(c))) is None else view[r[0] : r[1]]
                for c in wanted
            }
        known = self._known_index(key)
        index = known if known is not None else self._fetch_index(key)
        if index is MISSING:
            return dict.fromkeys(wanted)
        return self._fetch_ranges(key, {c: entry(index, layout.local(c)) for c in wanted})

    def _fetch_ranges(
        self, key: str, ranges: dict[tuple[int, ...], tuple[int, int] | None]
    ) -> dict[tuple[int, ...], Buffer | None]:
        out: dict[tuple[int, ...], Buffer | None] = {}
        need: dict[tuple[int, ...], tuple[int, int]] = {}
        for coords, byte_range in ranges.items():
            cached = None if byte_range is None else self._disk_get(key, byte_range)
            out[coords] = cached
            if byte_range is not None and cached is None:
                need[coords] = byte_range
        if not need:
            return out
        spans = coalesce(sorted(set(need.values())), self.coalesce_bytes)
        bufs = self._get_ranges(key, spans)
        if bufs is None:  # the object went away after its index was read
            return dict.fromkeys(ranges)
        for coords, (start, end) in need.items():
            k = next(i for i, (s, e) in enumerate(spans) if s <= start and end <= e)
            out[coords] = memoryview(bufs[k])[start - spans[k][0] : end - spans[k][0]]
            self._disk_put(key, (start, end), out[coords])
        return out

    # --- shard indexes ------------------------------------------------------------------

    def _known_index(self, key: str) -> Index | None:
        with self._lock:
            index = self._indexes.get(key)
            if index is not None:
                self._indexes.move_to_end(key)
                return index
        layout = self._fast
        data = self._disk_get(key, layout.index_range, count_miss=False)
        if data is None:
            return None
        return self._remember(key, layout.parse_index(data, self._where(key)))

    def _fetch_index(self, key: str) -> Index:
        layout = self._fast
        data = self._get(key, layout.index_range)
        self.stats.add(disk_misses=int(self.disk_cache is not None))
        if data is None:
            return self._remember(key, MISSING)
        self._disk_put(key, layout.index_range, data)
        return self._remember(key, layout.parse_index(data, self._where(key)))

    def _remember(self, key: str, index: Index) -> Index:
        with self._lock:
            self._indexes[key] = index
            while len(self._indexes) > INDEX_ENTRIES:
                self._indexes.popitem(last=False)
        return index

    # --- storage and disk cache ---------------------------------------------------------

    def _key(self, obj: tuple[int, ...]) -> str:
        return f"{self.variable}/{self._fast.encode_key(obj)}"

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _get(self, key: str, byte_range: tuple[int, int | None] | None = None) -> Buffer | None:
        data = self._storage.get(key, byte_range)
        self.stats.add(requests=1, bytes=0 if data is None else memoryview(data).nbytes)
        return data

    def _get_ranges(self, key: str, spans: list[tuple[int, int]]) -> list[Buffer] | None:
        bufs = self._storage.get_ranges(key, spans)
        size = 0 if bufs is None else sum(memoryview(b).nbytes for b in bufs)
        self.stats.add(requests=len(spans), bytes=size)
        return bufs

    def _disk_get(
        self, key: str, byte_range: tuple[int, int | None] | None, *, count_miss: bool = True
    ) -> Buffer | None:
        if self.disk_cache is None:
            return None
        data = self.disk_cache.get(self.url, key, byte_range)
        if data is not None:
            self.stats.add(disk_hits=1)
        elif count_miss:
            self.stats.add(disk_misses=1)
        return data

    def _disk_put(self, key: str, byte_range: tuple[int, int | None] | None, data: Buffer) -> None:
        if self.disk_cache is not None:
            self.disk_cache.put(self.url, key, byte_range, data)

    def close_pool(self) -> ThreadPoolExecutor | None:
        """Detach the reader's I/O thread pool (to shut it down); a later read makes a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
            return pool

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="cube-io")
            return self._pool

    # --- metadata and the zarr fallback -------------------------------------------------

    def _open_metadata(self) -> Any:
        """The array's v3 metadata, or None for a v2 array (read through zarr)."""
        from zarr.core.metadata.v3 import ArrayV3Metadata

        key = f"{self.variable}/zarr.json"
        with storage_errors(self.url, self._options):
            raw = self._storage.get(key, None)
        if raw is None:
            return None
        document = json.loads(bytes(raw))
        if document.get("node_type") != "array":
            raise SourceNotFoundError(
                f"{self.url}/{self.variable} is a Zarr {document.get('node_type')}, not an "
                "array. Check the variable name (the plate's pixels are 'images')."
            )
        return ArrayV3Metadata.from_dict(document)

    def _zarr(self) -> Any:
        import zarr

        if self._zarr_array is None:
            store = zarr_store(self.url, self._options, read_only=True)
            try:
                with storage_errors(self.url, self._options):
                    array = zarr.open_array(store, path=self.variable, mode="r")
            except FileNotFoundError as exc:
                raise SourceNotFoundError(
                    f"No array '{self.variable}' in the cube at {self.url}. Check the URL and "
                    "the variable name, or write the cube with 'python -m ingest'."
                ) from exc
            self._zarr_array = array
        return self._zarr_array

    def _read_with_zarr(self, dims: list[tuple[np.ndarray, bool]]) -> np.ndarray:
        selection, inverse = [], []
        for idx, _ in dims:
            unique, inv = np.unique(idx, return_inverse=True)
            selection.append(unique)
            inverse.append(inv)
        start = time.perf_counter()
        with storage_errors(self.url, self._options):
            data = np.asarray(self._zarr().oindex[tuple(selection)])
        self.stats.add(read_seconds=time.perf_counter() - start)
        data = data[np.ix_(*inverse)] if data.size else data.reshape([len(i) for i in inverse])
        return data[tuple(0 if squeeze else slice(None) for _, squeeze in dims)]
