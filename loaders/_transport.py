"""How batches cross from ``DataLoader`` workers to the training process, cheaply.

A worker's batch reaches the main process through shared memory. Left to
torch, every float32 batch is copied into a fresh shared-memory segment, whose
pages the kernel allocates and zeroes one by one: on the loader benchmark that
cost more than reading and decoding the batch (2 workers delivered about half
of what the 0-worker loader does). :class:`StoredBatches` avoids both costs:

- a worker reads the batch *as stored* (a plate's uint16: half the bytes of
  float32), neither cast nor normalised, into a slot of a small ring of
  shared-memory arrays that it allocates once and then reuses
  (:class:`SlotRing`);
- the main process casts it into a recycled float32 array, normalises it and
  fills NaN (:func:`finish`), before it asks the ``DataLoader`` for another
  batch.

Reuse is safe because a ``DataLoader`` hands a worker a new index only after the
main process took a batch, and keeps at most ``prefetch_factor * num_workers``
indices outstanding: a worker's batch ``m`` can only be sent once the batches
issued more than ``prefetch * workers + 1`` indices before it are consumed, and
so finished. A ring of ``prefetch * workers + 2`` slots per shape is never
overwritten while the main process still reads it.

Datasets with a ``transform`` or CLAHE run them in the workers (that is what
workers are for), so their batches travel as float32, as before.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from loaders._batch import _normalize
from loaders._buffers import shared_empty

if TYPE_CHECKING:
    from loaders.dataset import CubeBatchDataset

__all__ = ["SlotRing", "StoredBatches", "finish", "stored_dtype"]

STORED_KEY = "_stored"
"""Marks a batch whose arrays are as stored and still need :func:`finish`."""


def stored_dtype(dataset: CubeBatchDataset) -> np.dtype:
    """The dtype the batch arrays travel in: the variables' common integer dtype of at most
    2 bytes (plates' uint16), else float32 (nothing to gain)."""
    dtypes = []
    for k, cube in enumerate(dataset._cubes):
        for vr in cube.reads:
            if cube.data is not None:
                dtypes.append(cube.data[vr.variable].dtype)
            else:
                dtypes.append(dataset._local.reader(dataset, k, vr.variable).dtype)
    common = np.result_type(*dtypes)
    if common.kind in "ui" and common.itemsize <= 2:
        return common
    return np.dtype(np.float32)


class SlotRing:
    """``empty(shape, dtype)``: the next of ``slots`` shared-memory arrays of that shape.

    The dtype asked for is replaced by ``dtype`` (the one the batch travels in).
    """

    def __init__(self, slots: int, dtype: np.dtype) -> None:
        self.slots, self.dtype = slots, dtype
        self._rings: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._next: dict[tuple[int, ...], int] = {}

    def empty(self, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        shape = tuple(int(n) for n in shape)
        ring = self._rings.setdefault(shape, [])
        i = self._next.get(shape, 0)
        self._next[shape] = (i + 1) % self.slots
        if i == len(ring):
            ring.append(shared_empty(shape, self.dtype))
        return ring[i]


class StoredBatches(torch.utils.data.Dataset):
    """The dataset as workers serve it: batches as stored, in a :class:`SlotRing` per process."""

    def __init__(self, dataset: CubeBatchDataset, slots: int) -> None:
        self.dataset, self.slots = dataset, slots
        self._ring: SlotRing | None = None
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _ring=None)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        if self._ring is None or self._pid != os.getpid():
            self._ring = SlotRing(self.slots, stored_dtype(self.dataset))
            self._pid = os.getpid()
        batch = self.dataset.read_item(index, stored=self._ring.empty)
        batch[STORED_KEY] = True
        return batch


def _cast(out: np.ndarray, stored: np.ndarray, i: int) -> None:
    np.copyto(out[i], stored[i], casting="unsafe")


def finish(dataset: CubeBatchDataset, batch: dict[str, Any]) -> dict[str, Any]:
    """A batch from :class:`StoredBatches` as ``dataset[index]`` gives it: float32 arrays
    (recycled, in this process), normalised, NaN filled. Other batches are returned as is."""
    if not batch.pop(STORED_KEY, False):
        return batch
    cube_of = batch["cube"].numpy()
    timed = dataset.space.windows is not None
    pool = dataset._local.pool(dataset.threads)
    for key, targets in (("inputs", False), ("targets", True)):
        if key not in batch:
            continue
        stored = batch[key].numpy()
        out = dataset._local.empty(stored.shape, np.float32)
        # one cast per sample, in the read threads (outside the GIL)
        list(pool.map(functools.partial(_cast, out, stored), range(len(out))))
        mode = dataset._normalize
        if mode == "all" or (mode == "inputs" and not targets):
            _normalize(out, cube_of, dataset._cubes, targets=targets, timed=timed)
        if dataset.fill_nan is not None:
            np.nan_to_num(out, copy=False, nan=dataset.fill_nan, posinf=np.inf, neginf=-np.inf)
        batch[key] = torch.from_numpy(out)
    return batch
