"""Where a batch's float32 arrays are allocated: recycled here, shared memory in workers.

A batch of JUMP fields is ~150 MB of float32. A fresh ``np.empty`` of that size
is fresh pages: the kernel zeroes every page on first touch, which on the loader
benchmark cost ~40 % of the CPU that decoding the batch costs. Two allocators
avoid it:

- :class:`BufferPool` (the reading process is the training process): an array
  handed out before is handed out again once nothing holds it any more (no
  tensor, view or batch dict refers to it: its reference count says so), so the
  pages are warm;
- :func:`shared_empty` (in a ``DataLoader`` worker): the array lives in a torch
  shared-memory storage from the start, so that sending the batch to the main
  process copies nothing (torch would otherwise copy every tensor into shared
  memory first); :func:`as_tensor` returns that storage's tensor.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np
import torch

__all__ = ["BufferPool", "as_tensor", "shared_empty"]

POOL_ARRAYS = 4
"""Arrays a pool keeps (in use or free): the batches of a read-ahead queue and the consumer's."""
POOL_MIN_BYTES = 1 << 20
"""Smaller arrays are allocated afresh: recycling them saves nothing worth a lookup."""


class BufferPool:
    """``empty(shape, dtype)`` that hands out an earlier array again once nothing holds it.

    Thread-safe. Keeps at most :data:`POOL_ARRAYS` arrays; an array is free when
    the pool holds the only reference to it (a tensor made with
    ``torch.from_numpy``, a view or a slice of it all count as references).
    """

    def __init__(self, keep: int = POOL_ARRAYS) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return (BufferPool, (self.keep,))  # a copy in another process starts empty

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype, shape = np.dtype(dtype), tuple(int(n) for n in shape)
        if math.prod(shape) * dtype.itemsize < POOL_MIN_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            arrays = self._arrays
            for i in range(len(arrays)):
                # 2: the list's reference and getrefcount's argument; nobody else's
                unused = sys.getrefcount(arrays[i]) == 2
                if unused and arrays[i].shape == shape and arrays[i].dtype == dtype:
                    return arrays[i]
            out = np.empty(shape, dtype)
            arrays.append(out)
            if len(arrays) > self.keep:  # forget the oldest free one, else the oldest
                free = [i for i in range(len(arrays)) if sys.getrefcount(arrays[i]) == 2]
                del arrays[free[0] if free else 0]
            return out

    def clear(self) -> None:
        with self._lock:
            self._arrays = []


def shared_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised array in a torch shared-memory storage (see :func:`as_tensor`)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    storage = torch.UntypedStorage._new_shared(max(1, math.prod(shape)) * dtype.itemsize)
    kind = torch.from_numpy(np.empty(0, dtype)).dtype
    strides = [int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape))]
    return torch.empty(0, dtype=kind).set_(storage, 0, shape, strides).numpy()


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor: the shared-memory tensor it views (no copy), else ``from_numpy``."""
    base = array.base
    if (
        isinstance(base, torch.Tensor)
        and tuple(base.shape) == array.shape
        and base.data_ptr() == array.ctypes.data
        and base.is_contiguous()
        and array.flags.c_contiguous
    ):
        return base
    return torch.from_numpy(array)
