"""Ingest throughput against what users do instead, on the same TIFFs, in one run.

96 JUMP-size TIFFs by default (4 wells x 3 fields x 8 channels, 1080x1080 uint16,
224 MB of pixels) in a moto S3 server running as its own process on 127.0.0.1,
S3 -> S3. Compared, as MB/s of pixels, best of 3, and as ratios:

- copy: a plain boto3 GET + PUT of the same TIFF bytes with the same number of
  threads (no decoding, no compression): the I/O bound of this machine;
- naive: the loop users write: for each TIFF, boto3 GET, tifffile decode, write
  it into a Zarr v3 array with one chunk per image (no shards), the same codec
  as ours, one image after the other;
- ours in-process: ``cellpainting.plan`` + ``write_cubes`` (plan, schema, tasks,
  statistics, report, consolidation);
- ours CLI: ``python -m ingest cellpainting`` in a subprocess; its start-up (the
  interpreter and the CLI's imports, up to the parsed arguments: what the CLI
  prints as ``start-up``) is taken out of its time and reported on its own.

CPU-seconds per method: the client's (``resource.getrusage``: this process, or
the CLI's process as a waited child) and the moto server's (``psutil``), over
the best run. ``--profile`` then accounts for the CPU of one in-process run, by
thread and by function (``_cpu_account.py``).

    .venv/bin/python benchmarks/ingest_speed.py [--wells 4] [--fields 3] [--threads 8]
        [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import io
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psutil
import tifffile
import zarr
from _moto import copy_objects, moto_bucket, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path

use_dummy_credentials()

from cubes.store import resolve_storage_options, zarr_store  # noqa: E402
from ingest.runner import Runner  # noqa: E402
from ingest.sources import cellpainting  # noqa: E402
from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate  # noqa: E402
from ingest.writer import write_cubes  # noqa: E402

SIZE = 1080
CHANNELS = 8


@dataclass
class Run:
    """One timed run: wall seconds (start-up taken out for the CLI), CPU of client and server."""

    seconds: float
    client_cpu: float
    server_cpu: float
    startup: float = 0.0


def naive(s3: Any, keys: list[str], dest: str, options: dict, shape: tuple) -> None:
    """GET, decode, write one image at a time, one chunk per image, no shards."""
    arr = zarr.create_array(
        zarr_store(dest, options, read_only=False), shape=shape,
        chunks=(1, 1, 1, *shape[-2:]), dtype="uint16",
        compressors=[cellpainting.COMPRESSOR], zarr_format=3, overwrite=True,
    )  # fmt: skip
    wells: dict = {}
    fields: dict = {}
    for key in keys:
        g = cellpainting.IMAGE_NAME.match(key.rsplit("/", 1)[-1]).groupdict()  # type: ignore[union-attr]
        w = wells.setdefault((g["row"], g["column"]), len(wells))
        f = fields.setdefault(g["field"], len(fields))
        body = s3.get_object(Bucket="bench", Key=key)["Body"].read()
        arr[w, f, int(g["channel"]) - 1] = tifffile.imread(io.BytesIO(body))


def ours(src: str, dest: str, threads: int) -> None:
    """``plan`` + ``write_cubes`` in this process."""
    options = resolve_storage_options(src)
    plans = cellpainting.plan(src, dest, cellpainting.CellPaintingOptions(storage_options=options))
    write_cubes(plans, options, runner=Runner(threads=threads, progress=False))


def cli_command(src: str, dest: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "ingest", "cellpainting", src, dest,
            "--threads", str(threads), "--no-progress"]  # fmt: skip


def ours_cli(src: str, dest: str, threads: int) -> float:
    """``python -m ingest cellpainting`` in a subprocess; its start-up, as it prints it."""
    proc = subprocess.run(cli_command(src, dest, threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    found = re.search(r"start-up ([\d.]+) s", proc.stdout)
    if found is None:
        raise RuntimeError(f"no start-up in the CLI's summary:\n{proc.stdout}")
    return float(found.group(1))


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any], server: psutil.Process) -> Run:
    """Run ``fn`` once: wall, this process's and its waited children's CPU, the server's CPU."""
    own, children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    served = sum(server.cpu_times()[:2])
    start = time.perf_counter()
    startup = fn() or 0.0
    seconds = time.perf_counter() - start
    client = cpu_seconds(resource.RUSAGE_SELF) - own
    client += cpu_seconds(resource.RUSAGE_CHILDREN) - children
    return Run(seconds - startup, client, sum(server.cpu_times()[:2]) - served, startup)


def remove(s3: Any, prefix: str) -> None:
    """Delete what a run wrote (outside the timed part), so that moto's memory stays flat."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket="bench", Delete={"Objects": objects})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="account for one run's CPU")
    args = parser.parse_args()
    with moto_bucket() as (s3, server_process):
        server = psutil.Process(server_process.pid)
        options = resolve_storage_options("s3://bench")
        write_synth_plate("s3://bench/raw", wells=parse_wells(str(args.wells)),
                          fields=args.fields, size=SIZE, storage_options=options)  # fmt: skip
        keys = sorted(
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="raw/")
            for o in page.get("Contents", [])
            if o["Key"].endswith(".tiff")
        )
        mb = len(keys) * SIZE * SIZE * 2 / 1e6
        shape = (args.wells, args.fields, CHANNELS, SIZE, SIZE)
        t = args.threads
        methods: dict[str, Callable[[str], Any]] = {
            f"plain GET+PUT copy ({t} threads)": lambda out: copy_objects(s3, keys, t),
            "naive loop (GET, tifffile, zarr one chunk per image)": lambda out: naive(
                s3, keys, f"s3://bench/{out}", options, shape
            ),
            f"ours: write_cubes in-process ({t} threads)": lambda out: ours(
                "s3://bench/raw", f"s3://bench/{out}", t
            ),
            f"ours: python -m ingest, start-up excluded ({t} threads)": lambda out: ours_cli(
                "s3://bench/raw", f"s3://bench/{out}", t
            ),
        }
        runs: dict[str, list[Run]] = {name: [] for name in methods}
        for k in range(args.runs):  # interleaved: each round measures every method once
            for m, (name, fn) in enumerate(methods.items()):
                out = f"out{m}-{k}.zarr"
                runs[name].append(timed(lambda fn=fn, out=out: fn(out), server))
                remove(s3, out)
                remove(s3, "copy/")
        report(runs, len(keys), mb, args)
        if args.profile:
            from _cpu_account import account_in_process

            account_in_process(lambda: ours("s3://bench/raw", "s3://bench/accounted.zarr", t))


def report(runs: dict[str, list[Run]], n: int, mb: float, args: argparse.Namespace) -> None:
    best = {name: min(rs, key=lambda r: r.seconds) for name, rs in runs.items()}
    names = list(best)
    copy, naive_, *ours_ = (mb / best[name].seconds for name in names)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{when}; {n} TIFFs ({SIZE}x{SIZE} uint16), {mb:.0f} MB of pixels, S3 -> S3 on "
          f"moto_server in its own process; {psutil.cpu_count()} cores, load average "
          f"{psutil.getloadavg()[0]:.1f}; best of {args.runs}\n")  # fmt: skip
    print("| method | seconds | MB/s | vs copy | vs naive | CPU-s client | CPU-s server |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        r = best[name]
        rate = mb / r.seconds
        print(f"| {name} | {r.seconds:.2f} | {rate:.0f} | {rate / copy:.2f}x | "
              f"{rate / naive_:.2f}x | {r.client_cpu:.2f} | {r.server_cpu:.2f} |")  # fmt: skip
    cli = best[names[-1]]
    print(f"\nThe CLI's start-up (interpreter + imports + parsing, as it prints it): "
          f"{cli.startup:.2f} s in the best run; its client CPU-s include it.")  # fmt: skip
    for label, rate in zip(("in-process", "CLI"), ours_, strict=True):
        print(f"Targets, ours {label}: {rate / copy:.2f}x the copy (>= 0.8x), "
              f"{rate / naive_:.2f}x the naive loop (>= 2x)")  # fmt: skip


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
