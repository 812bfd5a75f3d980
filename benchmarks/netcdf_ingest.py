"""NetCDF ingest throughput against what climate users do instead, same files, one run.

Monthly NetCDF4 files of daily steps (``synth-climate``: int16 packing per file,
noleap calendar, 3 surface variables and T on 4 levels) in a moto S3 server
running as its own process on 127.0.0.1. Compared, as MB/s of decoded float32
values written and as ratios to ours:

- ``xr.open_mfdataset(files).to_zarr()``: what users write today, on dask
  threads, and on a dask.distributed ``LocalCluster`` of 2 processes;
- a plain boto3 GET + PUT copy of the same file bytes with the same threads
  (no decoding, no compression: the I/O bound of this machine);
- ours: ``python -m ingest netcdf`` in its own process (its interpreter
  start-up measured separately and subtracted, reported as its own row).

Peak RSS of ours is measured for a quarter of the files and for all of them:
it must not grow with the number of files.

    .venv/bin/python benchmarks/netcdf_ingest.py [--years 9] [--grid 73x144] [--threads 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

from _moto import bench_bucket, copy_objects, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path

use_dummy_credentials()

from cubes.store import resolve_storage_options  # noqa: E402
from ingest.sources.netcdf.synth import parse_grid, write_synth_climate  # noqa: E402


def keys_under(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def mfdataset(keys: list[str], dest: str, distributed: bool, threads: int) -> None:
    """``xr.open_mfdataset(...).to_zarr(...)`` as users write it (fsspec file objects)."""
    import s3fs
    import xarray as xr

    fs = s3fs.S3FileSystem()
    files = [fs.open(f"bench/{k}") for k in keys]
    client = None
    if distributed:
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=2, threads_per_worker=threads // 2))
    try:
        ds = xr.open_mfdataset(files, engine="h5netcdf", combine="by_coords", parallel=True)
        ds.to_zarr(fs.get_mapper(dest), mode="w", consolidated=True, zarr_format=3)
    finally:
        if client is not None:
            client.cluster.close()
            client.close()


_WRAPPER = (
    "import resource, runpy, sys\n"
    "sys.argv = ['ingest', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('ingest', run_name='__main__')\n"
    "finally:\n"
    "    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def ours(src: str, dest: str, threads: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``python -m ingest netcdf`` in its own process."""
    cmd = [sys.executable, "-c", _WRAPPER, "netcdf", src, dest, "--overwrite", "--no-progress",
           "--threads", str(threads)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    rss = int(proc.stderr.strip().splitlines()[-1].split()[-1]) * 1024
    return seconds, rss


def startup() -> float:
    """Interpreter start-up and the CLI's imports: what a no-op command costs."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ingest", "--help"], capture_output=True, check=True)
    return time.perf_counter() - start


def best(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=9, help="years of monthly files (12 each)")
    parser.add_argument("--grid", default="73x144")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="best of N")
    args = parser.parse_args()
    with bench_bucket() as s3:
        options = resolve_storage_options("s3://bench")
        grid = parse_grid(args.grid)
        synth = write_synth_climate("s3://bench/raw", years=args.years, grid=grid,
                                    storage_options=options)  # fmt: skip
        keys = keys_under(s3, "raw/")
        file_mb = sum(o["Size"] for o in _objects(s3, "raw/")) / 1e6
        points = grid[0] * grid[1]
        mb = synth.n_steps * points * (3 + 4) * 4 / 1e6  # decoded float32 values
        quarter = keys[: max(1, len(keys) // 4)]
        for key in quarter:
            s3.copy_object(Bucket="bench", Key=f"quarter/{key}", CopySource=f"bench/{key}")
        up = startup()
        times = {
            "xr.open_mfdataset().to_zarr() (dask threads)": best(
                lambda: mfdataset(keys, "bench/mf.zarr", False, args.threads), args.runs
            ),
            "xr.open_mfdataset().to_zarr() (LocalCluster, 2 processes)": best(
                lambda: mfdataset(keys, "bench/mfd.zarr", True, args.threads), args.runs
            ),
            f"plain GET+PUT copy ({args.threads} threads)": best(
                lambda: copy_objects(s3, keys, args.threads), args.runs
            ),
        }
        runs = [
            ours("s3://bench/raw", "s3://bench/ours.zarr", args.threads) for _ in range(args.runs)
        ]
        ours_s = min(r[0] for r in runs) - up
        rss_all = max(r[1] for r in runs)
        _, rss_quarter = ours("s3://bench/quarter/raw", "s3://bench/q.zarr", args.threads)
        name = f"python -m ingest netcdf ({args.threads} threads, start-up excluded)"
        times[name] = ours_s
        print(f"\n{len(keys)} files, {file_mb:.0f} MB stored, {mb:.0f} MB decoded float32; "
              f"grid {grid[0]}x{grid[1]}, {synth.n_steps} steps; "
              f"best of {args.runs}\n")  # fmt: skip
        print("| method | seconds | MB/s (decoded) | ours vs this |\n|---|---:|---:|---:|")
        for label, seconds in times.items():
            print(f"| {label} | {seconds:.1f} | {mb / seconds:.0f} | {seconds / ours_s:.2f}x |")
        print(f"| start-up of `python -m ingest` (excluded above) | {up:.2f} | | |")
        print(f"\nThe copy moves {file_mb:.0f} MB of files: ours vs copy in file MB/s = "
              f"{(file_mb / ours_s) / (file_mb / times[list(times)[2]]):.2f}x")  # fmt: skip
        print(f"Peak RSS of ours: {len(quarter)} files {rss_quarter / 1e6:.0f} MB, "
              f"{len(keys)} files {rss_all / 1e6:.0f} MB "
              f"(ratio {rss_all / rss_quarter:.2f})")  # fmt: skip


def _objects(s3, prefix: str) -> list[dict]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix)
    return [o for page in pages for o in page.get("Contents", [])]


if __name__ == "__main__":
    main()
