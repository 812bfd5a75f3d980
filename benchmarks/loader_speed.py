"""Loader throughput against what users use today, on the same plate, in one run (issue 5).

A JUMP-size synthetic plate (1080x1080 uint16, 8 channels) is written as TIFFs to a
moto S3 server running as its own process on 127.0.0.1, and ingested into a cube
with ``python -m ingest cellpainting``. Then, as MB/s of decoded uint16 pixels
delivered (whole fields, all channels, one epoch over every field):

- (a) per-TIFF boto3 GET + tifffile decode behind an LRU cache, 16 threads, fields
  in shuffled order; the cache starts empty (epoch 1: it only helps on re-reads);
- (b) xbatcher ``BatchGenerator`` + ``xbatcher.loaders.torch.MapDataset`` over
  ``cubes.open_cube(url)`` (xarray + dask) in a torch ``DataLoader`` (2 workers);
- (c) raw zarr, the whole array in one call, through s3fs (``FsspecStore``) and
  through obstore (``ObjectStore`` over ``obstore.store.S3Store``): the practical limit;
- (d) ``loaders.CubeBatchDataset`` and its default ``.loader()`` (reads in this
  process, concurrently, with a thread reading ahead): graded; not graded, the
  same once per read backend (obstore, fsspec); graded too, with ``--workers``
  worker processes (against (d)) and, on loopback, with its disk cache warm
  (``d-cache``, against (e) cached);
- (e) an s3fs-fuse mount of the bucket and ``tifffile.imread`` of the TIFFs as
  files (loopback only; skipped where ``s3fs`` is not installed): a cold epoch
  (fresh mount, empty ``use_cache`` folder) and a cached one (see ``_loader_peers``);
- (f) on the cube copied to local disk: the decode limit, the cube's codec alone
  decoding every chunk from memory on as many threads as (d) has.

Everything runs three times: on loopback, through a proxy process on 127.0.0.1
that adds ``--latency-ms`` to every S3 request, and on the local copy. Before
them, the time from ``CubeBatchDataset(url)`` to the first batch over S3 (0
workers; fresh interpreters, imports apart). Each timing is the best of
``--repeat`` epochs, methods interleaved, after one warm-up epoch (loaders: worker
start, reported apart). Peak RSS covers this process and the loader's workers.
Data-wait: a simulated training step (``time.sleep``: a GPU step takes no CPU)
of ``--step-ms`` per batch; the fraction of wall time spent in ``next()``.
Correctness: one field of every method equals the synthetic ground truth, and a
sub-sampled checksum of every epoch equals that of the source TIFFs.

    .venv/bin/python benchmarks/loader_speed.py [--wells 10 --fields 4 --latency-ms 20
        --out benchmarks/results/]

Prints markdown tables and the issue's targets (PASS/FAIL); writes
``loader_speed.json`` and ``loader_speed.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import inspect
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _moto import start_moto, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path
from _proxy import start_proxy_process

use_dummy_credentials()

import boto3  # noqa: E402
import psutil  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
import xbatcher  # noqa: E402
import zarr  # noqa: E402
from botocore.config import Config  # noqa: E402
from obstore.store import S3Store  # noqa: E402
from xbatcher.loaders.torch import MapDataset  # noqa: E402
from zarr.storage import FsspecStore, ObjectStore  # noqa: E402

from cubes import open_cube  # noqa: E402
from cubes.store import resolve_storage_options  # noqa: E402
from ingest.sources.cellpainting.layout import IMAGES  # noqa: E402
from ingest.sources.cellpainting.synth import JUMP_SIZE, parse_wells, synth_field, write_synth_plate  # noqa: E402
from loaders import CubeBatchDataset  # noqa: E402

from _loader_peers import (  # noqa: E402  isort: skip - benchmarks/ is on sys.path
    DecodeLimit,
    FuseMount,
    download_cube,
    fuse_missing,
    time_to_first_batch,
    unmount_all,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET, CUBE_KEY = "bench", "plate.zarr"
C, N = 8, JUMP_SIZE
FIELD_MB = C * N * N * 2 / 1e6
TIFF_NAME = re.compile(r"r(\d\d)c(\d\d)f(\d\d)p01-ch(\d)sk1fk1fl1\.tiff$")
TARGETS = {  # condition -> (graded method, other method, factor): method >= factor x other
    "loopback": [
        ("d", "c", 0.9),
        ("d", "b", 3.0),
        ("d", "a", 2.5),
        ("d", "e-cold", 3.0),
        ("d-cache", "e-cached", 1.5),
        ("d-2w", "d", 0.8),
    ],
    "latency": [("d", "c", 0.9), ("d", "b", 5.0), ("d", "a", 10.0), ("d-2w", "d", 0.8)],
    "local": [("d", "f", 0.9), ("d-2w", "d", 0.8)],
}
FIRST_BATCH_TARGET_S = 1.5


# --- correctness ------------------------------------------------------------------------


def _sub_checksum(pixels: np.ndarray) -> int:
    """Sum of a strided sub-sample of every image in ``pixels`` (..., y, x): cheap, exact."""
    return int(np.asarray(pixels[..., ::61, ::67]).astype(np.int64).sum())


def _channel_hashes(stack: np.ndarray) -> list[str]:
    """Hashes of the channel images of one field, sorted (channel order may differ)."""
    images = np.asarray(stack).astype(np.uint16)
    return sorted(hashlib.blake2b(im.tobytes(), digest_size=8).hexdigest() for im in images)


Site = tuple[int, int, int]  # (row, column, field), 1-based, as in the TIFF names


def _site(well: str, fld: int) -> Site:
    return (ord(well[0]) - ord("A") + 1, int(well[1:]), int(fld))


@dataclass
class Plate:
    """The sample plate: where it is and what its pixels are."""

    cube_url: str
    tiff_keys: dict[Site, list[str]]  # keys of a field's TIFFs, by channel number
    n_fields: int
    first_site: Site  # well 0, field 0 of the cube
    reference: int | None = None  # sub-sampled checksum of one epoch of the source TIFFs
    _truth: dict[Site, list[str]] = field(default_factory=dict)

    @property
    def mb(self) -> float:
        return self.n_fields * FIELD_MB

    def is_true(self, site: Site, stack: np.ndarray) -> bool:
        """Whether ``stack`` holds the pixels of ``site``, as synth_field made them."""
        if site not in self._truth:
            row, col, fld = site
            truth = synth_field(N, seed=0, row=row, column=col, field=fld)
            self._truth[site] = _channel_hashes(truth)
        return _channel_hashes(stack) == self._truth[site]


# --- the methods ------------------------------------------------------------------------


class Method:
    """One way of reading every field once; ``epoch`` returns (fields, checksum)."""

    key = ""
    label = ""
    is_loader = False
    graded = False  # held to the targets

    def epoch(self) -> tuple[int, int]:
        raise NotImplementedError

    def probe(self) -> tuple[Site, np.ndarray]:
        """One field read by this method (not timed), and which field it is."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class TiffLRU(Method):
    """(a) Users' hand-made loader: per-TIFF GET + tifffile, ``functools.lru_cache``."""

    key = "a"

    def __init__(self, plate: Plate, endpoint: str, threads: int, cache_images: int) -> None:
        self.label = f"(a) per-TIFF boto3 GET + tifffile, LRU cache, {threads} threads (epoch 1)"
        self.plate, self.cache_images, self.epochs = plate, cache_images, 0
        config = Config(max_pool_connections=threads)
        self.s3 = boto3.client("s3", endpoint_url=endpoint, config=config)
        self.pool = ThreadPoolExecutor(threads)
        self._new_cache()

    def _new_cache(self) -> None:
        @functools.lru_cache(maxsize=self.cache_images)
        def image(key: str) -> np.ndarray:
            body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            return tifffile.imread(io.BytesIO(body))

        self.image = image

    def field(self, site: tuple[int, int, int]) -> np.ndarray:
        return np.stack([self.image(key) for key in self.plate.tiff_keys[site]])

    def epoch(self) -> tuple[int, int]:
        self._new_cache()  # epoch 1: the cache starts empty
        order = sorted(self.plate.tiff_keys)
        random.Random(self.epochs).shuffle(order)
        self.epochs += 1
        n = total = 0
        for pixels in self.pool.map(self.field, order):
            n, total = n + 1, total + _sub_checksum(pixels)
        return n, total

    def probe(self) -> tuple[Site, np.ndarray]:
        return self.plate.first_site, self.field(self.plate.first_site)

    def close(self) -> None:
        self.pool.shutdown()


class RawZarr(Method):
    """(c) ``zarr.open_array(store)[...]``: the whole array in one call."""

    def __init__(self, plate: Plate, key: str, label: str, store: Any, concurrency: int) -> None:
        self.key, self.label, self.concurrency, self.plate = key, label, concurrency, plate
        self.array = zarr.open_array(store, path=IMAGES, mode="r", zarr_format=3)

    def epoch(self) -> tuple[int, int]:
        with zarr.config.set({"async.concurrency": self.concurrency}):
            pixels = np.asarray(self.array[...])
        return pixels.shape[0] * pixels.shape[1], _sub_checksum(pixels)

    def probe(self) -> tuple[Site, np.ndarray]:
        return self.plate.first_site, np.asarray(self.array[0, 0])


class Loader(Method):
    """A torch DataLoader over a map-style dataset whose items are batches."""

    is_loader = True
    loader: Any

    def batches(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def epoch(self) -> tuple[int, int]:
        n = total = 0
        for pixels in self.batches():
            n, total = n + len(pixels), total + _sub_checksum(pixels)
        return n, total

    def data_wait(self, step_s: float) -> float:
        """One epoch with a simulated training step after each batch: fraction waiting."""
        waited, start = 0.0, time.perf_counter()
        batches = self.batches()
        while True:
            t = time.perf_counter()
            try:
                next(batches)
            except StopIteration:
                break
            waited += time.perf_counter() - t
            time.sleep(step_s)
        return waited / (time.perf_counter() - start)

    def close(self) -> None:
        dataloader = getattr(self.loader, "dataloader", None) or self.loader
        iterator = getattr(dataloader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()  # persistent workers: end them now
        self.loader = dataloader = iterator = None
        gc.collect()


class Xbatcher(Loader):
    """(b) xbatcher over the lazy xarray Dataset, as its documentation shows."""

    key = "b"

    def __init__(self, plate: Plate, endpoint: str, batch_fields: int, workers: int) -> None:
        self.label = (
            f"(b) xbatcher BatchGenerator + MapDataset over open_cube (dask), "
            f"DataLoader {workers} workers"
        )
        ds = open_cube(plate.cube_url, endpoint_url=endpoint)
        generator = xbatcher.BatchGenerator(
            ds[IMAGES],
            input_dims={"channel": C, "y": N, "x": N},
            batch_dims={"well": 1, "field": batch_fields},
        )
        self.dataset = MapDataset(generator)
        self.plate = plate
        # forkserver: fork + s3fs/dask hangs (FIELD-NOTES); the start method (d) uses.
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, shuffle=True, num_workers=workers,
            multiprocessing_context="forkserver", persistent_workers=True,
        )  # fmt: skip

    def batches(self) -> Iterator[np.ndarray]:
        for tensor in self.loader:
            yield tensor.numpy()

    def probe(self) -> tuple[Site, np.ndarray]:
        # Samples stack (well, field): the first of batch 0 is well 0, field 0.
        return self.plate.first_site, self.dataset[0].numpy()[0]


class Ours(Loader):
    """(d) ``loaders.CubeBatchDataset`` and its ``.loader()`` (default: no worker processes)."""

    def __init__(self, plate: Plate, endpoint: str | None, batch_fields: int, workers: int,
                 threads: int, backend: str | None, url: str | None = None,
                 cache_dir: str | None = None) -> None:  # fmt: skip
        suffix = f"-{workers}w" if workers else ""
        self.key = ("d" if backend is None else f"d-{backend}") + suffix
        self.key += "-cache" if cache_dir else ""
        # graded: the default (.loader(): reads in this process, a thread reading ahead),
        # with workers, and with the disk cache
        self.graded = backend is None
        extra = "" if backend is None else f", backend={backend!r}"
        extra += ", cache_dir=… (warm)" if cache_dir else ""
        note = "" if self.graded else ", not graded"
        self.label = (
            f"(d) CubeBatchDataset(threads={threads}{extra}).loader({workers} workers){note}"
        )
        kwargs: dict[str, Any] = {"backend": backend} if backend else {}
        options = {"endpoint_url": endpoint} if endpoint else None
        self.dataset = CubeBatchDataset(
            url or plate.cube_url, batch_size=batch_fields, storage_options=options,
            threads=threads, cache_dir=cache_dir, **kwargs,
        )  # fmt: skip
        self.loader = self.dataset.loader(num_workers=workers)
        self.plate = plate

    def batches(self) -> Iterator[np.ndarray]:
        for batch in self.loader:
            yield batch["inputs"].numpy()

    def probe(self) -> tuple[Site, np.ndarray]:
        batch = self.dataset[0]
        return _site(batch["well"][0], int(batch["field"][0])), batch["inputs"][0].numpy()


def _backends() -> list[str | None]:
    """(d) variants: the default, and each backend if the constructor takes ``backend=``."""
    if "backend" in inspect.signature(CubeBatchDataset.__init__).parameters:
        return [None, "obstore", "fsspec"]
    return [None]


def _obstore(endpoint: str) -> ObjectStore:
    # Credentials from the environment (the dummy ones, for moto).
    s3 = S3Store(
        BUCKET, prefix=CUBE_KEY, endpoint=endpoint, region="us-east-1",
        client_options={"allow_http": True},
    )  # fmt: skip
    return ObjectStore(s3, read_only=True)


def build_local(plate: Plate, cube: str, args: argparse.Namespace) -> list[Method]:
    """The local-cube condition: the decode limit, and (d) with 0 and ``--workers`` workers."""
    makers: list[Callable[[], Any]] = [
        lambda: DecodeLimit(cube, IMAGES, args.threads, plate.n_fields),
        lambda: RawZarr(plate, "c-local", "(c) zarr.open_array(LocalStore)[...]",
                        zarr.storage.LocalStore(cube, read_only=True), args.threads),
    ]  # fmt: skip
    for workers in (0, args.workers):
        makers.append(
            functools.partial(
                Ours, plate, None, args.batch_fields, workers, args.threads, None, cube
            )
        )
    return _made(makers)


def _made(makers: list[Callable[[], Any]]) -> list[Method]:
    methods = []
    for make in makers:
        try:
            methods.append(make())
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"  ! could not set up a method: {type(exc).__name__}: {exc}", flush=True)
    return methods


def build_methods(plate: Plate, endpoint: str, args: argparse.Namespace,
                  peers: bool = False) -> list[Method]:  # fmt: skip
    """Every method, reading through ``endpoint``; a method that fails to build is skipped.

    ``peers``: also the s3fs-fuse mount (cold and cached) and (d) with a warm disk cache.
    """
    url = plate.cube_url
    options = resolve_storage_options(url, endpoint_url=endpoint)
    makers: list[Callable[[], Method]] = [
        lambda: TiffLRU(plate, endpoint, args.threads, args.cache_images),
        lambda: Xbatcher(plate, endpoint, args.batch_fields, args.workers),
        lambda: RawZarr(plate, "c-s3fs", "(c) zarr.open_array(FsspecStore: s3fs)[...]",
                        FsspecStore.from_url(url, storage_options=options, read_only=True),
                        args.threads),
        lambda: RawZarr(plate, "c-obstore", "(c) zarr.open_array(ObjectStore: obstore)[...]",
                        _obstore(endpoint), args.threads),
    ]  # fmt: skip
    for workers, backend in [(0, b) for b in _backends()] + [(args.workers, None)]:
        makers.append(
            functools.partial(
                Ours, plate, endpoint, args.batch_fields, workers, args.threads, backend
            )
        )
    if peers:
        cache = tempfile.mkdtemp(prefix="loader-cache-")
        args.cleanup.append(cache)
        makers.append(
            functools.partial(Ours, plate, endpoint, args.batch_fields, 0, args.threads, None,
                              cache_dir=cache)
        )  # fmt: skip
        if args.fuse_skip is None:
            for cached in (False, True):
                makers.append(functools.partial(FuseMount, plate, BUCKET, endpoint, args.threads,
                                                cached))  # fmt: skip
    return _made(makers)


# --- measuring --------------------------------------------------------------------------


class TreeRSS:
    """Samples, in a thread, the RSS of this process plus the child processes of a method.

    The children that appear while a method is watched are its own (its loader's
    workers); children of other methods, and the servers in ``infra``, are left out.
    """

    def __init__(self, infra: set[int], interval: float = 0.02) -> None:
        self.me, self.infra, self.interval = psutil.Process(), infra, interval
        self.owned: dict[str, set[int]] = {}
        self.current: str | None = None
        self.peak = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _children(self) -> set[int]:
        with suppress(psutil.Error):
            return {p.pid for p in self.me.children(recursive=True)} - self.infra
        return set()

    def _rss(self) -> int:
        total = self.me.memory_info().rss
        if self.current is None:
            return total
        others = set().union(*(v for k, v in self.owned.items() if k != self.current))
        for pid in self._children() - others:
            with suppress(psutil.Error):  # a worker that just exited
                total += psutil.Process(pid).memory_info().rss
        return total

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    @contextmanager
    def watch(self, key: str) -> Iterator[None]:
        """Peak RSS of this process and ``key``'s children while in the block: ``peak``."""
        before = self._children()
        self.current, self.peak = key, self._rss()
        try:
            yield
        finally:
            self.peak = max(self.peak, self._rss())
            others = set().union(*(v for k, v in self.owned.items() if k != key))
            self.owned.setdefault(key, set()).update(self._children() - before - others)
            self.current = None


@dataclass
class Result:
    """What was measured for one method in one condition."""

    key: str
    label: str
    graded: bool
    times: list[float] = field(default_factory=list)
    first_epoch_s: float | None = None
    peak_rss: int = 0
    data_wait: float | None = None
    requests_per_epoch: int | None = None
    checks: list[str] = field(default_factory=list)  # failures; empty when correct
    error: str | None = None

    def mbs(self, plate: Plate) -> float | None:
        return plate.mb / min(self.times) if self.times and not self.checks else None


def _check(result: Result, plate: Plate, n: int, checksum: int) -> None:
    if checksum < 0:  # (f) decodes without keeping pixels: only the count is checked
        if n != plate.n_fields:
            result.checks.append(f"epoch decoded {n} fields")
        return
    if plate.reference is None:
        plate.reference = checksum
    if n != plate.n_fields or checksum != plate.reference:
        result.checks.append(f"epoch delivered {n} fields, checksum {checksum}")


def _epoch(method: Method, result: Result, plate: Plate, stats: Callable[[], int] | None) -> float:
    before = stats() if stats else None
    start = time.perf_counter()
    n, checksum = method.epoch()
    seconds = time.perf_counter() - start
    if before is not None and stats:
        result.requests_per_epoch = stats() - before
    _check(result, plate, n, checksum)
    return seconds


def _guarded(result: Result, fn: Callable[[], Any]) -> Any:
    if result.error:
        return None
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken method must not end the run
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {result.key}: {result.error}", flush=True)
        return None


def _timed_epoch(m: Method, r: Result, plate: Plate, rss: TreeRSS,
                 stats: Callable[[], int] | None) -> float | None:  # fmt: skip
    with rss.watch(m.key):
        seconds = _guarded(r, lambda: _epoch(m, r, plate, stats))
    r.peak_rss = max(r.peak_rss, rss.peak)
    return seconds


def measure(methods: list[Method], plate: Plate, args: argparse.Namespace,
            rss: TreeRSS, stats: Callable[[], int] | None) -> dict[str, Result]:  # fmt: skip
    """Probe, warm up, then ``args.repeat`` interleaved timed epochs; then data-wait."""
    results = {m.key: Result(m.key, m.label, m.graded) for m in methods}
    for m in methods:
        r = results[m.key]
        probe = _guarded(r, m.probe)
        if probe is not None and not plate.is_true(*probe):
            r.checks.append(f"field {probe[0]} differs from the synthetic ground truth")
        if m.is_loader:  # a warm-up epoch: the workers start (the others have nothing to start)
            r.first_epoch_s = _timed_epoch(m, r, plate, rss, None)
    for i in range(args.repeat):
        for m in methods[i % len(methods) :] + methods[: i % len(methods)]:  # rotate the order
            r = results[m.key]
            seconds = _timed_epoch(m, r, plate, rss, stats)
            if seconds is not None:
                r.times.append(seconds)
                r.first_epoch_s = r.first_epoch_s or seconds
                print(f"  {m.key:10s} {plate.mb / seconds:7.0f} MB/s", flush=True)
    for m in methods:
        if isinstance(m, Loader):
            r = results[m.key]
            r.data_wait = _guarded(r, functools.partial(m.data_wait, args.step_ms / 1000))
    for m in methods:
        _guarded(results[m.key], m.close)
    return results


# --- setting up -------------------------------------------------------------------------


def make_plate(endpoint: str, args: argparse.Namespace) -> Plate:
    """Write the TIFFs, ingest them with the CLI, and describe the result."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    raw, cube = f"s3://{BUCKET}/raw", f"s3://{BUCKET}/{CUBE_KEY}"
    options = resolve_storage_options(raw, endpoint_url=endpoint)
    start = time.perf_counter()
    write_synth_plate(raw, wells=parse_wells(str(args.wells)), fields=args.fields, size=N,
                      storage_options=options)  # fmt: skip
    print(f"TIFFs written in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ingest", "cellpainting", raw, cube, "--no-progress"],
        env=dict(os.environ, AWS_ENDPOINT_URL=endpoint), cwd=REPO, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"Ingested with python -m ingest in {time.perf_counter() - start:.0f} s", flush=True)
    keys: dict[tuple[int, int, int], list[str]] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="raw/")
    for obj in sorted(o["Key"] for p in pages for o in p.get("Contents", [])):
        if match := TIFF_NAME.search(obj):
            row, col, fld, ch = map(int, match.groups())
            keys.setdefault((row, col, fld), []).append(obj)
    ds = open_cube(cube, endpoint_url=endpoint)
    n_fields = ds.sizes["well"] * ds.sizes["field"]
    if n_fields != len(keys):
        raise RuntimeError(f"the cube has {n_fields} fields, the TIFFs {len(keys)}")
    return Plate(cube, keys, n_fields, _site(str(ds["well"].values[0]), ds["field"].values[0]))


def _proxy_requests(url: str) -> Callable[[], int]:
    def count() -> int:
        with urllib.request.urlopen(f"{url}/__proxy_stats") as answer:
            return int(json.load(answer)["requests"])

    return count


# --- reporting --------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def _bases(results: dict[str, Result], plate: Plate) -> dict[str, float | None]:
    """MB/s of every method, and (c): the better of its stores (the practical limit)."""
    c = [r.mbs(plate) for k, r in results.items() if k.startswith("c-")]
    bases = {k: r.mbs(plate) for k, r in results.items()}
    best_c = max(filter(None, c), default=None)
    return bases | {"a": bases.get("a"), "b": bases.get("b"), "c": best_c}


def table(title: str, results: dict[str, Result], plate: Plate) -> str:
    """A markdown table of one condition."""
    base = _bases(results, plate)
    lines = [
        f"#### {title}", "",
        "| method | MB/s | vs (a) | vs (b) | vs (c) | peak RSS GB | data-wait | "
        "1st epoch s | requests/epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in results.values():
        mbs = r.mbs(plate)
        wait = "-" if r.data_wait is None else f"{r.data_wait:.0%}"
        first = "-" if r.first_epoch_s is None else f"{r.first_epoch_s:.1f}"
        note = r.error or ("; ".join(r.checks) if r.checks else "")
        label = f"{r.label} **[{note}]**" if note else r.label
        speed = "-" if mbs is None else f"{mbs:.0f}"
        requests = "-" if r.requests_per_epoch is None else r.requests_per_epoch
        ratios = " | ".join(_ratio(mbs, base[k]) for k in "abc")
        lines.append(
            f"| {label} | {speed} | {ratios} | {r.peak_rss / 1e9:.2f} | {wait} | {first} "
            f"| {requests} |"
        )
    return "\n".join(lines)


def targets(condition: str, results: dict[str, Result], plate: Plate) -> list[dict[str, Any]]:
    """The issue's targets of this condition: PASS/FAIL with the ratio (a method that did
    not run here, such as the mount where s3fs is missing, is left out)."""
    base = _bases(results, plate)
    out = []
    for key, other, factor in TARGETS[condition]:
        if key not in results or (other not in base and other not in "abc"):
            continue
        limit, mbs = base.get(other), base.get(key)
        ratio = mbs / limit if limit and mbs else None
        ok = ratio is not None and ratio >= factor
        out.append({"method": key, "vs": other, "target": factor, "ratio": ratio, "pass": ok})
    return out


def _target_lines(name: str, checks: list[dict[str, Any]]) -> list[str]:
    return [
        f"{'PASS' if t['pass'] else 'FAIL'}  {name}: ({t['method']}) >= {t['target']}x ({t['vs']})"
        f"  -> {t['ratio']:.2f}x" if t["ratio"] is not None else
        f"FAIL  {name}: ({t['method']}) >= {t['target']}x ({t['vs']})  -> not measured"
        for t in checks
    ]  # fmt: skip


def plot(path: str, conditions: dict[str, dict[str, Any]], subtitle: str) -> None:
    """Bars of MB/s per method, one colour per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for c in conditions.values() for k in c["mbs"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(keys)), 4.2))
    width = 0.8 / len(conditions)
    for i, (name, cond) in enumerate(conditions.items()):
        xs = [j + (i - (len(conditions) - 1) / 2) * width for j in range(len(keys))]
        values = [cond["mbs"].get(k) or 0 for k in keys]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "n/a" for v in values], fontsize=7)
    ax.set_xticks(range(len(keys)), [f"({k})" for k in keys])
    ax.set_ylabel("MB/s of decoded uint16 pixels")
    ax.set_title(f"Whole fields, one epoch, moto S3 on 127.0.0.1 (best of repeats)\n{subtitle}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------


def run_condition(name: str, kind: str, methods: list[Method], plate: Plate,
                  args: argparse.Namespace, rss: TreeRSS,
                  stats: Callable[[], int] | None) -> dict[str, Any]:  # fmt: skip
    results = measure(methods, plate, args, rss, stats)
    return {
        "title": name,
        "results": {k: vars(r) | {"mbs": r.mbs(plate)} for k, r in results.items()},
        "mbs": {k: r.mbs(plate) for k, r in results.items()},
        "table": table(name, results, plate),
        "targets": targets(kind, results, plate),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=6, help="wells (default 6)")
    parser.add_argument("--fields", type=int, default=4, help="fields per well (default 4)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per request")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--repeat", type=int, default=3, help="timed epochs per method")
    parser.add_argument("--threads", type=int, default=16, help="threads / requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-fields", type=int, default=4, help="fields per batch (b, d)")
    parser.add_argument("--step-ms", type=float, default=100.0,
                        help="simulated training step per batch (default 100)")  # fmt: skip
    parser.add_argument("--cache-images", type=int, default=512, help="LRU size of (a)")
    args = parser.parse_args()
    if args.fields % args.batch_fields:
        parser.error(f"--batch-fields {args.batch_fields} must divide --fields {args.fields}")
    return args


def main() -> None:
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in ("CACHE_DIR", "CACHE_GB"):  # (d) reads S3 in every epoch, as the others do
        if os.environ.pop(name, None) is not None:
            print(f"Ignoring {name} from the environment: no disk cache in this benchmark")
    args.fuse_skip, args.cleanup = fuse_missing(), []
    if args.fuse_skip:
        print(f"Skipping the (e) rows: {args.fuse_skip}", flush=True)
    server, endpoint = start_moto()
    proxy = None
    try:
        plate = make_plate(endpoint, args)
        print(f"{plate.n_fields} fields, {plate.mb:.0f} MB of pixels", flush=True)
        args.first_batch = time_to_first_batch(
            plate.cube_url, endpoint, args.batch_fields, args.repeat
        )
        print(f"Time to the first batch: {json.dumps(args.first_batch)}", flush=True)
        rss = TreeRSS({server.pid})
        args.baseline_rss_gb = psutil.Process().memory_info().rss / 1e9
        conditions = {}
        print("\n== loopback ==", flush=True)
        methods = build_methods(plate, endpoint, args, peers=True)
        conditions["loopback"] = run_condition("loopback", "loopback", methods, plate, args,
                                               rss, None)  # fmt: skip
        proxy, proxy_url = start_proxy_process(endpoint, args.latency_ms)
        rss.infra.add(proxy.pid)
        name = f"{args.latency_ms:g} ms per request"
        print(f"\n== {name} ==", flush=True)
        methods = build_methods(plate, proxy_url, args)
        stats = _proxy_requests(proxy_url)
        conditions[name] = run_condition(name, "latency", methods, plate, args, rss, stats)
        local = tempfile.mkdtemp(prefix="loader-local-")
        args.cleanup.append(local)
        cube = download_cube(boto3.client("s3", endpoint_url=endpoint), BUCKET, CUBE_KEY, local)
        print("\n== local cube ==", flush=True)
        methods = build_local(plate, cube, args)
        conditions["local cube"] = run_condition("local cube", "local", methods, plate, args,
                                                 rss, None)  # fmt: skip
    finally:
        unmount_all()
        for process in (proxy, server):
            if process is not None:
                process.terminate()
                process.wait()
        for folder in args.cleanup:
            shutil.rmtree(folder, ignore_errors=True)
    report(args, plate, conditions)


def report(args: argparse.Namespace, plate: Plate, conditions: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{plate.n_fields} fields ({args.wells} wells x {args.fields}) of {C}x{N}x{N} uint16, "
        f"{plate.mb:.0f} MB of pixels per epoch; moto_server in its own process on 127.0.0.1; "
        f"{args.threads} threads; batches of {args.batch_fields} fields; best of {args.repeat}; "
        f"data-wait with a {args.step_ms:g} ms step per batch; {os.cpu_count()} CPUs; peak RSS "
        f"includes this process ({args.baseline_rss_gb:.2f} GB before the first method)\n"
    )
    lines = []
    for name, cond in conditions.items():
        print(cond["table"] + "\n")
        lines += _target_lines(name, cond["targets"])
    if args.fuse_skip:
        lines.append(f"SKIP  loopback: the (e) targets: {args.fuse_skip}")
    first = args.first_batch["first"]["total_s"]
    lines.append(
        f"{'PASS' if first < FIRST_BATCH_TARGET_S else 'FAIL'}  CubeBatchDataset(url) to the "
        f"first batch over S3, 0 workers < {FIRST_BATCH_TARGET_S} s  -> {first:.2f} s "
        f"(open {args.first_batch['first']['open_s']:.2f} + first batch "
        f"{args.first_batch['first']['batch_s']:.2f}; a second dataset in the same process "
        f"{args.first_batch['again']['total_s']:.2f} s; 'from loaders import "
        f"CubeBatchDataset' {args.first_batch['import_s']:.2f} s, not counted)"
    )
    print("\n".join(lines))
    summary = {
        "config": vars(args) | {"n_fields": plate.n_fields, "mb_per_epoch": plate.mb,
                                "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M")},
        "conditions": conditions,
    }  # fmt: skip
    with open(os.path.join(args.out, "loader_speed.json"), "w") as f:
        json.dump(summary, f, indent=1)
    subtitle = f"{plate.n_fields} fields, {plate.mb:.0f} MB; {os.cpu_count()} CPUs"
    plot(os.path.join(args.out, "loader_speed.png"), conditions, subtitle)
    print(f"\nWrote {args.out}/loader_speed.json and loader_speed.png")


if __name__ == "__main__":
    main()
