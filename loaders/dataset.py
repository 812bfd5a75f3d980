"""``CubeBatchDataset``: batches of any cube's samples (or time windows) as torch tensors.

What a sample is comes from the cube's recorded layout (:mod:`cubes.layout`,
:mod:`loaders._space`): one position of its sample dims (a plate's ``well,
field``; an array cube's ``sample``; a climate cube's ``time`` step), or with
``input_steps`` a time window with its targets (:mod:`loaders.windows`), times
one xbatcher ``input_dims`` patch of the window dims. The order of the samples
in an epoch, and how the batches are dealt to DDP ranks, are pure functions of
``(seed, epoch)`` (:mod:`loaders.order`). Reading does not go through xarray or
dask: each batch is one :meth:`~loaders.reader.CubeReader.read_many` per cube,
variable and sample position, issued concurrently from a thread pool
(:mod:`loaders._batch`). Readers are opened lazily in each process, so the
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

from cubes.errors import SchemaError
from loaders import order
from loaders._batch import Batch, read_batch, sample_shape
from loaders._buffers import as_tensor
from loaders._checks import check_crop, check_epoch, check_normalize, check_numbers, distributed
from loaders._denormalize import channel_statistics, denormalize
from loaders._labels import batch_labels
from loaders._local import ProcessLocal
from loaders._open import open_cubes
from loaders._samples import (
    CubeLike,
    check_counts,
    shard_keys,
)
from loaders._statistics import estimate_cube_statistics, usable
from loaders.cache import DiskCache
from loaders.transforms import require_clahe
from loaders.windows import TimeRange

if TYPE_CHECKING:
    from loaders.loader import CubeLoader

__all__ = ["CubeBatchDataset"]

logger = logging.getLogger(__name__)

Index = int | tuple[int, int]
Allocate = Callable[[tuple[int, ...], Any], np.ndarray]

WINDOW_MEMORY_CACHE_MB = 256
"""Default in-memory chunk cache with time windows: consecutive windows share steps."""


class CubeBatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches of cube samples.

    Use it with :meth:`loader` (or ``DataLoader(dataset, batch_size=None)``):
    item ``i`` is batch ``i`` of the current epoch, item ``(epoch, i)`` batch
    ``i`` of ``epoch``, already collated.

    Parameters
    ----------
    cubes
        A cube URL, a Dataset from :func:`cubes.open_cube`, or a list of them
        (ensemble members, years, plates) treated as one dataset. Every cube
        needs the variables and channels of the first.
    input_dims, input_overlap
        Patch per sample along the layout's window dims, as in xbatcher
        (plates ``{"y": 256, "x": 256}``, climate ``{"lat": 32, "lon": 64}``;
        default: the whole extent). Patches tile the extent.
    batch_size
        Samples per batch; the last batch may be smaller unless ``drop_last``.
    variables, channels
        The C axis: ``variables`` picks the cube's data variables (default: all
        of the layout's); each is one channel, or one per position of its
        channel dims (a plate's ``channel``; the pressure ``level`` a
        variable's statistics are per). ``channels`` picks channels by label
        (a plate's channel names; ``"T@85000"`` for one level of ``T``).
    input_steps, target_steps, lead, time_range
        Time windows (cubes with a time axis): ``input_steps`` consecutive steps
        in, ``target_steps`` out, the first target ``lead`` after the last
        input (steps, or a duration such as ``"6h"``). A window that needs a
        missing step is never a sample. ``time_range=("2000-01-01",
        "2008-12-31")`` keeps the samples whose (first input) step lies in it:
        splits by time never share a window. See :mod:`loaders.windows`.
    target_variables
        The variables of ``targets`` (default with ``target_steps``: ``variables``).
        Without time windows, targets at the sample's own position (an array
        cube's labels).
    normalize
        ``True``: standardise each channel of inputs and targets with the
        statistics stored in the cube (per variable, and per level);
        ``"inputs"``: the inputs only. A cube without them gets them estimated
        from up to 16 of its samples, with a ``UserWarning`` (with
        ``clahe=True``, always estimated, after CLAHE). See :meth:`denormalize`.
    fill_nan
        Replace NaN (a model's fill values, masked ocean) in inputs and targets
        by this value, after normalising (``0.0``: the mean). Default: kept.
    storage_options
        fsspec options for cube URLs (``endpoint_url``, ``anon`` …).
    threads
        Concurrent reads per process.
    shuffle, seed, shuffle_buffer
        ``shuffle=True`` permutes the storage shards' samples, then shuffles
        samples within windows of ``shuffle_buffer`` samples (default
        ``4 * batch_size``, at least one shard's samples, rounded up to whole
        batches); a pure function of ``(seed, epoch)``. ``False``: the cube
        order. See :mod:`loaders.order`.
    rank, world_size, uneven
        DDP sharding (default: from ``torch.distributed`` when initialised, else
        0 and 1): rank ``r`` gets every ``world_size``-th batch. ``uneven="pad"``
        repeats samples from the start of the epoch (``batch["padding"]`` True)
        so that every rank has as many batches; ``"drop"`` drops the tail.
    random_crop
        A random crop of each sample's patch along window dims, placed by
        ``(seed, epoch, sample)``; only the crop is read.
    clahe
        Contrast-limited adaptive histogram equalisation per channel of 2-D
        samples (needs ``pip install cellcubes[clahe]``).
    transform
        ``f(sample) -> sample`` on each sample's inputs (float32 numpy), last
        (order: crop → CLAHE → normalise → ``fill_nan`` → ``transform``). Must be picklable to
        run in spawn/forkserver workers.
    backend, cache_dir, cache_gb, memory_cache_mb
        The read path: :class:`~loaders.reader.CubeReader`'s backend, a disk
        cache (:meth:`~loaders.cache.DiskCache.from_env`: ``CACHE_DIR`` /
        ``CACHE_GB``) and an in-memory cache of decoded chunks per process
        (default: none, or :data:`WINDOW_MEMORY_CACHE_MB` with time windows).

    Each batch is a dict: ``inputs`` float32 ``(N, C, *patch)`` — with time
    windows ``(N, k, C, *patch)`` and ``targets`` ``(N, m, C_t, *patch)``;
    ``present`` bool ``(N, C)``; ``padding`` bool ``(N,)``; ``cube``
    (position in ``cubes``); ``sample`` (index in the dataset); each sample
    dim's label under its name (a plate's ``well`` names and ``field``
    numbers); with a time axis ``time`` (ISO strings: per sample, or per
    window step) and with windows ``step`` ``(N, k + m)`` (step indices); each
    window dim's patch origin under its name (``y``/``x``, ``lat``/``lon``);
    and ``stats`` (read counters of this batch, floats).

    Examples
    --------
    >>> url, window = "s3://bkt/plate.zarr", {"y": 256, "x": 256}
    >>> ds = CubeBatchDataset(url, input_dims=window, shuffle=True)  # doctest: +SKIP
    >>> for batch in ds.loader(num_workers=2):  # doctest: +SKIP
    ...     model(batch["inputs"])
    >>> era = CubeBatchDataset(  # doctest: +SKIP
    ...     "s3://bkt/era.zarr", variables=["T_surf", "T"], input_steps=2, target_steps=1,
    ...     lead="6h", input_dims={"lat": 32, "lon": 64}, time_range=("1979", "2015"),
    ...     normalize=True)
    """

    def __init__(
        self,
        cubes: CubeLike | Sequence[CubeLike],
        *,
        input_dims: dict[str, int] | None = None,
        input_overlap: dict[str, int] | None = None,
        batch_size: int = 16,
        variables: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        input_steps: int | None = None,
        target_steps: int = 0,
        lead: int | str = 1,
        time_range: TimeRange | None = None,
        target_variables: Sequence[str] | None = None,
        normalize: bool | str = False,
        fill_nan: float | None = None,
        drop_last: bool = False,
        storage_options: dict[str, Any] | None = None,
        threads: int = 16,
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
        memory_cache_mb: float | None = None,
    ) -> None:
        check_numbers(batch_size, seed, shuffle_buffer, uneven, threads, memory_cache_mb or 0)
        if backend not in ("auto", "obstore", "fsspec"):
            raise SchemaError(f"backend={backend!r}: give 'auto', 'obstore' or 'fsspec'.")
        items = [cubes] if isinstance(cubes, str | xr.Dataset) else list(cubes)
        if not items:
            raise SchemaError("CubeBatchDataset needs at least one cube (URL or Dataset).")
        if clahe:
            require_clahe()
        self._normalize = check_normalize(normalize)
        self.normalize, self.fill_nan = normalize, fill_nan
        self.batch_size, self.threads = batch_size, threads
        self.drop_last, self.clahe, self.transform = drop_last, clahe, transform
        self.shuffle, self.seed, self.uneven = shuffle, seed, uneven
        self.rank, self.world_size = distributed(rank, world_size)
        self.backend = backend
        self.disk_cache = DiskCache.from_env(cache_dir, cache_gb)
        self._local = ProcessLocal()
        self._arguments: dict[str, Any] = {
            "variables": variables,
            "channels": channels,
            "target_variables": target_variables,
            "input_dims": input_dims,
            "input_overlap": input_overlap,
            "input_steps": input_steps,
            "target_steps": target_steps,
            "lead": lead,
            "time_range": time_range,
        }
        self.space, self._cubes, self._samples_table = open_cubes(
            items, self._arguments, storage_options
        )
        self.random_crop = check_crop(random_crop, self.space.window)
        if clahe and (self.space.windows is not None or len(self.space.window) != 2):
            raise SchemaError(
                "clahe=True equalises 2-D images: it needs two window dims and no time "
                "windows. Remove clahe=True."
            )
        if memory_cache_mb is None:
            memory_cache_mb = WINDOW_MEMORY_CACHE_MB if self.space.windows is not None else 0
        self.memory_cache_mb = memory_cache_mb
        keys = shard_keys(self._samples_table, self._cubes, len(self.space.sample_dims))
        self._shard_sizes = order.shard_sizes(keys)
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

    def _complete_statistics(self, k: int) -> None:
        """Estimate the statistics a cube lacks (or all of them under CLAHE), if normalising."""
        cube = self._cubes[k]
        if self._normalize is None:
            return
        targets = self._normalize == "all" and bool(self.space.targets)
        stored = usable(cube.mean, cube.std) and (
            not targets or usable(cube.target_mean, cube.target_std)
        )
        if stored and not self.clahe:
            return
        n_read = estimate_cube_statistics(
            cube,
            self._samples_table[self._samples_table[:, 0] == k],
            self._read_whole,
            n_dims=len(self.space.sample_dims),
            targets=targets,
            timed=self.space.windows is not None,
            pool=self._local.pool(self.threads),
        )
        where = cube.url or "the in-memory Dataset"
        if self.clahe:
            logger.info(
                "Normalising after CLAHE with statistics of %d samples of %s", n_read, where
            )
            return
        warnings.warn(
            f"{where} stores no usable statistics for {list(self.channels)}; normalising with "
            f"the mean and std of {n_read} of its samples instead. Re-ingest the cube to store "
            "them.",
            UserWarning,
            stacklevel=3,
        )

    def _read_whole(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One sample over the whole extent of the window dims, not normalised."""
        cube = self._cubes[int(row[0])]
        window = {d: cube.sizes[d] for d in self.space.window}
        full = np.zeros((1, len(window)), dtype=np.int64)
        batch = self._read_rows(row[None], full, window, normalize=False, user=False)
        return (
            batch.inputs[0],
            None if batch.targets is None else batch.targets[0],
            batch.present[0],
        )

    # --- what the samples are -----------------------------------------------------------

    @property
    def channels(self) -> tuple[str, ...]:
        """Labels of the C axis of ``inputs``."""
        return tuple(f.label for f in self.space.inputs)

    @property
    def target_channels(self) -> tuple[str, ...]:
        """Labels of the C axis of ``targets`` (empty without targets)."""
        return tuple(f.label for f in self.space.targets)

    @property
    def variables(self) -> tuple[str, ...]:
        """The data variables of the inputs."""
        return tuple(dict.fromkeys(f.variable for f in self.space.inputs))

    @property
    def input_dims(self) -> dict[str, int]:
        """The patch size along each window dim."""
        return dict(self.space.window)

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
        """Per cube: ``mean``, ``std`` (per input channel), ``target_mean``, ``target_std``
        and ``samples``: the sample labels the statistics were estimated from, or
        ``None`` when they come from the cube."""
        return [
            {
                "mean": c.mean,
                "std": c.std,
                "target_mean": c.target_mean,
                "target_std": c.target_std,
                "samples": c.stats_samples,
            }
            for c in self._cubes
        ]

    def set_epoch(self, epoch: int) -> None:
        """Make plain-int indices refer to ``epoch`` (in this process).

        With a plain ``DataLoader(dataset, batch_size=None)`` call it before each
        epoch (as with ``DistributedSampler.set_epoch``): without it every
        shuffled epoch repeats epoch 0's order. Workers hold copies made when
        the iteration starts, so call it before ``iter(dataloader)``; with
        persistent workers, index with ``(epoch, i)`` (as :meth:`loader` does).
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
        return self.read_item(index)

    def read_item(self, index: Index, stored: Allocate | None = None) -> dict[str, Any]:
        """Batch ``index``; with ``stored`` (``empty(shape, dtype)``), its arrays as stored
        (not cast, normalised or transformed), for :mod:`loaders._transport`."""
        start = time.perf_counter()
        epoch, samples, padding = self._batch_samples(index)
        rows = self._samples_table[samples]
        n_dims = len(self.space.sample_dims)
        origin = rows[:, 1 + n_dims :].copy()
        window = self.space.window
        if self.random_crop is not None:
            dims = list(window)
            origin += order.crop_offsets(
                samples,
                seed=self.seed,
                epoch=epoch,
                spans=[window[d] - self.random_crop[d] for d in dims],
            )
            window = self.random_crop
        before = self._local.stats.snapshot()
        batch = self._read_rows(rows, origin, window, stored=stored)
        stats = {k: v - before.get(k, 0.0) for k, v in self._local.stats.snapshot().items()}
        stats["batch_seconds"] = time.perf_counter() - start
        out: dict[str, Any] = {"inputs": as_tensor(batch.inputs)}
        if batch.targets is not None:
            out["targets"] = as_tensor(batch.targets)
        out.update(batch_labels(self.space, self._cubes, rows, origin))
        out.update(
            present=torch.from_numpy(batch.present),
            padding=torch.from_numpy(padding),
            cube=torch.from_numpy(rows[:, 0].copy()),
            sample=torch.from_numpy(samples.astype(np.int64)),
            stats=stats,
        )
        return out

    def _read_rows(
        self,
        rows: np.ndarray,
        origin: np.ndarray,
        window: dict[str, int],
        *,
        normalize: bool = True,
        user: bool = True,
        stored: Allocate | None = None,
    ) -> Batch:
        if stored is not None:
            normalize = user = False
        return read_batch(
            rows,
            origin,
            window,
            space=self.space,
            cubes=self._cubes,
            read=self._read,
            pool=self._local.pool(self.threads),
            clahe_inputs=self.clahe and stored is None,
            normalize=self._normalize if normalize else None,
            fill_nan=self.fill_nan if user else None,
            transform=self.transform if user else None,
            empty=stored or self._local.empty,
        )

    def _read(self, k: int, variable: str, selections: list[list[Any]]) -> list[np.ndarray]:
        """Each orthogonal selection of ``variable`` in cube ``k``, as stored."""
        cube = self._cubes[k]
        if cube.data is not None:
            da = cube.data[variable]
            return [
                np.asarray(da.isel(dict(zip(da.dims, sel, strict=True))).values)
                for sel in selections
            ]
        return self._local.reader(self, k, variable).read_many(selections)

    # --- predictions --------------------------------------------------------------------

    def denormalize(
        self,
        values: torch.Tensor | np.ndarray,
        variables: Sequence[str] | None = None,
        cube: int | torch.Tensor | np.ndarray = 0,
    ) -> torch.Tensor | np.ndarray:
        """Undo the normalisation: ``values * std + mean`` per channel.

        Parameters
        ----------
        values
            Normalised values ``(..., C, *sample shape)``, e.g. a model's
            prediction of ``targets`` (``(N, m, C_t, H, W)``) or ``inputs``.
        variables
            What the C axis holds: variable names or channel labels, picked
            from the targets' channels (then the inputs'); default: all target
            channels (the inputs' when there are no targets).
        cube
            Whose statistics: a position in ``cubes``, or each sample's
            (``batch["cube"]``, matching the first axis of ``values``).
        """
        mean, std, targets = channel_statistics(self.space, self._cubes, self._normalize, variables)
        trailing = len(sample_shape(self.space, self._cubes[0], self.space.window, targets))
        return denormalize(values, mean, std, trailing=trailing, cube=cube)

    # --- loaders and resume -------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """What identifies the samples, as plain values (for resume checks)."""
        w = self.space.windows
        return {
            "cubes": [c.url or "<memory>" for c in self._cubes],
            "inputs": list(self.channels),
            "targets": list(self.target_channels),
            "input_dims": dict(self.space.window),
            "input_overlap": dict(self.space.overlap),
            "input_steps": None if w is None else w.input_steps,
            "target_steps": 0 if w is None else w.target_steps,
            "lead": None if w is None else w.lead,
            "time_range": None if self.space.time_range is None else list(self.space.time_range),
        }

    def fingerprint(self) -> str:
        """Identifies the samples (cubes, channels, windows): the same → same hash."""
        digest = hashlib.sha256(self._samples_table.tobytes())
        digest.update(repr(sorted(self.config().items())).encode())
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
        ``persistent_workers`` (default True), ``worker_transport``, ``log_every``,
        ``progress`` (a progress bar on stderr), and any other
        ``DataLoader`` keyword. Close it (or use it as a context manager) to
        stop its workers at once.
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
        from loaders._state import position_state

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

    def close(self) -> None:
        """Stop this process's read threads (they restart if the dataset is used again)."""
        self._local.close()

    def __enter__(self) -> CubeBatchDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_orders={}, _loader_ref=None, _pending_state=None)
        return state
