"""``CubeBatchDataset``: batches of plate fields (or patches) as torch tensors.

xbatcher's :class:`~xbatcher.BatchSchema` decides what a sample is (one
``(well, field)`` with a ``y``/``x`` window from ``input_dims``). The order of
the samples in an epoch, and how the batches are dealt to DDP ranks, are pure
functions of ``(seed, epoch)`` (:mod:`loaders.order`). Reading does not go
through xarray or dask: each batch is grouped by field, and each field is one
:meth:`~loaders.reader.CubeReader.read` of the window covering its samples,
issued concurrently from a thread pool, and transformed in that thread
(:mod:`loaders.transforms`). Readers are opened lazily in each process, so the
dataset works in ``DataLoader`` workers under fork, forkserver and spawn alike.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from cubes import open_cube
from cubes.errors import SchemaError
from loaders import order
from loaders._batch import read_batch
from loaders._checks import (
    check_crop,
    check_epoch,
    check_input_dims,
    check_numbers,
    distributed,
    plate_variable,
    select_channels,
)
from loaders._local import ProcessLocal
from loaders._samples import (
    CubeInfo,
    CubeLike,
    check_counts,
    describe_cube,
    sample_rows,
    sample_table,
)
from loaders._statistics import estimate_cube_statistics, usable_statistics
from loaders.cache import DiskCache
from loaders.transforms import SampleTransforms, require_clahe

if TYPE_CHECKING:
    from loaders.loader import CubeLoader

__all__ = ["CubeBatchDataset"]

logger = logging.getLogger(__name__)

Index = int | tuple[int, int]


class CubeBatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches of cube samples.

    Use it with :meth:`loader` (or ``DataLoader(dataset, batch_size=None)``):
    item ``i`` is batch ``i`` of the current epoch, item ``(epoch, i)`` batch
    ``i`` of ``epoch``, already collated.

    Parameters
    ----------
    cubes
        A cube URL, a Dataset from :func:`cubes.open_cube` (or any Dataset with
        the plate dims), or a list of them, treated as one dataset.
    input_dims
        Window per sample along ``y``/``x``, as in xbatcher (default: the whole
        field). Windows tile the field; ``input_overlap`` makes them overlap.
    batch_size
        Samples per batch; the last batch may be smaller unless ``drop_last``.
    channels
        Channel names to keep, in this order (default: all).
    normalize
        Standardise each channel with the statistics stored in the cube; a cube
        without them gets them estimated from up to 16 of its fields, with a
        ``UserWarning`` (with ``clahe=True``, always estimated, after CLAHE).
    storage_options
        fsspec options for cube URLs (``endpoint_url``, ``anon`` …).
    threads
        Concurrent field reads per process.
    shuffle, seed, shuffle_buffer
        ``shuffle=True`` permutes the fields, then shuffles samples within
        windows of ``shuffle_buffer`` samples (default ``4 * batch_size``, at
        least one field's samples, rounded up to whole batches); a pure function
        of ``(seed, epoch)``. ``False``: the cube order. See :mod:`loaders.order`.
    rank, world_size, uneven
        DDP sharding (default: from ``torch.distributed`` when initialised, else
        0 and 1): rank ``r`` gets every ``world_size``-th batch. ``uneven="pad"``
        repeats samples from the start of the epoch (``batch["padding"]`` True)
        so that every rank has as many batches; ``"drop"`` drops the tail.
    random_crop
        ``{"y": h, "x": w}``: a random crop of each sample's window, placed by
        ``(seed, epoch, sample)``; only the crop is read.
    clahe
        Contrast-limited adaptive histogram equalisation per channel
        (needs ``pip install cellcubes[clahe]``).
    transform
        ``f(sample) -> sample`` on each ``(C, H, W)`` float32 numpy array, last
        (order: crop → CLAHE → normalise → ``transform``). Must be picklable to
        run in spawn/forkserver workers.
    backend, cache_dir, cache_gb, memory_cache_mb
        The read path: :class:`~loaders.reader.CubeReader`'s backend, a disk
        cache (:meth:`~loaders.cache.DiskCache.from_env`: ``CACHE_DIR`` /
        ``CACHE_GB``) and an in-memory cache of decoded chunks per process
        (0: none).

    Each batch is a dict: ``images`` float32 ``(N, C, H, W)``; ``present`` bool
    ``(N, C)``; ``padding`` bool ``(N,)``; ``well`` (names), ``field`` (site
    numbers), ``cube`` (position in ``cubes``), ``y``/``x`` (origin of the
    pixels, after any crop), ``sample`` (index in the dataset) and ``stats``
    (read counters of this batch, floats).

    Notes
    -----
    Fields with none of the selected channels present are not samples. Missing
    images read as the fill value (``present`` False).

    Examples
    --------
    >>> url, window = "s3://bkt/plate.zarr", {"y": 256, "x": 256}
    >>> ds = CubeBatchDataset(url, input_dims=window, shuffle=True)  # doctest: +SKIP
    >>> for batch in ds.loader(num_workers=2):  # doctest: +SKIP
    ...     model(batch["images"])
    """

    def __init__(
        self,
        cubes: CubeLike | Sequence[CubeLike],
        *,
        input_dims: dict[str, int] | None = None,
        input_overlap: dict[str, int] | None = None,
        batch_size: int = 16,
        channels: Sequence[str] | None = None,
        normalize: bool = False,
        drop_last: bool = False,
        storage_options: dict[str, Any] | None = None,
        threads: int = 16,
        variable: str | None = None,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "pad",
        random_crop: dict[str, int] | None = None,
        clahe: bool = False,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        backend: str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        cache_gb: float | None = None,
        memory_cache_mb: float = 0,
    ) -> None:
        check_numbers(batch_size, seed, shuffle_buffer, uneven, threads, memory_cache_mb)
        if backend not in ("auto", "obstore", "fsspec"):
            raise SchemaError(f"backend={backend!r}: give 'auto', 'obstore' or 'fsspec'.")
        items = [cubes] if isinstance(cubes, str | xr.Dataset) else list(cubes)
        if not items:
            raise SchemaError("CubeBatchDataset needs at least one cube (URL or Dataset).")
        if clahe:
            require_clahe()
        self.variable: str = variable or ""
        self.batch_size, self.threads = batch_size, threads
        self.normalize, self.drop_last, self.clahe = normalize, drop_last, clahe
        self.shuffle, self.seed, self.uneven = shuffle, seed, uneven
        self.rank, self.world_size = distributed(rank, world_size)
        self.backend, self.memory_cache_mb = backend, memory_cache_mb
        self.disk_cache = DiskCache.from_env(cache_dir, cache_gb)
        self._transforms = SampleTransforms(clahe=clahe, normalize=normalize, user=transform)
        self._local = ProcessLocal()
        self._cubes: list[CubeInfo] = []
        self._samples_table = self._open_cubes(
            items, variable, channels, input_dims, input_overlap, random_crop, storage_options
        )
        self._shard_sizes = order.shard_sizes(self._samples_table[:, :3])
        self.shuffle_buffer = order.effective_buffer(
            shuffle_buffer, batch_size, int(self._shard_sizes.max())
        )
        self._counts = check_counts(
            len(self._samples_table),
            batch_size,
            self.world_size,
            drop_last=drop_last,
            uneven=uneven,
        )
        self.epoch = 0
        self._orders: dict[tuple[int, bool], np.ndarray] = {}
        self._loader_ref: Callable[[], CubeLoader | None] | None = None
        self._pending_state: dict[str, Any] | None = None
        for k in range(len(self._cubes)):
            self._complete_statistics(k)

    # --- construction -------------------------------------------------------------------

    def _open_cubes(
        self,
        items: list[CubeLike],
        variable: str | None,
        channels: Sequence[str] | None,
        input_dims: dict[str, int] | None,
        input_overlap: dict[str, int] | None,
        random_crop: dict[str, int] | None,
        storage_options: dict[str, Any] | None,
    ) -> np.ndarray:
        """Open and describe each cube (the first sets channels and windows): the sample table."""
        samples = []
        for k, item in enumerate(items):
            ds = (
                item
                if isinstance(item, xr.Dataset)
                else open_cube(item, storage_options=storage_options, require_complete=True)
            )
            if k == 0:
                self.variable = variable or plate_variable(ds)
                self.channels, _ = select_channels(ds, channels, self.variable)
                self.input_dims = check_input_dims(ds, input_dims, self.variable)
                self.random_crop = check_crop(random_crop, self.input_dims)
            # every cube: its own channel positions, and a window that fits
            _, index = select_channels(ds, self.channels, self.variable)
            check_input_dims(ds, self.input_dims, self.variable)
            cube = describe_cube(ds, item, index, self.variable)
            self._cubes.append(cube)
            overlap = input_overlap or {}
            samples.append(
                sample_rows(k, ds, self.variable, self.input_dims, overlap, cube.present)
            )
        return sample_table(samples, items, self.channels)

    def _complete_statistics(self, k: int) -> None:
        """Estimate the statistics a cube lacks (or all of them under CLAHE), if normalising."""
        cube = self._cubes[k]
        if not self.normalize:
            return
        if usable_statistics(cube) and not self.clahe:
            return
        h, w = self._field_size(k)
        n_fields = estimate_cube_statistics(
            cube,
            self._samples_table[self._samples_table[:, 0] == k],
            lambda wi, fi: self._read((k, wi, fi), slice(0, h), slice(0, w)),
            channels=len(self.channels),
            clahe=self.clahe,
            pool=self._local.pool(self.threads),
        )
        where = cube.url or "the in-memory Dataset"
        if self.clahe:
            logger.info(
                "Normalising after CLAHE with statistics of %d fields of %s",
                n_fields,
                where,
            )
            return
        warnings.warn(
            f"{where} stores no usable per-channel statistics for {list(self.channels)}; "
            f"normalising with the mean and std of {n_fields} of its fields instead. "
            "Re-ingest the cube to store them.",
            UserWarning,
            stacklevel=3,
        )

    def _field_size(self, k: int) -> tuple[int, int]:
        cube = self._cubes[k]
        if cube.data is not None:
            return int(cube.data.sizes["y"]), int(cube.data.sizes["x"])
        shape = self._local.reader(self, k).shape
        return int(shape[-2]), int(shape[-1])

    # --- order --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._counts.per_rank

    @property
    def n_samples(self) -> int:
        """Samples per epoch over all ranks (before ``drop_last`` and padding)."""
        return len(self._samples_table)

    @property
    def statistics(self) -> list[dict[str, Any]]:
        """Per cube: ``mean``, ``std`` (per selected channel) and ``fields``.

        ``fields`` lists the ``(well, field)`` the statistics were estimated
        from, or is ``None`` when they come from the cube.
        """
        return [{"mean": c.mean, "std": c.std, "fields": c.stats_fields} for c in self._cubes]

    def set_epoch(self, epoch: int) -> None:
        """Make plain-int indices refer to ``epoch`` (in this process).

        Workers hold copies: with persistent workers, index with ``(epoch, i)``
        (as :meth:`loader` does) instead of relying on this.
        """
        self.epoch = check_epoch(epoch)

    def sample_order(self, epoch: int | None = None) -> np.ndarray:
        """Sample indices of ``epoch`` (default the current one), in the order consumed."""
        epoch = self.epoch if epoch is None else check_epoch(epoch)
        key = (epoch, self.shuffle)
        cached = self._orders.get(key)
        if cached is None:
            cached = order.epoch_order(
                self._shard_sizes,
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
                buffer=self.shuffle_buffer,
            )
            self._orders = {k: v for k, v in self._orders.items() if k[0] >= epoch - 1}
            self._orders[key] = cached
        return cached

    def _batch_samples(self, index: Index) -> tuple[int, np.ndarray, np.ndarray]:
        epoch, i = (self.epoch, index) if isinstance(index, int | np.integer) else index
        n = self._counts.per_rank
        if not -n <= int(i) < n:
            raise IndexError(f"batch {i} out of range for {n} batches per epoch")
        samples, padding = order.rank_batch(
            self.sample_order(int(epoch)),
            int(i) % n,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            counts=self._counts,
        )
        return int(epoch), samples, padding

    # --- torch Dataset ------------------------------------------------------------------

    def __getitem__(self, index: Index) -> dict[str, Any]:
        start = time.perf_counter()
        epoch, samples, padding = self._batch_samples(index)
        rows = self._samples_table[samples]
        origin = rows[:, 3:5].copy()
        size = self.input_dims
        if self.random_crop is not None:
            size = self.random_crop
            origin += order.crop_offsets(
                samples,
                seed=self.seed,
                epoch=epoch,
                span_y=self.input_dims["y"] - size["y"],
                span_x=self.input_dims["x"] - size["x"],
            )
        before = self._local.stats.snapshot()
        images, present = self._read_batch(rows, origin, size["y"], size["x"])
        stats = {k: v - before.get(k, 0.0) for k, v in self._local.stats.snapshot().items()}
        stats["batch_seconds"] = time.perf_counter() - start
        return {
            "images": torch.from_numpy(images),
            "present": torch.from_numpy(present),
            "padding": torch.from_numpy(padding),
            "well": [str(self._cubes[int(k)].wells[wi]) for k, wi in rows[:, :2]],
            "field": torch.tensor(
                [int(self._cubes[int(k)].fields[fi]) for k, fi in rows[:, [0, 2]]],
                dtype=torch.int64,
            ),
            "cube": torch.from_numpy(rows[:, 0].copy()),
            "y": torch.from_numpy(origin[:, 0].copy()),
            "x": torch.from_numpy(origin[:, 1].copy()),
            "sample": torch.from_numpy(samples.astype(np.int64)),
            "stats": stats,
        }

    def _read_batch(
        self, rows: np.ndarray, origin: np.ndarray, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(N, C, h, w)`` float32 and ``present`` ``(N, C)``; one read per field."""
        return read_batch(
            rows,
            origin,
            h,
            w,
            cubes=self._cubes,
            channels=len(self.channels),
            read=self._read,
            transforms=self._transforms,
            pool=self._local.pool(self.threads),
        )

    def _read(self, key: tuple[int, int, int], ys: slice, xs: slice) -> np.ndarray:
        """Pixels ``(channel, y, x)`` of one field's window, as stored."""
        k, wi, fi = key
        cube = self._cubes[k]
        if cube.data is not None:
            return np.asarray(cube.data[wi, fi][cube.channel_index, ys, xs].values)
        return self._local.reader(self, k).read(wi, fi, cube.channel_index, ys, xs)

    # --- loaders and resume -------------------------------------------------------------

    def fingerprint(self) -> str:
        """Identifies the samples (cubes, variable, channels, windows): the same → same hash."""
        digest = hashlib.sha256(self._samples_table.tobytes())
        for part in (
            [c.url or "<memory>" for c in self._cubes],
            self.variable,
            self.channels,
            self.input_dims,
        ):
            digest.update(repr(part).encode())
        return digest.hexdigest()[:16]

    def with_options(self, **changes: Any) -> CubeBatchDataset:
        """A copy with other ``shuffle`` / ``seed`` (sharing the cubes' metadata)."""
        unknown = sorted(set(changes) - {"shuffle", "seed"})
        if unknown:
            raise TypeError(f"with_options() takes shuffle= and seed= only, not {unknown}")
        if "seed" in changes:
            check_numbers(self.batch_size, changes["seed"], None, self.uneven, 1, 0)
        new = copy.copy(self)
        new.__dict__.update(changes)
        new._orders, new._loader_ref, new._pending_state = {}, None, None
        new._local = ProcessLocal()
        return new

    def loader(
        self,
        *,
        num_workers: int = 0,
        shuffle: bool | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> CubeLoader:
        """A :class:`~loaders.loader.CubeLoader` over this dataset's batches.

        ``shuffle`` / ``seed`` override the dataset's (on a copy). ``options``
        go to :class:`~loaders.loader.CubeLoader`: ``prefetch``, ``pin_memory``,
        ``device``, ``multiprocessing_context`` (default forkserver),
        ``persistent_workers`` (default True), ``log_every``, and any other
        ``DataLoader`` keyword.
        """
        from loaders.loader import CubeLoader

        changes = {
            k: v
            for k, v in {"shuffle": shuffle, "seed": seed}.items()
            if v is not None and v != getattr(self, k)
        }
        data = self.with_options(**changes) if changes else self
        loader = CubeLoader(data, num_workers=num_workers, **options)
        if self._pending_state is not None:
            loader.load_state_dict(self._pending_state)  # raises if it does not fit
            self._pending_state = None
        self._loader_ref = weakref.ref(loader)
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The position of the last :meth:`loader` (epoch, next batch, and what must match)."""
        loader = self._loader_ref() if self._loader_ref else None
        if loader is not None:
            return loader.state_dict()
        from loaders.loader import position_state

        return position_state(self, self.epoch, 0)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the last :meth:`loader` there, or else the next one made.

        The state is checked against that loader's dataset (which
        ``loader(shuffle=..., seed=...)`` may change), so a mismatch is raised
        here when a loader exists, else by :meth:`loader`.
        """
        loader = self._loader_ref() if self._loader_ref else None
        if loader is not None:
            loader.load_state_dict(state)
            return
        self._pending_state = dict(state)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_orders={}, _loader_ref=None, _pending_state=None)
        return state
