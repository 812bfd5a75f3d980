"""More rows of ``loader_speed.py`` (issue 13): the decode limit, an s3fs-fuse mount, start-up.

- :class:`DecodeLimit` (f): the cube's own codec decoding every chunk of one
  epoch from memory (no I/O, no copies, no float32), on a thread pool of the
  loader's size: what no loader of this cube can beat on this machine.
- :class:`FuseMount` (e): the bucket mounted with s3fs-fuse (Debian package
  ``s3fs``) and the TIFFs read as files with ``tifffile.imread``, on a thread
  pool, as a user of a mount writes it; ``cold`` remounts with an empty
  ``use_cache`` folder before every epoch, ``cached`` reads with the folder warm.
  Skipped, with a message, where ``s3fs`` or ``/dev/fuse`` is missing.
- :func:`time_to_first_batch`: a fresh interpreter, from ``CubeBatchDataset(url)``
  to the first batch over S3, 0 workers; imports timed apart.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tifffile
from numcodecs import blosc

from loaders._shards import ShardLayout

MOUNTS: list[FuseMount] = []  # unmounted by unmount_all(), whatever happens
FUSE_SKIP = "s3fs-fuse is not installed (apt-get install s3fs) or /dev/fuse is missing"


def fuse_missing() -> str | None:
    """Why the mount rows cannot run here, or None."""
    if shutil.which("s3fs") is None or not os.path.exists("/dev/fuse"):
        return FUSE_SKIP
    return None


def download_cube(s3: Any, bucket: str, prefix: str, folder: str) -> str:
    """Copy the cube under ``prefix`` to ``folder`` (the local-cube condition); its path."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    for key in (o["Key"] for p in pages for o in p.get("Contents", [])):
        path = os.path.join(folder, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, key, path)
    return os.path.join(folder, prefix)


class DecodeLimit:
    """(f) The codec alone: every chunk's compressed bytes, from memory, ``threads`` at once."""

    key = "f"
    is_loader = False
    graded = False

    def __init__(self, cube: str, variable: str, threads: int, n_fields: int) -> None:
        from zarr.core.metadata.v3 import ArrayV3Metadata

        with open(os.path.join(cube, variable, "zarr.json")) as f:
            document = json.load(f)
        layout, why = ShardLayout.build(ArrayV3Metadata.from_dict(document))
        if layout is None or not layout.sharded:
            raise RuntimeError(f"decode limit: the fast path cannot read {cube} ({why})")
        codec = document["codecs"][0]["configuration"]["codecs"][-1]
        self.label = f"(f) decode limit: numcodecs {codec['name']} {codec['configuration']}, " + (
            f"every chunk from memory, {threads} threads"
        )
        self.chunks: list[memoryview] = []
        for path in sorted(glob.glob(os.path.join(cube, variable, "c", "**"), recursive=True)):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    data = f.read()
                index = layout.index_of_shard(data, path).reshape(-1, 2)
                self.chunks += [memoryview(data)[int(o) : int(o + n)] for o, n in index]
        self.n_fields, self.pool = n_fields, ThreadPoolExecutor(threads)

    def epoch(self) -> tuple[int, int]:
        sizes = list(self.pool.map(lambda c: len(blosc.decompress(c)), self.chunks))
        return self.n_fields, -sum(sizes)  # no pixels kept: the checksum is not comparable

    def probe(self) -> None:
        return None

    def close(self) -> None:
        self.pool.shutdown()


class FuseMount:
    """(e) ``s3fs BUCKET MNT -o use_cache=DIR``, then ``tifffile.imread`` of every TIFF."""

    is_loader = False
    graded = False

    def __init__(self, plate: Any, bucket: str, endpoint: str, threads: int, cached: bool) -> None:
        self.key = "e-cached" if cached else "e-cold"
        when = "cached epoch (use_cache folder warm)" if cached else "cold epoch (cache emptied)"
        self.label = f"(e) s3fs-fuse mount + tifffile.imread, {threads} threads, {when}"
        self.plate, self.bucket, self.endpoint, self.cached = plate, bucket, endpoint, cached
        self.work = tempfile.mkdtemp(prefix="fuse-bench-")
        self.mnt, self.cache = os.path.join(self.work, "mnt"), os.path.join(self.work, "cache")
        self.passwd = os.path.join(self.work, "passwd")
        with open(os.open(self.passwd, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"{os.environ['AWS_ACCESS_KEY_ID']}:{os.environ['AWS_SECRET_ACCESS_KEY']}\n")
        self.pool, self.epochs = ThreadPoolExecutor(threads), 0
        MOUNTS.append(self)
        self._mount()
        if cached:
            self._read_all()  # fill the cache folder once

    def _mount(self) -> None:
        os.makedirs(self.mnt, exist_ok=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        os.makedirs(self.cache)
        options = (
            f"url={self.endpoint},use_path_request_style,use_cache={self.cache},"
            f"passwd_file={self.passwd}"
        )
        subprocess.run(["s3fs", self.bucket, self.mnt, "-o", options], check=True)
        for _ in range(100):
            if os.path.ismount(self.mnt):
                return
            time.sleep(0.05)
        raise RuntimeError(f"s3fs did not mount {self.bucket} on {self.mnt}")

    def _unmount(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount", "-u", self.mnt], check=False)
            for _ in range(100):
                if not os.path.ismount(self.mnt):
                    return
                time.sleep(0.05)

    def field(self, site: tuple[int, int, int]) -> np.ndarray:
        keys = self.plate.tiff_keys[site]
        return np.stack([tifffile.imread(os.path.join(self.mnt, key)) for key in keys])

    def _read_all(self) -> tuple[int, int]:
        order = sorted(self.plate.tiff_keys)
        random.Random(self.epochs).shuffle(order)
        self.epochs += 1
        n = total = 0
        for pixels in self.pool.map(self.field, order):
            sub = np.asarray(pixels[..., ::61, ::67]).astype(np.int64)
            n, total = n + 1, total + int(sub.sum())
        return n, total

    def epoch(self) -> tuple[int, int]:
        if not self.cached:  # a cold epoch: a fresh mount over an empty cache folder
            self._unmount()
            self._mount()
        return self._read_all()

    def probe(self) -> tuple[tuple[int, int, int], np.ndarray]:
        return self.plate.first_site, self.field(self.plate.first_site)

    def close(self) -> None:
        self.pool.shutdown()
        if self in MOUNTS:
            MOUNTS.remove(self)
        try:
            self._unmount()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)


def unmount_all() -> None:
    """Unmount every mount made here (the benchmark's ``finally``)."""
    while MOUNTS:
        MOUNTS.pop().close()


_FIRST_BATCH = r"""
import json, sys, time
t0 = time.perf_counter()
from loaders import CubeBatchDataset
t1 = time.perf_counter()
url, endpoint, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"import_s": t1 - t0}
for name in ("first", "again"):
    t = time.perf_counter()
    ds = CubeBatchDataset(url, batch_size=batch, storage_options={"endpoint_url": endpoint})
    t2 = time.perf_counter()
    loader = ds.loader()
    next(iter(loader))
    t3 = time.perf_counter()  # the batch in hand (closing the read-ahead thread not counted)
    loader.close()
    out[name] = {"open_s": t2 - t, "batch_s": t3 - t2, "total_s": t3 - t}
print(json.dumps(out))
"""


def time_to_first_batch(url: str, endpoint: str, batch: int, repeat: int) -> dict[str, Any]:
    """From ``CubeBatchDataset(url)`` to the first batch, 0 workers, in fresh interpreters.

    ``first``: the first dataset of the process (the modules it imports lazily, such
    as s3fs and zarr's codecs, count); ``again``: a second one in the same process.
    ``import_s``: ``from loaders import CubeBatchDataset``, not counted. Best of ``repeat``.
    """
    runs = []
    env = dict(os.environ, CELLCUBES_LOG_LEVEL="WARNING")
    for _ in range(repeat):
        answer = subprocess.run(
            [sys.executable, "-c", _FIRST_BATCH, url, endpoint, str(batch)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        runs.append(json.loads(answer.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["first"]["total_s"])
    best["import_s"] = min(r["import_s"] for r in runs)
    best["again"] = min((r["again"] for r in runs), key=lambda r: r["total_s"])
    best["repeat"] = repeat
    return best
