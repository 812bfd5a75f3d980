"""Ingest throughput against what users do instead, on the same plate, in one run.

A JUMP-size synthetic plate (1080x1080 uint16, 8 channels) in a moto S3 server
running as its own process on 127.0.0.1. Compared, as MB/s of pixels and as
ratios to ours:

- naive: the loop users write: for each TIFF, boto3 GET, tifffile decode, write
  the image into the same Zarr layout, one after the other;
- copy: a plain boto3 GET + PUT of the same TIFF bytes with the same number of
  threads (no decoding, no compression: the I/O bound of this machine);
- ours: ``python -m ingest cellpainting`` (``write_cubes``: plan, schema,
  tasks, statistics, report, consolidation).

    .venv/bin/python benchmarks/ingest_speed.py [--wells 4] [--fields 3] [--threads 8]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import tifffile
import zarr
from _moto import bench_bucket, copy_objects, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path

use_dummy_credentials()

from cubes.store import resolve_storage_options, zarr_store  # noqa: E402
from ingest.runner import Runner  # noqa: E402
from ingest.sources import cellpainting  # noqa: E402
from ingest.sources.cellpainting import COMPRESSOR, IMAGE_NAME  # noqa: E402
from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate  # noqa: E402
from ingest.writer import write_cubes  # noqa: E402


def naive(s3, keys: list[str], dest: str, options: dict, shape: tuple) -> None:
    """GET, decode, write one image at a time into the same layout."""
    store = zarr_store(dest, options, read_only=False)
    arr = zarr.create_array(
        store, shape=shape, chunks=(1, 1, 1, *shape[-2:]), shards=(1, 1, shape[2], *shape[-2:]),
        dtype="uint16", compressors=[COMPRESSOR], zarr_format=3, overwrite=True,
    )  # fmt: skip
    wells: dict = {}
    fields: dict = {}
    for key in keys:
        g = IMAGE_NAME.match(key.rsplit("/", 1)[-1]).groupdict()  # type: ignore[union-attr]
        w = wells.setdefault((g["row"], g["column"]), len(wells))
        f = fields.setdefault(g["field"], len(fields))
        body = s3.get_object(Bucket="bench", Key=key)["Body"].read()
        image = tifffile.imread(io.BytesIO(body))
        arr[w, f, int(g["channel"]) - 1] = image  # a partial shard write: read-modify-write


def ours(src: str, dest: str, threads: int) -> None:
    options = resolve_storage_options(src)
    plans = cellpainting.plan(src, dest, cellpainting.CellPaintingOptions(storage_options=options))
    write_cubes(plans, options, overwrite=True, runner=Runner(threads=threads, progress=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with bench_bucket() as s3:
        options = resolve_storage_options("s3://bench")
        wells = parse_wells(str(args.wells))
        write_synth_plate("s3://bench/raw", wells=wells, fields=args.fields, size=1080,
                          storage_options=options)  # fmt: skip
        keys = sorted(
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="raw/")
            for o in page.get("Contents", [])
            if o["Key"].endswith(".tiff")
        )
        mb = len(keys) * 1080 * 1080 * 2 / 1e6
        shape = (args.wells, args.fields, 8, 1080, 1080)
        runs = {
            "naive loop (GET, tifffile, zarr write; sequential)": lambda: naive(
                s3, keys, "s3://bench/naive.zarr", options, shape
            ),
            f"plain GET+PUT copy ({args.threads} threads)": lambda: copy_objects(
                s3, keys, args.threads
            ),
            f"python -m ingest cellpainting ({args.threads} threads)": lambda: ours(
                "s3://bench/raw", "s3://bench/ours.zarr", args.threads
            ),
        }
        times = {}
        for name, fn in runs.items():
            best = []
            for _ in range(2):
                start = time.perf_counter()
                fn()
                best.append(time.perf_counter() - start)
            times[name] = min(best)
        ours_mbs = mb / times[list(runs)[-1]]
        print(f"\n{len(keys)} TIFFs, {mb:.0f} MB of pixels; moto_server in its own process\n")
        print("| method | seconds | MB/s | ours vs this |\n|---|---:|---:|---:|")
        for name, seconds in times.items():
            ratio = ours_mbs / (mb / seconds)
            print(f"| {name} | {seconds:.1f} | {mb / seconds:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
