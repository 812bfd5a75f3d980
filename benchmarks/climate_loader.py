"""Forecasting windows from a climate cube, against what users write today, in one run.

``python -m ingest synth-climate`` writes ``--years`` of monthly CF NetCDF files
of daily steps on a ``--grid`` (one step left out with ``--drop-step``: a gap),
and ``python -m ingest netcdf`` ingests them into a cube on a moto S3 server
running as its own process on 127.0.0.1. A *window* is one sample: ``k = 2``
input steps and ``m = 1`` target step ``lead = 1`` step after the last input
(steps ``t, t+1`` -> ``t+2``), of the variables T_surf, q_H2O and cldfrac, on
one 64x64 patch of the patches tiling the grid. A window that needs a missing
step (``present`` False) is never delivered. Batches of 16 windows, shuffled
with a fixed seed. Every method reads the same ``--batches`` batches (the first
ones of epoch 0 of (a), which picks its own order; a seeded uniform shuffle when
(a) cannot be built), and delivers them as float32 ``inputs (N, 2, 3, 64, 64)``
and ``targets (N, 1, 3, 64, 64)``:

- (a) ``loaders.CubeBatchDataset(url, variables=..., input_steps=2,
  target_steps=1, lead=1, input_dims={"lat": 64, "lon": 64}, batch_size=16,
  shuffle=True, seed=0)`` and its default ``.loader()`` (reads in this
  process, a thread reading ahead): graded; not graded, ``.loader(num_workers=2)``;
- (b) what a competent user writes today: two xbatcher ``BatchGenerator`` over
  ``cubes.open_cube(url)`` (xarray + dask; dask chunks are the cube's shards),
  one for the inputs (``time`` 2, overlap 1) and one for the targets over the
  time axis shifted by ``k - 1 + lead`` (xbatcher has no lead time), paired by
  ``xbatcher.loaders.torch.MapDataset``; a torch ``DataLoader`` with
  ``--workers`` workers batches them, its sampler lists the windows (those
  touching a gap left out);
- (c) raw zarr, the practical limit: per batch and variable, one
  ``get_orthogonal_selection`` of the union of the batch's steps and the
  bounding box of its patches (each chunk read and decoded once per batch), the
  windows cut from it with numpy; the three variables and ``--threads`` reads
  in flight at once, batches read ahead; through s3fs (``FsspecStore``) and
  through obstore (``ObjectStore`` over ``obstore.store.S3Store``).

Reported per method: windows/s, MB/s of decoded float32 ``inputs + targets``
delivered, ratios to (b) and (c) (the better of its stores), requests per batch
(counted by the proxy), peak RSS of this process and the method's worker
processes, and the data-wait fraction: with a simulated training step
(``time.sleep(--step-ms)``: a GPU step takes no CPU) after each batch, the
fraction of wall time spent in ``next()``. Each timing is the best of
``--repeat`` passes, methods interleaved, after one warm-up pass (worker start,
reported apart). Everything runs twice: on loopback, and through a proxy process
that adds ``--latency-ms`` to every S3 request. Correctness: the first batch of
every method equals (c)'s read of the same windows (for (a), the windows its
``step``, ``cube``, ``lat``, ``lon`` name; NaN where NaN), no window of (a)
touches the gap, and a checksum of every pass equals that of the first method.

    .venv/bin/python benchmarks/climate_loader.py [--years 2 --grid 128x256 --latency-ms 20
        --out benchmarks/results/]

Prints markdown tables and the targets ((a) >= 3x (b), (a) >= 0.9x (c)) as
PASS/FAIL; writes ``climate_loader.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
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
class Cube:
    """The cube on S3 and its windows: rows ``(start step, lat origin, lon origin)``."""

    url: str
    present: np.ndarray
    n_lat: int
    n_lon: int
    patch: int
    plan: list[np.ndarray] = field(default_factory=list)  # the timed batches, rows as above

    @property
    def span(self) -> int:
        return int(OFFSETS[-1]) + 1

    def valid_starts(self) -> np.ndarray:
        """Start steps of the windows whose every step is inside the axis and present."""
        n = len(self.present)
        starts = np.arange(n - self.span + 1)
        ok = self.present[starts[:, None] + OFFSETS].all(axis=1)
        return starts[ok]

    def windows(self) -> np.ndarray:
        """Every window, in (start, lat, lon) order."""
        lats = np.arange(0, self.n_lat - self.patch + 1, self.patch)
        lons = np.arange(0, self.n_lon - self.patch + 1, self.patch)
        grid = np.stack(np.meshgrid(self.valid_starts(), lats, lons, indexing="ij"), axis=-1)
        return grid.reshape(-1, 3).astype(np.int64)

    def shuffled_plan(self, batches: int, batch_size: int, seed: int) -> list[np.ndarray]:
        """The first ``batches`` batches of a seeded uniform shuffle of the windows."""
        rows = self.windows()
        rows = rows[np.random.default_rng(seed).permutation(len(rows))]
        return [rows[i : i + batch_size] for i in range(0, batches * batch_size, batch_size)]

    def touches_gap(self, rows: np.ndarray) -> bool:
        steps = rows[:, :1] + OFFSETS
        inside = (steps >= 0) & (steps < len(self.present))
        return bool(not inside.all() or not self.present[steps].all())

    def mb(self, windows: int) -> float:
        return windows * len(OFFSETS) * len(VARIABLES) * self.patch**2 * 4 / 1e6


def make_cube(endpoint: str, args: argparse.Namespace) -> Cube:
    """NetCDF files with the CLI into a local folder, ingested with the CLI onto S3."""
    url = f"s3://{BUCKET}/{CUBE_KEY}"
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    with tempfile.TemporaryDirectory(prefix="climate-bench-") as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ingest", "synth-climate", tmp, "--years", str(args.years),
             "--grid", args.grid, "--drop-step", args.drop_step],
            env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"NetCDF files written in {time.perf_counter() - start:.0f} s", flush=True)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ingest", "netcdf", tmp, url, "--endpoint-url", endpoint,
             "--no-progress"],
            env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"Ingested with python -m ingest in {time.perf_counter() - start:.0f} s", flush=True)
    ds = open_cube(url, endpoint_url=endpoint)
    present = np.asarray(ds["present"].values, dtype=bool)
    return Cube(url, present, ds.sizes["lat"], ds.sizes["lon"], args.patch)


# --- the methods ------------------------------------------------------------------------


class Method:
    """One way of delivering the plan's batches; ``batches`` yields them in plan order."""

    key = ""
    label = ""
    graded = False
    workers = False  # its reading runs in worker processes

    def batches(self, plan: list[np.ndarray]) -> Iterator[Batch]:
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
    """(c) per batch and variable, one orthogonal selection of the steps and patches it needs."""

    def __init__(self, cube: Cube, key: str, label: str, store: Any, threads: int) -> None:
        self.key, self.label, self.cube, self.threads = key, label, cube, threads
        group = zarr.open_group(store, mode="r", zarr_format=3)
        self.arrays = [group[name] for name in VARIABLES]
        self.pool = ThreadPoolExecutor(threads)

    def read_variable(self, item: tuple[np.ndarray, int]) -> np.ndarray:
        """Windows ``(N, K + M, P, P)`` of one variable."""
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

    def batches(self, plan: list[np.ndarray]) -> Iterator[Batch]:
        items = ((rows, v) for rows in plan for v in range(len(VARIABLES)))
        parts = _read_ahead(self.pool, self.read_variable, items, self.threads)
        while chunk := list(itertools.islice(parts, len(VARIABLES))):
            yield _assemble(chunk)

    def close(self) -> None:
        self.pool.shutdown()


def _assemble(per_variable: list[np.ndarray]) -> Batch:
    """``(N, K + M, P, P)`` per variable -> inputs ``(N, K, V, P, P)``, targets ``(N, M, V, P, P)``."""
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


class _PlanSampler(torch.utils.data.Sampler[int]):
    """The generator indices of the current plan, in order (set before each pass)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


class Xbatcher(Method):
    """(b) two BatchGenerators (inputs; targets shifted by the lead) in a DataLoader."""

    key = "b"

    def __init__(self, cube: Cube, endpoint: str, batch_size: int, workers: int) -> None:
        self.label = (
            f"(b) xbatcher BatchGenerator x2 + MapDataset over open_cube (dask), "
            f"DataLoader {workers} workers"
        )
        self.cube, self.workers = cube, workers > 0
        ds = open_cube(cube.url, endpoint_url=endpoint)[list(VARIABLES)]
        n, p, shift = ds.sizes["time"], cube.patch, K - 1 + LEAD
        inputs = xbatcher.BatchGenerator(
            ds.isel(time=slice(0, n - cube.span + K)),
            input_dims={"time": K, "lat": p, "lon": p}, input_overlap={"time": K - 1},
        )  # fmt: skip
        targets = xbatcher.BatchGenerator(
            ds.isel(time=slice(shift, None)),
            input_dims={"time": M, "lat": p, "lon": p}, input_overlap={"time": M - 1},
        )  # fmt: skip
        if len(inputs) != len(targets):
            raise RuntimeError(f"{len(inputs)} input windows, {len(targets)} target windows")
        self.dataset = MapDataset(
            inputs, targets, transform=window_tensor, target_transform=window_tensor
        )
        self.sampler = _PlanSampler()
        # forkserver: fork + s3fs/dask hangs (FIELD-NOTES); the start method (a) uses.
        context = "forkserver" if workers else None
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            multiprocessing_context=context, persistent_workers=workers > 0,
        )  # fmt: skip

    def index(self, rows: np.ndarray) -> list[int]:
        """Generator indices of windows: xbatcher iterates time, then lat, then lon."""
        p = self.cube.patch
        n_lat, n_lon = self.cube.n_lat // p, self.cube.n_lon // p
        return (rows[:, 0] * n_lat * n_lon + rows[:, 1] // p * n_lon + rows[:, 2] // p).tolist()

    def batches(self, plan: list[np.ndarray]) -> Iterator[Batch]:
        self.sampler.indices = [i for rows in plan for i in self.index(rows)]
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
        self.graded, self.workers = workers == 0, workers > 0
        note = "" if self.graded else ", not graded"
        self.label = f"(a) CubeBatchDataset(threads={threads}).loader({workers} workers){note}"
        self.cube = cube
        self.dataset = CubeBatchDataset(
            cube.url, variables=list(VARIABLES), input_steps=K, target_steps=M, lead=LEAD,
            input_dims={"lat": cube.patch, "lon": cube.patch}, batch_size=batch_size,
            shuffle=True, seed=0, threads=threads,
            storage_options={"endpoint_url": endpoint},
        )  # fmt: skip
        self.loader = self.dataset.loader(num_workers=workers)
        self.start = self.loader.state_dict()  # epoch 0, batch 0: every pass starts here
        self.rows: list[np.ndarray] = []  # the windows of the last pass, batch by batch
        self.first: dict[str, Any] | None = None  # the first batch of the last pass

    def batches(self, plan: list[np.ndarray]) -> Iterator[Batch]:
        """The first ``len(plan)`` batches of epoch 0 (the plan is (a)'s own, see ``take``)."""
        self.loader.load_state_dict(self.start)
        self.rows, self.first = [], None
        for batch in itertools.islice(self.loader, len(plan)):
            self.rows.append(ours_rows(batch))
            if self.first is None:
                self.first = batch
            yield batch["inputs"].numpy(), batch["targets"].numpy()

    def take(self, n: int) -> list[np.ndarray]:
        """The windows of the first ``n`` batches of epoch 0, read by a pass (the plan)."""
        for _ in self.batches([np.zeros((0, 3), dtype=np.int64)] * n):
            pass
        return self.rows

    def close(self) -> None:
        dataloader = self.loader.dataloader
        iterator = getattr(dataloader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()


def ours_rows(batch: dict[str, Any]) -> np.ndarray:
    """The windows of a batch of (a) as rows ``(start, lat, lon)``."""
    return np.stack(
        [batch["step"][:, 0].numpy(), batch["lat"].numpy(), batch["lon"].numpy()], axis=1
    ).astype(np.int64)


def build_methods(cube: Cube, endpoint: str, args: argparse.Namespace) -> list[Method]:
    """Every method, reading through ``endpoint``; a method that fails to build is skipped."""
    options = resolve_storage_options(cube.url, endpoint_url=endpoint)
    makers: list[Callable[[], Method]] = [
        lambda: Ours(cube, endpoint, args.batch_size, 0, args.threads),
        lambda: Ours(cube, endpoint, args.batch_size, args.workers, args.threads),
        lambda: Xbatcher(cube, endpoint, args.batch_size, args.workers),
        lambda: RawZarr(cube, "c-s3fs", "(c) zarr orthogonal selection (FsspecStore: s3fs)",
                        FsspecStore.from_url(cube.url, storage_options=options, read_only=True),
                        args.threads),
        lambda: RawZarr(cube, "c-obstore", "(c) zarr orthogonal selection (ObjectStore: obstore)",
                        _obstore(endpoint), args.threads),
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
    """Samples, in a thread, the RSS of this process and its children outside ``infra``."""

    def __init__(self, infra: set[int], interval: float = 0.02) -> None:
        self.me, self.infra, self.interval, self.peak = psutil.Process(), infra, interval, 0
        threading.Thread(target=self._run, daemon=True).start()

    def rss(self) -> int:
        total = self.me.memory_info().rss
        for child in self.me.children(recursive=True):
            if child.pid not in self.infra:
                with suppress(psutil.Error):  # a worker that just exited
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while True:
            with suppress(psutil.Error):
                self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Peak RSS while in the block: ``peak``."""
        self.peak = self.rss()
        yield
        self.peak = max(self.peak, self.rss())


@dataclass
class Result:
    """What was measured for one method in one condition."""

    key: str
    label: str
    graded: bool
    times: list[float] = field(default_factory=list)
    first_pass_s: float | None = None
    peak_rss: int = 0
    data_wait: float | None = None
    requests_per_batch: float | None = None
    checks: list[str] = field(default_factory=list)  # failures; empty when correct
    error: str | None = None

    def windows_per_s(self, windows: int) -> float | None:
        return windows / min(self.times) if self.times and not self.checks else None


def _checksum(batch: Batch) -> float:
    """Sum of a strided sub-sample of both tensors, NaN as 0 (float64: order-insensitive)."""
    return sum(float(np.nansum(t[..., ::7, ::5], dtype=np.float64)) for t in batch)


class Run:
    """Passes over the plan for every method of one condition."""

    def __init__(self, cube: Cube, args: argparse.Namespace, rss: PeakRSS,
                 stats: Callable[[], int] | None) -> None:  # fmt: skip
        self.cube, self.args, self.rss, self.stats = cube, args, rss, stats
        self.reference: float | None = None  # checksum of a pass of the first method

    def one_pass(self, m: Method, r: Result, step_s: float = 0.0) -> tuple[float, float]:
        """Seconds of one pass over the plan, and the fraction of them spent waiting."""
        before = self.stats() if self.stats else None
        n = checksum = waited = 0.0
        start = time.perf_counter()
        batches = m.batches(self.cube.plan)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - t
            if batch is None:
                break
            n, checksum = n + len(batch[0]), checksum + _checksum(batch)
            time.sleep(step_s)
        seconds = time.perf_counter() - start
        if before is not None and self.stats:
            r.requests_per_batch = (self.stats() - before) / len(self.cube.plan)
        self.check(r, int(n), checksum)
        return seconds, waited / seconds

    def check(self, r: Result, n: int, checksum: float) -> None:
        windows = sum(len(rows) for rows in self.cube.plan)
        if self.reference is None:
            self.reference = checksum
        if n != windows or not np.isclose(checksum, self.reference, rtol=1e-9):
            r.checks.append(f"pass delivered {n} windows, checksum {checksum:.6g}")

    def timed(self, m: Method, r: Result, step_s: float = 0.0) -> tuple[float, float] | None:
        with self.rss.watch():
            out = _guarded(r, lambda: self.one_pass(m, r, step_s))
        r.peak_rss = max(r.peak_rss, self.rss.peak)
        return out


def _guarded(result: Result, fn: Callable[[], Any]) -> Any:
    if result.error:
        return None
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken method must not end the run
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {result.key}: {result.error}", flush=True)
        return None


def first_batch(m: Method, rows: np.ndarray) -> tuple[np.ndarray, Batch]:
    """The windows and tensors of ``m``'s first batch (not timed)."""
    if isinstance(m, Ours):
        assert m.first is not None, "probe after a pass of (a)"
        return ours_rows(m.first), (m.first["inputs"].numpy(), m.first["targets"].numpy())
    return rows, next(iter(m.batches([rows])))


def check_first_batch(m: Method, r: Result, reference: RawZarr) -> None:
    """The first batch equals (c)'s read of the same windows; (a)'s batch is well formed."""
    rows, (x, y) = first_batch(m, reference.cube.plan[0])
    ex, ey = reference.read(rows)
    if x.shape != ex.shape or y.shape != ey.shape:
        r.checks.append(f"shapes {x.shape}/{y.shape}, expected {ex.shape}/{ey.shape}")
    elif not (np.array_equal(x, ex, equal_nan=True) and np.array_equal(y, ey, equal_nan=True)):
        r.checks.append("first batch differs from (c)'s read of the same windows")
    if isinstance(m, Ours):
        assert m.first is not None
        if not np.array_equal(m.first["step"].numpy(), rows[:, :1] + OFFSETS):
            r.checks.append("step does not hold the inputs, then the target, lead 1")
        if m.first["cube"].numpy().any():
            r.checks.append("cube is not 0 (one cube)")
        if any(reference.cube.touches_gap(b) for b in m.rows):
            r.checks.append("a window needs a missing step")


def measure(methods: list[Method], run: Run) -> dict[str, Result]:
    """Warm up (the first pass of (a) sets the plan), check, time, then data-wait."""
    args, cube = run.args, run.cube
    results = {m.key: Result(m.key, m.label, m.graded) for m in methods}
    ours = next((m for m in methods if isinstance(m, Ours) and m.graded), None)
    if not cube.plan and ours is not None:
        r = results[ours.key]
        with run.rss.watch():
            start = time.perf_counter()
            cube.plan = _guarded(r, lambda: ours.take(args.batches)) or []
            r.first_pass_s = time.perf_counter() - start
        r.peak_rss = run.rss.peak
    if not cube.plan:
        cube.plan = cube.shuffled_plan(args.batches, args.batch_size, seed=0)
        print("  the plan: a seeded uniform shuffle ((a) gave none)", flush=True)
    # warm-up passes, (c) first: its checksum is the reference of the others
    for m in sorted(methods, key=lambda m: not isinstance(m, RawZarr)):
        r = results[m.key]
        if r.first_pass_s is None:
            done = run.timed(m, r)
            r.first_pass_s = done[0] if done else None
    reference = next((m for m in methods if isinstance(m, RawZarr)), None)
    for m in methods:
        if reference is not None:
            _guarded(results[m.key], lambda m=m: check_first_batch(m, results[m.key], reference))
    for i in range(args.repeat):
        for m in methods[i % len(methods) :] + methods[: i % len(methods)]:  # rotate the order
            r = results[m.key]
            done = run.timed(m, r)
            if done:
                r.times.append(done[0])
                print(f"  {m.key:10s} {len(cube.plan) * args.batch_size / done[0]:7.0f} "
                      "windows/s", flush=True)  # fmt: skip
    for m in methods:
        r = results[m.key]
        done = run.timed(m, r, args.step_ms / 1000)
        r.data_wait = done[1] if done else None
    for m in methods:
        _guarded(results[m.key], m.close)
    return results


def _proxy_requests(url: str) -> Callable[[], int]:
    def count() -> int:
        with urllib.request.urlopen(f"{url}/__proxy_stats") as answer:
            return int(json.load(answer)["requests"])

    return count


# --- reporting --------------------------------------------------------------------------


def _bases(results: dict[str, Result], windows: int) -> dict[str, float | None]:
    """windows/s of (b) and of (c) (the better of its two stores: the practical limit)."""
    c = [r.windows_per_s(windows) for k, r in results.items() if k.startswith("c-")]
    return {
        "b": results["b"].windows_per_s(windows) if "b" in results else None,
        "c": max((v for v in c if v), default=None),
    }


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def table(title: str, results: dict[str, Result], cube: Cube, windows: int) -> str:
    """A markdown table of one condition."""
    base = _bases(results, windows)
    lines = [
        f"#### {title}", "",
        "| method | windows/s | MB/s | vs (b) | vs (c) | peak RSS GB | data-wait | "
        "1st pass s | requests/batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in results.values():
        speed = r.windows_per_s(windows)
        note = r.error or "; ".join(r.checks)
        label = f"{r.label} **[{note}]**" if note else r.label
        cells = [
            "-" if speed is None else f"{speed:.0f}",
            "-" if speed is None else f"{cube.mb(1) * speed:.0f}",
            _ratio(speed, base["b"]),
            _ratio(speed, base["c"]),
            f"{r.peak_rss / 1e9:.2f}",
            "-" if r.data_wait is None else f"{r.data_wait:.0%}",
            "-" if r.first_pass_s is None else f"{r.first_pass_s:.1f}",
            "-" if r.requests_per_batch is None else f"{r.requests_per_batch:.0f}",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, Result], windows: int) -> list[dict[str, Any]]:
    """The targets for the graded (a): PASS/FAIL with the ratio."""
    base = _bases(results, windows)
    out = []
    graded = [r for r in results.values() if r.graded] or [Result("a", "", True)]
    for r in graded:
        for other, factor in TARGETS:
            limit, speed = base[other], r.windows_per_s(windows)
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
    windows = sum(len(rows) for rows in cube.plan)
    return {
        "title": name,
        "windows": windows,
        "results": {
            k: vars(r) | {"windows_per_s": r.windows_per_s(windows)} for k, r in results.items()
        },
        "table": table(name, results, cube, windows),
        "targets": targets(results, windows),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=2, help="years of daily steps (default 2)")
    parser.add_argument("--grid", default="128x256", help="NLATxNLON (default 128x256)")
    parser.add_argument("--drop-step", default="2000-03-04", help="the gap (default 2000-03-04)")
    parser.add_argument("--patch", type=int, default=64, help="patch side (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per batch")
    parser.add_argument("--batches", type=int, default=24, help="batches per pass (default 24)")
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
    windows = len(cube.windows())
    print(
        f"\n{len(cube.present)} daily steps ({(~cube.present).sum()} missing), grid "
        f"{cube.n_lat}x{cube.n_lon}, {windows} windows of {K} input + {M} target steps "
        f"(lead {LEAD}) x {len(VARIABLES)} variables x {cube.patch}x{cube.patch}; timed: "
        f"{args.batches} batches of {args.batch_size} ({cube.mb(args.batches * args.batch_size):.0f}"
        f" MB of float32); moto_server in its own process on 127.0.0.1; {args.threads} threads; "
        f"best of {args.repeat}; data-wait with a {args.step_ms:g} ms step per batch; "
        f"{os.cpu_count()} CPUs; peak RSS includes this process ({args.baseline_rss_gb:.2f} GB "
        f"before the first method); wall {args.wall_s:.0f} s\n"
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
