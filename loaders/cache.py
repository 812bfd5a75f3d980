"""Caches for the read path: decoded chunks in memory, raw bytes on local disk.

:class:`MemoryCache` keeps decoded inner chunks (numpy arrays) of one process in
an LRU bounded by bytes. :class:`DiskCache` keeps the raw (compressed) bytes of
objects and byte ranges read from storage in a directory that the processes of
one machine share; once full it admits nothing more, so that an epoch over a
dataset larger than the cache keeps hitting what it holds (see its notes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from cubes.errors import SchemaError

__all__ = ["CacheConfigError", "DiskCache", "MemoryCache"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_GB = 10.0
"""Size of the disk cache when ``CACHE_DIR`` is set without ``CACHE_GB``."""

ByteRange = tuple[int, int | None] | None
"""``None``: the whole object; ``(start, end)``: bytes ``start:end``; ``(-n, None)``: the last n."""

_MAGIC = b"CCD1"
_HEADER = struct.Struct("<4sQI")  # magic, payload length, crc32c of the payload
_USAGE = "usage"
_LOCK = ".lock"
_TMP = ".tmp-"


class CacheConfigError(SchemaError):
    """A cache setting (``CACHE_DIR``, ``CACHE_GB`` or an argument) that cannot be used."""


class MemoryCache:
    """In-process LRU of decoded chunks, bounded by the sum of their ``nbytes``.

    Thread-safe. Arrays larger than ``max_bytes`` are not cached. Cached arrays
    are made read-only, since every reader of the cache shares them. Pickles as an
    empty cache of the same size (each process keeps its own).

    Parameters
    ----------
    max_bytes
        Upper bound on the sum of ``nbytes`` of the cached arrays.

    Examples
    --------
    >>> cache = MemoryCache(2**30)
    >>> cache.put(("s3://b/p.zarr", "images", (0, 0, 1, 0, 0)), np.zeros((1, 1, 1, 4, 4)))
    True
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise CacheConfigError(f"MemoryCache max_bytes must be >= 0, not {max_bytes}.")
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return (MemoryCache, (self.max_bytes,))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held now (never above ``max_bytes``)."""
        return self._nbytes

    def get(self, key: Hashable) -> np.ndarray | None:
        """The array cached under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: np.ndarray) -> bool:
        """Cache ``value`` under ``key``, evicting the least recently used; False if too large."""
        size = int(value.nbytes)
        if size > self.max_bytes:
            return False
        value.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            while self._items and self._nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= evicted.nbytes
            self._items[key] = value
            self._nbytes += size
        return True

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0


class DiskCache:
    """Raw object bytes and byte ranges on local disk, shared by the processes of a machine.

    Entries are keyed by ``(url, key, byte range)``, hashed to a file name. Each
    file starts with a header (length and crc32c of the payload), so that a
    truncated or damaged file is detected on read, removed, and reported as a
    miss. Writes go to a temporary file renamed into place (``os.replace``), so
    readers never see half a file. The bytes held are accounted in a small file
    updated under an exclusive ``fcntl.flock``; room is reserved there before an
    entry is written, so the limit holds across processes and threads.

    Parameters
    ----------
    directory
        Where the entries live; created if needed. Must be on local disk (flock).
    max_bytes
        Upper bound on the bytes of all files (headers included).

    Notes
    -----
    **Once full, the cache admits nothing more; it never evicts.** Training reads
    every sample once per epoch in a new random order. With LRU eviction and a
    dataset larger than the cache, each entry is evicted before the next epoch
    comes back to it, so the hit rate falls towards 0 % once the dataset is
    about twice the cache. Keeping what was admitted first instead serves the
    cached fraction of every epoch: a dataset twice the cache keeps ~50 % hits.
    Cubes are immutable once complete; after re-ingesting a cube to the same URL,
    :meth:`clear` the cache (or use a new directory). The count errs on the safe
    side: a damaged entry frees only the bytes its file still held, and the room
    reserved by a process killed while writing stays reserved. Deleting the
    accounting file (``usage``) makes the next access recount the directory;
    :meth:`clear` empties everything.

    Examples
    --------
    >>> cache = DiskCache("/scratch/cellcubes", 50 * 10**9)  # doctest: +SKIP
    >>> cache = DiskCache.from_env()  # CACHE_DIR / CACHE_GB, or None  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes < 0:
            raise CacheConfigError(f"DiskCache max_bytes must be >= 0, not {max_bytes}.")
        self.directory = Path(directory).expanduser().absolute()
        self.max_bytes = int(max_bytes)
        _check_writable(self.directory)
        self._thread_lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        return (DiskCache, (str(self.directory), self.max_bytes))

    def __repr__(self) -> str:
        return f"DiskCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    @classmethod
    def from_env(
        cls, directory: str | os.PathLike[str] | None = None, gb: float | str | None = None
    ) -> DiskCache | None:
        """A cache from the arguments, else the environment; ``None`` when neither asks for one.

        Parameters
        ----------
        directory
            Cache directory; default ``$CACHE_DIR``, else (when only a size is
            given) ``$XDG_CACHE_HOME/cellcubes`` or ``~/.cache/cellcubes``.
        gb
            Size in GB (10**9 bytes); default ``$CACHE_GB``, else
            :data:`DEFAULT_CACHE_GB`.

        Raises
        ------
        CacheConfigError
            The size is not a positive number, or the directory cannot be written.
        """
        directory = directory or os.environ.get("CACHE_DIR") or None
        size = gb if gb is not None else (os.environ.get("CACHE_GB") or None)
        if directory is None and size is None:
            return None
        source = "gb" if gb is not None else "CACHE_GB"
        try:
            value = DEFAULT_CACHE_GB if size is None else float(size)
        except (TypeError, ValueError):
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise CacheConfigError(
                f"{source}={size!r} is not a size in GB for the disk cache; give a positive "
                "number such as CACHE_GB=50, or unset it for the default "
                f"({DEFAULT_CACHE_GB:g} GB)."
            )
        if directory is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
            directory = os.path.join(base, "cellcubes")
        return cls(directory, int(value * 10**9))

    # --- entries ------------------------------------------------------------------------

    def path(self, url: str, key: str, byte_range: ByteRange = None) -> Path:
        """The file that holds (or would hold) an entry."""
        text = f"{url}\n{key}\n{'' if byte_range is None else tuple(byte_range)}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest[2:40]}.bin"

    def get(self, url: str, key: str, byte_range: ByteRange = None) -> memoryview | None:
        """The cached bytes, or ``None`` (absent, or damaged and now removed)."""
        path = self.path(url, key, byte_range)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        payload = _unpack(data)
        if payload is None:
            logger.warning("Removing the damaged disk cache entry %s (%s of %s)", path, key, url)
            self._remove(path, len(data))
        return payload

    def put(self, url: str, key: str, byte_range: ByteRange, data: Any) -> bool:
        """Store ``data`` (bytes-like) unless the cache is full; True if it is now cached."""
        path = self.path(url, key, byte_range)
        if path.exists():
            return True
        payload = np.frombuffer(data, dtype=np.uint8)
        size = _HEADER.size + payload.nbytes
        if not self._reserve(size):
            return False
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f"{_TMP}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, payload.nbytes, google_crc32c.value(payload)))
                f.write(payload.data)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("Could not write the disk cache entry %s: %s", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._adjust(-size)
            return False
        return True

    @property
    def nbytes(self) -> int:
        """Bytes accounted for now, across processes (never above ``max_bytes``)."""
        with self._locked() as usage:
            return usage[0]

    def clear(self) -> None:
        """Remove every entry; meant for when no other process is using the cache."""
        with self._locked() as usage:
            for sub in self.directory.iterdir():
                if sub.is_dir():
                    for file in sub.iterdir():
                        with contextlib.suppress(FileNotFoundError):
                            file.unlink()
            usage[0] = 0

    # --- accounting ---------------------------------------------------------------------

    def _reserve(self, size: int) -> bool:
        with self._locked() as usage:
            if usage[0] + size > self.max_bytes:
                return False
            usage[0] += size
            return True

    def _adjust(self, delta: int) -> None:
        with self._locked() as usage:
            usage[0] = max(0, usage[0] + delta)

    def _remove(self, path: Path, size: int) -> None:
        with self._locked() as usage:
            try:
                path.unlink()
            except FileNotFoundError:
                return  # someone else removed it, and accounted for it
            usage[0] = max(0, usage[0] - size)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[int]]:
        """The byte count as a one-item list, under the cross-process lock; written back on exit."""
        with (
            self._thread_lock,
            open(self.directory / _LOCK, "a+b") as lock,
        ):
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                before = self._read_usage()
                usage = [before]
                yield usage
                if usage[0] != before:
                    (self.directory / _USAGE).write_text(str(usage[0]))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_usage(self) -> int:
        try:
            return int((self.directory / _USAGE).read_text())
        except (FileNotFoundError, ValueError):
            total = self._scan()
            (self.directory / _USAGE).write_text(str(total))
            return total

    def _scan(self) -> int:
        total = 0
        for sub in self.directory.iterdir():
            if sub.is_dir():
                for file in sub.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        total += file.stat().st_size
        return total


def _unpack(data: bytes) -> memoryview | None:
    if len(data) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data)
    payload = memoryview(data)[_HEADER.size :]
    if magic != _MAGIC or length != len(payload):
        return None
    if google_crc32c.value(np.frombuffer(payload, dtype=np.uint8)) != crc:
        return None
    return payload


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CacheConfigError(
            f"The disk cache directory {directory} cannot be written ({exc.strerror or exc}). "
            "Point CACHE_DIR (or the directory argument) at a writable local directory, or "
            "unset CACHE_DIR to read without a disk cache."
        ) from exc
