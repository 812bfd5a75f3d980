"""What each process opens for itself: readers, caches, counters, a thread pool, batch buffers."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from loaders._buffers import BufferPool, shared_empty
from loaders.cache import MemoryCache
from loaders.reader import CubeReader, ReadStats

if TYPE_CHECKING:
    from loaders.dataset import CubeBatchDataset

__all__ = ["ProcessLocal"]


class ProcessLocal:
    """Readers, caches, counters, the thread pool and the batch buffers of one process.

    Rebuilt after fork or pickling.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._readers: dict[tuple[int, str], CubeReader] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._memory: MemoryCache | None = None
        self._buffers = BufferPool()
        self.stats = ReadStats()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (ProcessLocal, ())  # a worker starts with nothing open

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: nothing of the parent's is usable
            self.__init__()  # type: ignore[misc]

    def pool(self, threads: int) -> ThreadPoolExecutor:
        self._check_pid()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="cube-read")
            return self._pool

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A batch array: in shared memory in a DataLoader worker, else from the pool."""
        if torch.utils.data.get_worker_info() is not None:
            return shared_empty(shape, dtype)
        self._check_pid()
        return self._buffers.empty(shape, dtype)

    def reader(self, ds: CubeBatchDataset, k: int, variable: str) -> CubeReader:
        self._check_pid()
        with self._lock:
            if (k, variable) not in self._readers:
                if self._memory is None and ds.memory_cache_mb > 0:
                    self._memory = MemoryCache(int(ds.memory_cache_mb * 2**20))
                cube = ds._cubes[k]
                self._readers[k, variable] = CubeReader(
                    cube.url or "",
                    cube.storage_options,
                    variable,
                    backend=ds.backend,
                    disk_cache=ds.disk_cache,
                    memory_cache=self._memory,
                    stats=self.stats,
                )
            return self._readers[k, variable]

    def close(self) -> None:
        """Stop the thread pools (the readers' too); what is used again is made anew."""
        with self._lock:
            pools = [self._pool] + [r.close_pool() for r in self._readers.values()]
            self._pool, self._readers = None, {}
            self._buffers.clear()
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
