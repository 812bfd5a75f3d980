"""Forecasting windows from a climate cube, against what users write today, in one run.

``python -m ingest synth-climate`` writes ``--years`` of monthly CF NetCDF files
of daily steps on a ``--grid`` into a local folder, one day left out
(``--drop-step``: a gap), and ``python -m ingest netcdf`` ingests them into a
cube on a moto S3 server running as its own process on 127.0.0.1 (chunks of one
step and the whole grid, shards of 8 steps). A *window* is one sample: ``k = 2``
input steps and ``m = 1`` target step ``lead = 1`` step after the last input
(steps ``t, t+1 -> t+2``) of T_surf, q_H2O and cldfrac, on one of the 64x64
patches tiling the grid; a window that needs a missing step (``present`` False)
is never delivered. Batches of 16 windows, shuffled with seed 0. Every method
delivers float32 ``inputs (N, 2, 3, 64, 64)`` and ``targets (N, 1, 3, 64, 64)``:

- (a) ``loaders.CubeBatchDataset(url, variables=[...], input_steps=2,
  target_steps=1, lead=1, input_dims={"lat": 64, "lon": 64}, batch_size=16,
  shuffle=True, seed=0)`` and its default ``.loader()`` (reads in this process,
  a thread reading ahead): graded; not graded, ``.loader(num_workers=2)``;
- (b) what a competent user writes today: two xbatcher ``BatchGenerator`` over
  ``cubes.open_cube(url)`` (xarray + dask; dask chunks follow the shards), one
  for the inputs (``time`` 2, overlap 1) and one for the targets over the time
  axis shifted by ``k - 1 + lead`` (xbatcher has no lead time), paired by
  ``xbatcher.loaders.torch.MapDataset``, batched by a torch ``DataLoader`` with
  ``--workers`` workers whose sampler lists the windows (gaps left out);
- (c) raw zarr, the practical limit: per batch and variable, one
  ``get_orthogonal_selection`` of the union of the batch's steps within the
  bounding box of its patches (each chunk read and decoded once per batch),
  the windows cut out with numpy; 3 variables x batches read ahead, ``--threads``
  reads in flight; through s3fs (``FsspecStore``) and through obstore
  (``ObjectStore`` over ``obstore.store.S3Store``).

The same windows for all: each *pass* reads ``--batches`` batches of epoch 0 of
(a), which orders the windows itself (the first pass of (a) over them says which
they are; a seeded uniform shuffle when (a) cannot be built). The passes read
successive, disjoint batches of that epoch (pass 0: batches 0..15, pass 1:
16..31, ...), as training would: no method re-reads windows it has read (and
(a)'s in-memory chunk cache only helps as it does in an epoch). Pass 0 warms up
(worker start-up, reported apart), passes 1..``--repeat`` are timed (best
kept; methods interleaved, the order rotating), the last gives the data-wait
fraction: with a simulated training step (``time.sleep(--step-ms)``: a GPU step
takes no CPU) after each batch, the fraction of wall time spent in ``next()``.
(b) is ~500x slower than the others: it reads only the first ``--b-windows``
windows of each pass, and one timed pass, so that the run takes minutes.

Reported per method: windows/s, MB/s of decoded float32 ``inputs + targets``
delivered, ratios to (b) and to (c) (the better of its two stores), S3 requests
per 16 windows (counted by the latency proxy), peak RSS of this process plus the
method's own child processes (workers, forkserver). Everything runs twice: on
loopback, and through a proxy process adding ``--latency-ms`` to every S3
request. Correctness: the first batch of every method equals (c)'s read of the
same windows (for (a), the windows its ``step``, ``cube``, ``lat``, ``lon``
name; NaN where NaN), ``step`` holds ``t, t+1, t+2``, (a) has as many windows as
the gap leaves and none touches it, and in every pass each method's per-window
checksums equal (c)'s (same windows, same order).

    .venv/bin/python benchmarks/climate_loader.py [--years 2 --grid 128x256 --latency-ms 20
        --out benchmarks/results/]

Prints markdown tables and the targets ((a) >= 3x (b), (a) >= 0.9x (c), in
both conditions) as PASS/FAIL; writes ``climate_loader.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _moto import bench_bucket, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path
from _proxy import start_proxy_process

use_dummy_credentials()

import psutil  # noqa: E402
import torch  # noqa: E402
import xbatcher  # noqa: E402
import zarr  # noqa: E402
from obstore.store import S3Store  # noqa: E402
from xbatcher.loaders.torch import MapDataset  # noqa: E402
from zarr.storage import FsspecStore, ObjectStore  # noqa: E402

from cubes import open_cube  # noqa: E402
from cubes.store import resolve_storage_options  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET, CUBE_KEY = "bench", "climate.zarr"
VARIABLES = ("T_surf", "q_H2O", "cldfrac")
K, M, LEAD = 2, 1, 1  # input steps, target steps, lead (steps after the last input)
OFFSETS = np.array([*range(K), *(K - 1 + LEAD + j for j in range(M))])  # steps of a window
TARGETS = [("b", 3.0), ("c", 0.9)]  # (a) must reach factor x method, in both conditions

Batch = tuple[np.ndarray, np.ndarray]  # inputs (N, K, V, P, P), targets (N, M, V, P, P)


# --- the cube and the windows -----------------------------------------------------------


@dataclass
class Slot:
    """The windows of one pass: ``size`` batches of epoch 0 from batch ``start`` on.

    ``batches`` holds their rows ``(start step, lat origin, lon origin)``, set by
    the first pass of (a) over them (or a seeded shuffle when (a) is missing).
    """

    start: int
    size: int
    batches: list[np.ndarray] | None = None

    def head(self, windows: int | None) -> Slot:
        """The same pass cut to its first ``windows`` windows (a last batch cut short)."""
        if windows is None or self.batches is None:
            return self
        cut, left = [], windows
        for rows in self.batches:
            if left <= 0:
                break
            cut.append(rows[:left])
            left -= len(rows)
        return Slot(self.start, len(cut), cut)

    @property
    def windows(self) -> int:
        return sum(len(rows) for rows in self.batches or [])


@dataclass
class Cube:
    """The cube on S3, its windows and the slots of the passes."""

    url: str
    present: np.ndarray
    n_lat: int
    n_lon: int
    patch: int
    slots: list[Slot] = field(default_factory=list)

    def windows(self) -> np.ndarray:
        """Every window whose steps are inside the axis and present, in (start, lat, lon) order."""
        starts = np.arange(len(self.present) - OFFSETS[-1])
        starts = starts[self.present[starts[:, None] + OFFSETS].all(axis=1)]
        lats = np.arange(0, self.n_lat - self.patch + 1, self.patch)
        lons = np.arange(0, self.n_lon - self.patch + 1, self.patch)
        grid = np.stack(np.meshgrid(starts, lats, lons, indexing="ij"), axis=-1)
        return grid.reshape(-1, 3).astype(np.int64)

    def shuffle_slots(self, batch_size: int, seed: int) -> None:
        """Fill the slots (a) left empty from a seeded uniform shuffle of the windows."""
        rows = self.windows()
        rows = rows[np.random.default_rng(seed).permutation(len(rows))]
        for slot in self.slots:
            if slot.batches is None:
                cut = [slot.start + i for i in range(slot.size + 1)]
                slot.batches = [
                    rows[a * batch_size : b * batch_size] for a, b in itertools.pairwise(cut)
                ]

    def touches_gap(self, rows: np.ndarray) -> bool:
        steps = rows[:, :1] + OFFSETS
        inside = (steps >= 0) & (steps < len(self.present))
        return bool(not inside.all() or not self.present[np.clip(steps, 0, None)].all())

    def mb(self, windows: int) -> float:
        """Decoded float32 MB of the inputs and targets of ``windows`` windows."""
        return windows * len(OFFSETS) * len(VARIABLES) * self.patch**2 * 4 / 1e6


def make_cube(endpoint: str, args: argparse.Namespace) -> Cube:
    """NetCDF files with the CLI into a local folder, ingested with the CLI onto S3."""
    url = f"s3://{BUCKET}/{CUBE_KEY}"
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    with tempfile.TemporaryDirectory(prefix="climate-bench-") as tmp:
        for what, command in (
            ("NetCDF files written", ["synth-climate", tmp, "--years", str(args.years),
                                      "--grid", args.grid, "--drop-step", args.drop_step]),
            ("Ingested", ["netcdf", tmp, url, "--endpoint-url", endpoint, "--no-progress"]),
        ):  # fmt: skip
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ingest", *command], env=env, cwd=REPO,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            print(f"{what} by python -m ingest in {time.perf_counter() - start:.0f} s", flush=True)
    ds = open_cube(url, endpoint_url=endpoint)
    present = np.asarray(ds["present"].values, dtype=bool)
    slots = [Slot(i * args.batches, args.batches) for i in range(args.repeat + 2)]
    return Cube(url, present, ds.sizes["lat"], ds.sizes["lon"], args.patch, slots)


# --- the methods ------------------------------------------------------------------------


class Method:
    """One way of delivering a slot's batches, in the slot's order."""

    key = ""
    label = ""
    graded = False
    limit: int | None = None  # reads only the first ``limit`` windows of each slot
    timed_passes: int | None = None  # at most this many timed passes (default: --repeat)

    def batches(self, slot: Slot) -> Iterator[Batch]:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _read_ahead(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any],
                depth: int) -> Iterator[Any]:  # fmt: skip
    """``map(fn, items)`` in ``pool``, in order, at most ``depth`` items in flight."""
    pending: deque[Future[Any]] = deque()
    items = iter(items)
    try:
        for item in itertools.islice(items, depth):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        for future in pending:
            future.cancel()


class RawZarr(Method):
    """(c) per batch and variable, one orthogonal selection of the steps it needs."""

    def __init__(self, cube: Cube, key: str, label: str, store: Any, threads: int) -> None:
        self.key, self.label, self.cube, self.threads = key, label, cube, threads
        group = zarr.open_group(store, mode="r", zarr_format=3)
        self.arrays = [group[name] for name in VARIABLES]
        self.pool = ThreadPoolExecutor(threads)

    def read_variable(self, item: tuple[np.ndarray, int]) -> np.ndarray:
        """Windows ``(N, K + M, P, P)`` of one variable: the union of their steps, read once.

        Within the bounding box of the patches. (Whole shards instead, which zarr
        fetches in one GET each rather than one GET per chunk after the shard's
        index, measured 0.5-0.6x as fast here, on loopback and with latency.)
        """
        rows, v = item
        p = self.cube.patch
        steps = rows[:, :1] + OFFSETS
        union = np.unique(steps)
        lat0, lon0 = int(rows[:, 1].min()), int(rows[:, 2].min())
        lat1, lon1 = int(rows[:, 1].max()) + p, int(rows[:, 2].max()) + p
        block = self.arrays[v].get_orthogonal_selection(
            (union, slice(lat0, lat1), slice(lon0, lon1))
        )
        out = np.empty((len(rows), len(OFFSETS), p, p), dtype=np.float32)
        for i, (row, where) in enumerate(zip(rows, np.searchsorted(union, steps), strict=True)):
            la, lo = row[1] - lat0, row[2] - lon0
            out[i] = block[where, la : la + p, lo : lo + p]
        return out

    def read(self, rows: np.ndarray) -> Batch:
        """One batch, not timed (the reference of the correctness checks)."""
        return _assemble([self.read_variable((rows, v)) for v in range(len(VARIABLES))])

    def batches(self, slot: Slot) -> Iterator[Batch]:
        assert slot.batches is not None
        items = ((rows, v) for rows in slot.batches for v in range(len(VARIABLES)))
        parts = _read_ahead(self.pool, self.read_variable, items, self.threads)
        while chunk := list(itertools.islice(parts, len(VARIABLES))):
            yield _assemble(chunk)

    def close(self) -> None:
        self.pool.shutdown()


def _assemble(per_variable: list[np.ndarray]) -> Batch:
    """``(N, K + M, P, P)`` per variable -> inputs ``(N, K, V, P, P)``, targets ``(N, M, ...)``."""
    windows = np.stack(per_variable, axis=2)
    return windows[:, :K], windows[:, K:]


def _obstore(endpoint: str) -> ObjectStore:
    # Credentials from the environment (the dummy ones, for moto).
    s3 = S3Store(
        BUCKET, prefix=CUBE_KEY, endpoint=endpoint, region="us-east-1",
        client_options={"allow_http": True},
    )  # fmt: skip
    return ObjectStore(s3, read_only=True)


def window_tensor(sample: Any) -> torch.Tensor:
    """An xbatcher sample (Dataset: time, lat, lon) -> ``(time, variable, lat, lon)``."""
    array = sample[list(VARIABLES)].to_array("variable").transpose("time", "variable", ...)
    return torch.from_numpy(np.ascontiguousarray(array.values))


class _ListSampler(torch.utils.data.Sampler[int]):
    """The generator indices of the current pass, in order (set before each pass)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


class Xbatcher(Method):
    """(b) two BatchGenerators (inputs; targets shifted by the lead) in a DataLoader."""

    key = "b"

    def __init__(self, cube: Cube, endpoint: str, batch_size: int, workers: int,
                 limit: int) -> None:  # fmt: skip
        self.label = (
            f"(b) xbatcher BatchGenerator x2 + MapDataset over open_cube (dask), "
            f"DataLoader {workers} workers; the first {limit} windows of a pass, 1 timed pass"
        )
        self.cube, self.limit, self.timed_passes = cube, limit, 1
        ds = open_cube(cube.url, endpoint_url=endpoint)[list(VARIABLES)]
        n, p, shift = ds.sizes["time"], cube.patch, K - 1 + LEAD
        # inputs at t .. t+K-1, targets at t+shift .. : both generators have n-shift-M+1 windows
        inputs = xbatcher.BatchGenerator(
            ds.isel(time=slice(0, n - shift - M + K)),
            input_dims={"time": K, "lat": p, "lon": p}, input_overlap={"time": K - 1},
        )  # fmt: skip
        targets = xbatcher.BatchGenerator(
            ds.isel(time=slice(shift, None)),
            input_dims={"time": M, "lat": p, "lon": p}, input_overlap={"time": M - 1},
        )  # fmt: skip
        if len(inputs) != len(targets):
            raise RuntimeError(f"{len(inputs)} input windows, {len(targets)} target windows")
        dataset = MapDataset(inputs, targets, transform=window_tensor,
                             target_transform=window_tensor)  # fmt: skip
        self.sampler = _ListSampler()
        # forkserver: fork + s3fs/dask hangs (FIELD-NOTES); the start method (a) uses.
        self.loader: torch.utils.data.DataLoader | None = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            multiprocessing_context="forkserver" if workers else None,
            persistent_workers=workers > 0,
        )  # fmt: skip

    def index(self, rows: np.ndarray) -> list[int]:
        """Generator indices of windows: xbatcher iterates time, then lat, then lon."""
        p = self.cube.patch
        n_lat, n_lon = self.cube.n_lat // p, self.cube.n_lon // p
        return (rows[:, 0] * n_lat * n_lon + rows[:, 1] // p * n_lon + rows[:, 2] // p).tolist()

    def batches(self, slot: Slot) -> Iterator[Batch]:
        assert slot.batches is not None and self.loader is not None
        self.sampler.indices = [i for rows in slot.batches for i in self.index(rows)]
        for x, y in self.loader:
            yield x.numpy(), y.numpy()

    def close(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()  # persistent workers: end them now
        self.loader = None


class Ours(Method):
    """(a) ``loaders.CubeBatchDataset`` and its ``.loader()``; it orders the windows itself."""

    def __init__(self, cube: Cube, endpoint: str, batch_size: int, workers: int,
                 threads: int) -> None:  # fmt: skip
        from loaders import CubeBatchDataset

        self.key = f"a-{workers}w" if workers else "a"
        self.graded = workers == 0
        note = "" if self.graded else ", not graded"
        self.label = f"(a) CubeBatchDataset(threads={threads}).loader({workers} workers){note}"
        self.dataset = CubeBatchDataset(
            cube.url, variables=list(VARIABLES), input_steps=K, target_steps=M, lead=LEAD,
            input_dims={"lat": cube.patch, "lon": cube.patch}, batch_size=batch_size,
            shuffle=True, seed=0, threads=threads, storage_options={"endpoint_url": endpoint},
        )  # fmt: skip
        self.loader = self.dataset.loader(num_workers=workers)
        self.start = self.loader.state_dict()  # epoch 0, batch 0
        self.rows: list[np.ndarray] = []  # the windows of the last pass, batch by batch
        self.first: dict[str, Any] | None = None  # the first batch of the last pass

    def batches(self, slot: Slot) -> Iterator[Batch]:
        """Batches ``slot.start ..`` of epoch 0 (resumed there as a training job would)."""
        self.loader.load_state_dict(dict(self.start, batch=slot.start))
        self.rows, self.first = [], None
        iterator = iter(self.loader)
        try:
            for batch in itertools.islice(iterator, slot.size):
                self.rows.append(ours_rows(batch))
                self.first = self.first or batch
                yield batch["inputs"].numpy(), batch["targets"].numpy()
        finally:
            iterator.close()  # stops the read-ahead within the pass (its cost is counted)

    def close(self) -> None:
        self.loader.close()


def ours_rows(batch: dict[str, Any]) -> np.ndarray:
    """The windows of a batch of (a) as rows ``(start, lat, lon)``."""
    columns = [batch["step"][:, 0], batch["lat"], batch["lon"]]
    return np.stack([c.numpy() for c in columns], axis=1).astype(np.int64)


def build_methods(cube: Cube, endpoint: str, args: argparse.Namespace) -> list[Method]:
    """Every method, reading through ``endpoint``; a method that fails to build is skipped."""
    options = resolve_storage_options(cube.url, endpoint_url=endpoint)
    s3fs_store = functools.partial(
        FsspecStore.from_url, cube.url, storage_options=options, read_only=True
    )
    makers: list[Callable[[], Method]] = [
        lambda: Ours(cube, endpoint, args.batch_size, 0, args.threads),
        lambda: Ours(cube, endpoint, args.batch_size, args.workers, args.threads),
        lambda: Xbatcher(cube, endpoint, args.batch_size, args.workers, args.b_windows),
        lambda: RawZarr(cube, "c-s3fs", "(c) zarr orthogonal selection per batch "
                        "(FsspecStore: s3fs)", s3fs_store(), args.threads),
        lambda: RawZarr(cube, "c-obstore", "(c) zarr orthogonal selection per batch "
                        "(ObjectStore: obstore)", _obstore(endpoint), args.threads),
    ]  # fmt: skip
    methods = []
    for make in makers:
        try:
            methods.append(make())
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"  ! could not set up a method: {type(exc).__name__}: {exc}", flush=True)
    return methods


# --- measuring --------------------------------------------------------------------------


class PeakRSS:
    """Samples, in a thread, the RSS of this process plus the child processes of a method.

    The children that appear while a method is watched are its own (its loader's
    workers, the forkserver); those of other methods, and ``infra`` (the servers),
    are left out. ``detail``: RSS by process name at the peak.
    """

    def __init__(self, infra: set[int], interval: float = 0.02) -> None:
        self.me, self.infra, self.interval = psutil.Process(), infra, interval
        self.peak, self.detail = 0, {}
        self.owned: dict[str, set[int]] = {}
        self.current: str | None = None
        self.lock = threading.Lock()  # a sample is of one method, start to end
        threading.Thread(target=self._run, daemon=True).start()

    def _children(self) -> set[int]:
        with suppress(psutil.Error):
            return {p.pid for p in self.me.children(recursive=True)} - self.infra
        return set()

    def _others(self, key: str | None) -> set[int]:
        return set().union(*(v for k, v in self.owned.items() if k != key))

    def rss(self) -> int:
        """This process, and the children of the method watched (all, when none is)."""
        return sum(self._by_process().values())

    def _by_process(self) -> dict[str, int]:
        out = {f"this ({self.me.pid})": self.me.memory_info().rss}
        for pid in self._children() - self._others(self.current):
            with suppress(psutil.Error):  # a worker that just exited
                child = psutil.Process(pid)
                out[f"{child.name()} ({pid})"] = child.memory_info().rss
        return out

    def _sample(self) -> None:
        with self.lock, suppress(psutil.Error):
            detail = self._by_process()
            if sum(detail.values()) > self.peak:
                self.peak, self.detail = sum(detail.values()), detail

    def _run(self) -> None:
        while True:
            self._sample()
            time.sleep(self.interval)

    @contextmanager
    def watch(self, key: str) -> Iterator[None]:
        """Peak RSS of this process and ``key``'s children while in the block: ``peak``."""
        before = self._children()
        with self.lock:
            self.current, self.peak = key, 0
        self._sample()
        try:
            yield
        finally:
            self._sample()
            with self.lock:
                new = self._children() - before - self._others(key)
                self.owned.setdefault(key, set()).update(new)
                self.current = None


@dataclass
class Result:
    """What was measured for one method in one condition."""

    key: str
    label: str
    graded: bool
    rates: list[float] = field(default_factory=list)  # windows/s of the timed passes
    first_pass_s: float | None = None
    peak_rss: int = 0
    peak_rss_by_process: dict[str, int] = field(default_factory=dict)
    data_wait: float | None = None
    requests_per_batch: float | None = None  # per batch_size windows ((b): partial batches)
    checks: list[str] = field(default_factory=list)  # failures; empty when correct
    error: str | None = None

    @property
    def windows_per_s(self) -> float | None:
        return max(self.rates) if self.rates and not self.checks else None


def _checksums(batch: Batch) -> list[float]:
    """Per window, the sum of a strided sub-sample of inputs and targets, NaN as 0."""
    x, y = (t[..., ::7, ::5].reshape(len(t), -1) for t in batch)
    return (
        np.nansum(x, axis=1, dtype=np.float64) + np.nansum(y, axis=1, dtype=np.float64)
    ).tolist()


@dataclass
class Pass:
    """One pass of one method: seconds, fraction waiting, first batch, per-window checksums."""

    seconds: float
    waiting: float
    windows: int
    expected: int  # windows it should have delivered
    first: Batch | None
    sums: list[float]


class Run:
    """Passes over the slots for every method of one condition."""

    def __init__(self, cube: Cube, args: argparse.Namespace, rss: PeakRSS,
                 stats: Callable[[], int] | None) -> None:  # fmt: skip
        self.cube, self.args, self.rss, self.stats = cube, args, rss, stats

    def one_pass(self, m: Method, slot: Slot, r: Result, step_s: float) -> Pass:
        before = self.stats() if self.stats else None
        sums: list[float] = []
        first, windows, waited = None, 0, 0.0
        start = time.perf_counter()
        part = slot.head(m.limit)
        batches = m.batches(part)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - t
            if batch is None:
                break
            first = first or batch
            windows += len(batch[0])
            sums += _checksums(batch)
            time.sleep(step_s)
        seconds = time.perf_counter() - start
        if before is not None and self.stats and windows:
            r.requests_per_batch = (self.stats() - before) / windows * self.args.batch_size
        if isinstance(m, Ours) and slot.batches is None:
            slot.batches = m.rows  # (a) picked the windows of this slot
        expected = slot.head(m.limit).windows
        return Pass(seconds, waited / seconds, windows, expected, first, sums)

    def timed(self, m: Method, slot: Slot, r: Result, step_s: float = 0.0) -> Pass | None:
        """One pass, its peak RSS recorded; None when it failed."""
        with self.rss.watch(m.key):
            done = _guarded(r, lambda: self.one_pass(m, slot, r, step_s))
        if self.rss.peak > r.peak_rss:
            r.peak_rss, r.peak_rss_by_process = self.rss.peak, self.rss.detail
        return done


def _guarded(result: Result, fn: Callable[[], Any]) -> Any:
    if result.error:
        return None
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken method must not end the run
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {result.key}: {result.error}", flush=True)
        return None


def check_sums(slot: Slot, passes: dict[str, Pass], results: dict[str, Result]) -> None:
    """Every method delivered the slot's windows in its order: checksums equal (c)'s."""
    keys = sorted(passes, key=lambda k: not k.startswith("c-"))  # (c) is the reference
    if not keys:
        return
    reference = passes[keys[0]].sums
    for key in keys:
        r, sums, expected = results[key], passes[key].sums, passes[key].expected
        if len(sums) != expected or not np.allclose(sums, reference[: len(sums)], rtol=1e-9):
            r.checks.append(f"batches {slot.start}+: windows differ from ({keys[0]})'s")


def check_first_batch(m: Method, r: Result, done: Pass, slot: Slot, reference: RawZarr) -> None:
    """The first batch equals (c)'s read of the same windows; (a)'s batch is well formed."""
    if done.first is None:
        return  # nothing delivered: the checksums say so
    head = slot.head(m.limit).batches or [np.zeros((0, 3), dtype=np.int64)]
    rows = ours_rows(m.first) if isinstance(m, Ours) and m.first else head[0]
    (x, y), (ex, ey) = done.first, reference.read(rows)
    if x.shape != ex.shape or y.shape != ey.shape:
        r.checks.append(f"shapes {x.shape}/{y.shape}, expected {ex.shape}/{ey.shape}")
    elif not (np.array_equal(x, ex, equal_nan=True) and np.array_equal(y, ey, equal_nan=True)):
        r.checks.append("first batch differs from (c)'s read of the same windows")
    if isinstance(m, Ours) and m.first is not None:
        if not np.array_equal(m.first["step"].numpy(), rows[:, :1] + OFFSETS):
            r.checks.append("step does not hold the inputs, then the target, lead 1")
        if m.first["cube"].numpy().any():
            r.checks.append("cube is not 0 (one cube)")
        if any(reference.cube.touches_gap(b) for b in m.rows):
            r.checks.append("a window needs a missing step")
        if m.dataset.n_samples != len(reference.cube.windows()):
            r.checks.append(f"{m.dataset.n_samples} windows in an epoch, expected "
                            f"{len(reference.cube.windows())}")  # fmt: skip


def check_first_batches(methods: list[Method], slot: Slot, passes: dict[str, Pass],
                        results: dict[str, Result]) -> None:  # fmt: skip
    """:func:`check_first_batch` for every method that delivered a pass of ``slot``."""
    reference = next((m for m in methods if isinstance(m, RawZarr)), None)
    for m in methods:
        done, r = passes.get(m.key), results[m.key]
        if done is not None and reference is not None:
            _guarded(r, functools.partial(check_first_batch, m, r, done, slot, reference))


def measure(methods: list[Method], run: Run) -> dict[str, Result]:
    """Slot 0 warms up (and is checked), slots 1..repeat are timed, the last: data-wait.

    In each slot the graded (a) goes first where the slot has no windows yet: it
    picks them; otherwise the order rotates.
    """
    args, cube = run.args, run.cube
    results = {m.key: Result(m.key, m.label, m.graded) for m in methods}
    for i, slot in enumerate(cube.slots):
        order = methods[i % len(methods) :] + methods[: i % len(methods)]
        if slot.batches is None:
            order.sort(key=lambda m: not (isinstance(m, Ours) and m.graded))
        step_s = args.step_ms / 1000 if i == len(cube.slots) - 1 else 0.0
        passes: dict[str, Pass] = {}
        for m in order:
            r = results[m.key]
            if 0 < i <= args.repeat and m.timed_passes and i > m.timed_passes:
                continue  # (b): fewer timed passes
            if slot.batches is None and not isinstance(m, Ours):
                cube.shuffle_slots(args.batch_size, seed=0)
                print("  windows: a seeded uniform shuffle ((a) gave none)", flush=True)
            done = run.timed(m, slot, r, step_s)
            if done is None:
                continue
            passes[m.key] = done
            if i == 0:
                r.first_pass_s = done.seconds
            elif step_s:
                r.data_wait = done.waiting
            else:
                r.rates.append(done.windows / done.seconds)
                print(f"  {m.key:10s} {r.rates[-1]:7.1f} windows/s", flush=True)
        check_sums(slot, passes, results)
        if i == 0:
            check_first_batches(methods, slot, passes, results)
    for m in methods:
        _guarded(results[m.key], m.close)
    return results


def _proxy_requests(url: str) -> Callable[[], int]:
    def count() -> int:
        with urllib.request.urlopen(f"{url}/__proxy_stats") as answer:
            return int(json.load(answer)["requests"])

    return count


# --- reporting --------------------------------------------------------------------------


def _bases(results: dict[str, Result]) -> dict[str, float | None]:
    """windows/s of (b) and of (c) (the better of its two stores: the practical limit)."""
    c = [r.windows_per_s for k, r in results.items() if k.startswith("c-")]
    return {
        "b": results["b"].windows_per_s if "b" in results else None,
        "c": max((v for v in c if v), default=None),
    }


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def table(title: str, results: dict[str, Result], cube: Cube) -> str:
    """A markdown table of one condition."""
    base = _bases(results)
    lines = [
        f"#### {title}", "",
        "| method | windows/s | MB/s | vs (b) | vs (c) | peak RSS GB | data-wait | "
        "1st pass s | requests/batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in results.values():
        speed = r.windows_per_s
        note = r.error or "; ".join(r.checks)
        label = f"{r.label} **[{note}]**" if note else r.label
        cells = [
            "-" if speed is None else f"{speed:.1f}",
            "-" if speed is None else f"{cube.mb(1) * speed:.1f}",
            _ratio(speed, base["b"]),
            _ratio(speed, base["c"]),
            f"{r.peak_rss / 1e9:.2f}",
            "-" if r.data_wait is None else f"{r.data_wait:.0%}",
            "-" if r.first_pass_s is None else f"{r.first_pass_s:.1f}",
            "-" if r.requests_per_batch is None else f"{r.requests_per_batch:.0f}",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, Result]) -> list[dict[str, Any]]:
    """The targets for the graded (a): PASS/FAIL with the ratio."""
    base = _bases(results)
    out = []
    graded = [r for r in results.values() if r.graded] or [Result("a", "", True)]
    for r in graded:
        for other, factor in TARGETS:
            limit, speed = base[other], r.windows_per_s
            ratio = speed / limit if limit and speed else None
            ok = ratio is not None and ratio >= factor
            out.append({"method": r.key, "vs": other, "target": factor, "ratio": ratio, "pass": ok})
    return out


def _target_lines(name: str, checks: list[dict[str, Any]]) -> list[str]:
    return [
        f"{'PASS' if t['pass'] else 'FAIL'}  {name}: ({t['method']}) >= {t['target']}x ({t['vs']})"
        + (f"  -> {t['ratio']:.2f}x" if t["ratio"] is not None else "  -> not measured")
        for t in checks
    ]


# --- main -------------------------------------------------------------------------------


def run_condition(name: str, endpoint: str, cube: Cube, args: argparse.Namespace,
                  rss: PeakRSS, stats: Callable[[], int] | None) -> dict[str, Any]:  # fmt: skip
    print(f"\n== {name} ==", flush=True)
    methods = build_methods(cube, endpoint, args)
    results = measure(methods, Run(cube, args, rss, stats))
    return {
        "title": name,
        "results": {k: vars(r) | {"windows_per_s": r.windows_per_s} for k, r in results.items()},
        "table": table(name, results, cube),
        "targets": targets(results),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=2, help="years of daily steps (default 2)")
    parser.add_argument("--grid", default="128x256", help="NLATxNLON (default 128x256)")
    parser.add_argument("--drop-step", default="2000-03-04", help="the gap (default 2000-03-04)")
    parser.add_argument("--patch", type=int, default=64, help="patch side (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per batch")
    parser.add_argument("--batches", type=int, default=16, help="batches per pass (default 16)")
    parser.add_argument("--b-windows", type=int, default=8,
                        help="(b) reads the first N windows of each pass (default 8)")  # fmt: skip
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per request")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per method")
    parser.add_argument("--threads", type=int, default=16, help="threads / reads in flight")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--step-ms", type=float, default=50.0,
                        help="simulated training step per batch (default 50)")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in ("CACHE_DIR", "CACHE_GB"):  # (a) reads S3 in every pass, as the others do
        if os.environ.pop(name, None) is not None:
            print(f"Ignoring {name} from the environment: no disk cache in this benchmark")
    started = time.perf_counter()
    proxy = None
    with bench_bucket(BUCKET):
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        try:
            cube = make_cube(endpoint, args)
            rss = PeakRSS({p.pid for p in psutil.Process().children(recursive=True)})
            args.baseline_rss_gb = rss.rss() / 1e9
            conditions = {"loopback": run_condition("loopback", endpoint, cube, args, rss, None)}
            proxy, proxy_url = start_proxy_process(endpoint, args.latency_ms)
            rss.infra.add(proxy.pid)
            name = f"{args.latency_ms:g} ms per request"
            stats = _proxy_requests(proxy_url)
            conditions[name] = run_condition(name, proxy_url, cube, args, rss, stats)
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait()
    args.wall_s = time.perf_counter() - started
    report(args, cube, conditions)


def report(args: argparse.Namespace, cube: Cube, conditions: dict[str, dict[str, Any]]) -> None:
    windows, timed = len(cube.windows()), args.batches * args.batch_size
    print(
        f"\n{len(cube.present)} daily steps ({(~cube.present).sum()} missing), grid "
        f"{cube.n_lat}x{cube.n_lon}, {windows} windows of {K} input + {M} target steps "
        f"(lead {LEAD}) x {len(VARIABLES)} variables x {cube.patch}x{cube.patch}; passes of "
        f"{args.batches} batches of {args.batch_size} ({cube.mb(timed):.0f} MB of float32; "
        f"(b): the first {args.b_windows} windows); moto_server in its own process on 127.0.0.1; "
        f"{args.threads} threads; best of {args.repeat}; data-wait with a {args.step_ms:g} ms "
        f"step per batch; {os.cpu_count()} CPUs; peak RSS includes this process "
        f"({args.baseline_rss_gb:.2f} GB before the first method); wall {args.wall_s:.0f} s\n"
    )
    lines = []
    for name, cond in conditions.items():
        print(cond["table"] + "\n")
        lines += _target_lines(name, cond["targets"])
    print("\n".join(lines))
    summary = {
        "config": vars(args) | {"windows": windows, "cpus": os.cpu_count(),
                                "when": time.strftime("%Y-%m-%d %H:%M")},
        "conditions": conditions,
    }  # fmt: skip
    path = os.path.join(args.out, "climate_loader.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
