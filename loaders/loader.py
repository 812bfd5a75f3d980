"""``CubeLoader``: a resumable torch ``DataLoader`` over a :class:`CubeBatchDataset`.

The state (epoch, next batch) lives here, in the main process, in the sampler
that hands ``(epoch, batch)`` indices to the workers; workers hold copies of
the dataset that never need to change. Reads and transforms happen where
``dataset[(epoch, i)]`` runs: in the workers, or with ``num_workers=0`` in a
background thread that reads up to ``prefetch`` batches ahead.

Epochs: an iteration yields the batches of the current epoch not yet
delivered. When it delivers the last one, the loader moves to the next epoch
(position 0). ``set_epoch(n)`` with another ``n`` moves to batch 0 of ``n``;
with the current epoch it keeps the position, so that the usual
``for e in range(start, end): loader.set_epoch(e)`` loop also works after
:meth:`CubeLoader.load_state_dict` resumed in the middle of epoch ``start``.

Shutdown: :meth:`CubeLoader.close` (or ``with dataset.loader() as loader:``)
stops the workers and the read-ahead thread at once. Loaders still open when
the interpreter exits are closed then (``atexit``), so an abandoned iteration
does not leave the "leaked semaphore objects" warning of ``resource_tracker``.
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from cubes.errors import SchemaError
from loaders._progress import EpochBar
from loaders._state import check_state, position_state
from loaders._transport import STORED_KEY, StoredBatches, finish

if TYPE_CHECKING:
    from loaders.dataset import CubeBatchDataset

__all__ = ["CubeLoader", "to_device"]

logger = logging.getLogger(__name__)

_HIT_KEYS = ("disk_hits", "memory_hits")
_MISS_KEYS = ("disk_misses", "memory_misses")


def to_device(batch: Any, device: str | torch.device, non_blocking: bool = True) -> Any:
    """``batch`` with every tensor moved to ``device`` (dicts, lists and tuples followed).

    Anything else (names, the ``stats`` floats) is returned as is. With pinned
    tensors and a CUDA device, ``non_blocking=True`` overlaps the copy with compute.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


class _EpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Yields ``(epoch, i)`` for the batches ``start ..`` of one epoch; set by the loader."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.epoch = 0
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        return ((epoch, i) for i in range(start, self.batches))

    def __len__(self) -> int:
        return self.batches - self.start


class CubeLoader:
    """Iterates the batches of a :class:`CubeBatchDataset`, one epoch per iteration.

    Usually made by :meth:`CubeBatchDataset.loader`.

    Parameters
    ----------
    dataset
        The dataset (its ``shuffle``, ``seed``, ranks… decide the order).
    num_workers
        Worker processes; 0 (the default) reads in this process, in a
        background thread when ``prefetch`` > 0. Reading and decoding already
        run in the dataset's thread pool outside the GIL, so on the benchmark
        (``benchmarks/loader_speed.py``) 0 workers deliver ~2.5x the MB/s of 2:
        workers add a copy of every float32 batch through shared memory. Use
        workers for heavy Python transforms (CLAHE, user callables).
    prefetch
        Batches read ahead: per worker (``DataLoader(prefetch_factor=)``), or
        by the background thread with ``num_workers=0``.
    pin_memory
        Pin the batches' tensors (default: when CUDA is available).
    device
        Move each batch there (``non_blocking=True``, after pinning).
    multiprocessing_context, persistent_workers
        Worker start method (default forkserver: no inherited threads or event
        loops) and whether workers live across epochs (default True).
    worker_transport
        How workers send batches: ``"stored"`` (default) as stored (a plate's
        uint16) in shared memory they reuse, cast to float32 and normalised
        here, in recycled arrays; ``"float32"`` finished, as a plain
        ``DataLoader`` does (every batch copied into fresh shared memory). A
        dataset with a ``transform`` or CLAHE always sends float32 (they run in
        the workers). See :mod:`loaders._transport`.
    log_every
        Seconds between INFO logs of :meth:`metrics` (0 or None: never).
    progress
        Draw a progress bar of each epoch on stderr (batches, batches/s, MB/s
        read, waiting); off by default.
    dataloader_options
        Other ``torch.utils.data.DataLoader`` keywords (``timeout``,
        ``worker_init_fn`` …).

    Notes
    -----
    See the module docstring for when the epoch advances. One iteration at a
    time: starting a new one abandons the previous one.

    Examples
    --------
    >>> loader = dataset.loader(num_workers=4)  # doctest: +SKIP
    >>> for epoch in range(10):  # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:
    ...         ...
    ...     torch.save(loader.state_dict(), "loader.pt")
    """

    def __init__(
        self,
        dataset: CubeBatchDataset,
        *,
        num_workers: int = 0,
        prefetch: int = 2,
        pin_memory: bool | None = None,
        device: str | torch.device | None = None,
        multiprocessing_context: Any = "forkserver",
        persistent_workers: bool = True,
        worker_transport: str = "stored",
        log_every: float | None = 30.0,
        progress: bool = False,
        **dataloader_options: Any,
    ) -> None:
        if num_workers < 0:
            raise SchemaError(f"num_workers={num_workers}: give 0 (read here) or more.")
        if prefetch < 0 or (num_workers > 0 and prefetch < 1):
            raise SchemaError(
                f"prefetch={prefetch}: give the batches to read ahead (at least 1 with workers, "
                "0 for none without)."
            )
        taken = sorted(
            set(dataloader_options) & {"batch_size", "shuffle", "sampler", "batch_sampler"}
        )
        if taken:
            raise SchemaError(
                f"CubeLoader sets {taken} itself (items are whole batches, ordered by the "
                "dataset); set batch_size/shuffle/seed on the CubeBatchDataset instead."
            )
        if worker_transport not in ("stored", "float32"):
            raise SchemaError(
                f"worker_transport={worker_transport!r}: give 'stored' (the default) or 'float32'."
            )
        self.dataset = dataset
        self.num_workers, self.prefetch = num_workers, prefetch
        self.device = None if device is None else torch.device(device)
        cuda = torch.cuda.is_available()
        wanted = (cuda or self.device is not None) if pin_memory is None else pin_memory
        self.pin_memory = bool(wanted and cuda)
        self.log_every, self.progress = log_every, progress
        self._epoch, self._next = dataset.epoch, 0
        self._sampler = _EpochSampler(len(dataset))
        self._dataloader: torch.utils.data.DataLoader | None = None
        # the workers' shared-memory slots, kept mapped here: torch maps a slot sent
        # again to the same storage (no new mapping, no page faults)
        self._mapped: collections.deque[Any] = collections.deque(maxlen=0)
        if num_workers > 0:
            _preload_forkserver(multiprocessing_context)
            options: dict[str, Any] = {
                "batch_size": None,
                "sampler": self._sampler,
                "num_workers": num_workers,
                "pin_memory": self.pin_memory,
                "prefetch_factor": prefetch,
                "multiprocessing_context": multiprocessing_context,
                "persistent_workers": persistent_workers,
            }
            options.update(dataloader_options)
            served: torch.utils.data.Dataset = dataset
            if worker_transport == "stored" and dataset.transform is None and not dataset.clahe:
                slots = int(options["prefetch_factor"]) * num_workers + 2
                served = StoredBatches(dataset, slots)
                self._mapped = collections.deque(maxlen=slots * num_workers)
                options["pin_memory"] = False  # pinned after finish(), here
            self._dataloader = torch.utils.data.DataLoader(served, **options)
        elif dataloader_options:
            raise SchemaError(
                f"{sorted(dataloader_options)} apply to DataLoader workers; with num_workers=0 "
                "the loader reads in this process. Remove them or use workers."
            )
        self._metrics = _Metrics()
        self._last_log = time.monotonic()
        self._source_iter: Iterator[dict[str, Any]] | None = None
        _OPEN.add(self)

    # --- epochs and state ---------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.dataset)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch

    @property
    def dataloader(self) -> torch.utils.data.DataLoader | None:
        """The torch ``DataLoader`` (None with ``num_workers=0``)."""
        return self._dataloader

    def set_epoch(self, epoch: int) -> None:
        """Go to batch 0 of ``epoch``; keep the position if it is the current epoch."""
        self.dataset.set_epoch(epoch)
        if epoch != self._epoch:
            self._epoch, self._next = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        """Where the next iteration starts, and what a resuming loader must match.

        ``epoch`` and ``batch`` (the next batch this rank has not delivered),
        ``batches`` per epoch, and ``dataset`` (a fingerprint of the samples),
        ``samples``, ``seed``, ``shuffle``, ``shuffle_buffer``, ``batch_size``,
        ``world_size``, ``rank``, ``drop_last``, ``uneven``. Plain values:
        ``torch.save`` or JSON it with the model's checkpoint.
        """
        return position_state(self.dataset, self._epoch, self._next)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue at ``state``'s next batch (any ``num_workers``; any rank of the job).

        Raises
        ------
        SchemaError
            ``state`` comes from another dataset, seed, batch size, world size…
            (the message names what differs).
        """
        check_state(self.dataset, state)
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if batch == len(self):
            epoch, batch = epoch + 1, 0
        self._epoch, self._next = epoch, batch
        self.dataset.set_epoch(epoch)

    # --- iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, start, total = self._epoch, self._next, len(self)
        self._sampler.epoch, self._sampler.start = epoch, start
        mark = time.perf_counter()  # starting workers counts as waiting for the first batch
        source = self._source_iter = self._source()
        metrics = self._metrics
        bar = EpochBar(epoch, start, total) if self.progress else None
        try:
            for i in range(start, total):
                t0 = mark if i == start else time.perf_counter()
                try:
                    batch = next(source)
                except StopIteration:
                    return
                if STORED_KEY in batch:  # before the next batch is asked for (see _transport)
                    self._mapped.append([batch.get("inputs"), batch.get("targets")])
                    batch = self._pin(finish(self.dataset, batch))
                t1 = time.perf_counter()
                metrics.add_batch(batch.get("stats", {}), wait=t1 - t0, elapsed=t1 - mark)
                if i == start:
                    metrics.first_wait += t1 - t0
                if bar is not None:
                    bar.update(t1 - t0, float(batch.get("stats", {}).get("bytes", 0.0)))
                mark = t1
                self._epoch, self._next = (epoch + 1, 0) if i + 1 == total else (epoch, i + 1)
                if self.device is not None:
                    batch = to_device(batch, self.device, non_blocking=True)
                self._maybe_log()
                yield batch
        finally:
            if bar is not None:
                bar.close()
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _source(self) -> Iterator[dict[str, Any]]:
        if self._dataloader is not None:
            return iter(self._dataloader)
        indices = iter(self._sampler)
        if self.prefetch == 0:
            return (self._pin(self.dataset[index]) for index in indices)
        return _read_ahead((self._pin(self.dataset[index]) for index in indices), self.prefetch)

    def close(self) -> None:
        """Stop the worker processes and the read-ahead thread now.

        The loader stays usable: the next iteration starts them again, at the
        position :meth:`state_dict` reports.
        """
        source, self._source_iter = self._source_iter, None
        self._mapped.clear()
        close = getattr(source, "close", None)
        if close is not None:
            close()
        for iterator in (source, getattr(self._dataloader, "_iterator", None)):
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        if self._dataloader is not None:
            self._dataloader._iterator = None
        self.dataset.close()

    def __enter__(self) -> CubeLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pin(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.pin_memory:
            return batch
        return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # --- metrics ------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Totals since the loader was made.

        ``batches``, ``batches_per_s`` (over the time spent iterating),
        ``wait_s`` (the consumer blocked waiting for batches), ``wait_fraction``,
        ``mean_wait_ms``, ``first_wait_s`` (the part spent waiting for the
        first batch of each iteration: worker start-up), ``bytes``,
        ``requests``, ``cache_hit_rate`` (disk and memory hits over lookups;
        NaN when there were none), and the summed read counters of the
        batches (``read_seconds``, ``disk_hits`` …).
        """
        return self._metrics.summary()

    def _maybe_log(self) -> None:
        if not self.log_every:
            return
        now = time.monotonic()
        if now - self._last_log < self.log_every:
            return
        self._last_log = now
        m = self.metrics()
        logger.info(
            "loader: %d batches, %.2f batches/s, waiting %.0f%% (%.1f ms/batch), "
            "%.1f MB in %d requests, cache hit rate %.0f%%",
            m["batches"],
            m["batches_per_s"],
            100 * m["wait_fraction"],
            m["mean_wait_ms"],
            m["bytes"] / 1e6,
            m["requests"],
            100 * m["cache_hit_rate"],
        )


_OPEN: weakref.WeakSet[CubeLoader] = weakref.WeakSet()


@atexit.register
def _close_open_loaders() -> None:
    for loader in list(_OPEN):
        try:
            loader.close()
        except Exception:  # noqa: BLE001 - exiting: nothing left to report to
            logger.debug("Closing %r at exit failed", loader, exc_info=True)


class _Metrics:
    """Sums of the batches' read counters and of the consumer's waits."""

    def __init__(self) -> None:
        self.batches = 0
        self.wait = self.elapsed = self.first_wait = 0.0
        self.counters: dict[str, float] = {}

    def add_batch(self, stats: Mapping[str, Any], *, wait: float, elapsed: float) -> None:
        self.batches += 1
        self.wait += wait
        self.elapsed += elapsed
        for key, value in stats.items():
            self.counters[key] = self.counters.get(key, 0.0) + float(value)

    def summary(self) -> dict[str, float]:
        c = self.counters
        hits = sum(c.get(k, 0.0) for k in _HIT_KEYS)
        lookups = hits + sum(c.get(k, 0.0) for k in _MISS_KEYS)
        out = {
            **c,
            "bytes": c.get("bytes", 0.0),
            "requests": c.get("requests", 0.0),
            "cache_hit_rate": hits / lookups if lookups else float("nan"),
            "batches": float(self.batches),
            "batches_per_s": self.batches / self.elapsed if self.elapsed else 0.0,
            "elapsed_s": self.elapsed,
            "wait_s": self.wait,
            "wait_fraction": self.wait / self.elapsed if self.elapsed else 0.0,
            "mean_wait_ms": 1000 * self.wait / self.batches if self.batches else 0.0,
            "first_wait_s": self.first_wait,
        }
        return out


_DONE = object()


def _preload_forkserver(context: Any) -> None:
    """Import the dataset's modules once in the forkserver, not in every worker.

    Workers forked from a server that has imported torch, zarr and xarray start
    in a fraction of a second instead of seconds. Only adds to the preload list
    (``__main__`` by default), and only before the server starts.
    """
    import multiprocessing
    from multiprocessing import forkserver

    if isinstance(context, str):
        if context != "forkserver":
            return
    elif context is None or context.get_start_method() != "forkserver":
        return
    server = getattr(forkserver, "_forkserver", None)
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if "loaders.dataset" not in modules:
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            [*modules, "loaders.dataset"]
        )


def _read_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced by a background thread at most ``depth`` ahead.

    An exception in the thread is raised here, in the consumer. Closing this
    generator (or abandoning it) stops the thread after its current item.
    """
    slots: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                slots.put((item, error), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(None, exc)

    thread = threading.Thread(target=produce, name="cube-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
