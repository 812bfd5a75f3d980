"""What does a recipe cost per unit, next to the plain loop a user would write instead?

The same light function (mean and max per channel of one field) over every
field of a synthetic plate, two ways, in one run on this machine (best of 3):

- **plain loop**: ``open_cube``, then for each well and field
  ``ds[["images", "present"]].sel(well=…, field=…).load()``, call the function,
  add the well and field, and at the end ``pd.concat`` and one ``to_parquet``;
- **recipe**: ``load_recipe`` + ``open_units`` + ``run_recipe`` (a part and a
  done marker per unit) + ``finalize_recipe`` (one Parquet file), with 1
  thread (the bookkeeping's cost) and with the default 8 threads.

Prints units/s, the ratio to the plain loop, the per-unit overhead in ms, and
checks that the merged Parquet reads back in one ``pandas.read_parquet`` call
equal to the loop's table. ``--s3`` puts cube and results on a moto server in
its own process instead of local disk.

    .venv/bin/python benchmarks/recipe_overhead.py [--wells 12] [--fields 4] [--size 256] [--s3]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from _moto import bench_bucket, use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path

import cubes
from cubes.store import filesystem
from ingest.cli import main as ingest
from ingest.recipe import (
    RecipeDest,
    finalize_recipe,
    load_recipe,
    open_units,
    run_recipe,
    source_fingerprint,
)
from ingest.runner import Runner

use_dummy_credentials()

RECIPE = """
import numpy as np
import pandas as pd


def recipe(ds):
    images = ds["images"].values.astype(np.float64)
    return pd.DataFrame({
        "channel": [str(c) for c in ds["channel"].values],
        "mean": images.mean(axis=(1, 2)),
        "max": images.max(axis=(1, 2)),
    })
"""


def light(ds: Any) -> pd.DataFrame:
    images = ds["images"].values.astype(np.float64)
    return pd.DataFrame(
        {
            "channel": [str(c) for c in ds["channel"].values],
            "mean": images.mean(axis=(1, 2)),
            "max": images.max(axis=(1, 2)),
        }
    )


def plain_loop(cube: str, dest: str, options: dict[str, Any]) -> pd.DataFrame:
    ds = cubes.open_cube(cube, storage_options=options)
    frames = []
    for well in ds["well"].values:
        for field in ds["field"].values:
            frame = light(ds[["images", "present"]].sel(well=well, field=field).load())
            frame.insert(0, "well", str(well))
            frame.insert(1, "field", int(field))
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    fs, path = filesystem(dest, options)
    with fs.open(path, "wb") as f:
        table.to_parquet(f, index=False)
    return table


def with_recipe(cube: str, dest: str, options: dict[str, Any], recipe: str, threads: int) -> None:
    rd = RecipeDest(dest, options)
    space = open_units(cube, options, None, source_fingerprint(cube, options))
    runner = Runner(threads=threads, progress=False)
    run_recipe(load_recipe(recipe), space, rd, runner=runner, overwrite=True)
    finalize_recipe(dest, options)


def best(fn: Callable[[int], None], repeat: int = 3) -> float:
    times = []
    for k in range(repeat):
        start = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - start)
    return min(times)


def measure(root: str, work: str, options: dict[str, Any], n: int) -> None:
    cube = f"{root}/plate.zarr"
    recipe = os.path.join(work, "light.py")
    with open(recipe, "w") as f:
        f.write(RECIPE)
    loop = best(lambda k: plain_loop(cube, f"{root}/loop-{k}.parquet", options))
    one = best(lambda k: with_recipe(cube, f"{root}/r1-{k}", options, recipe, 1))
    eight = best(lambda k: with_recipe(cube, f"{root}/r8-{k}", options, recipe, 8))
    start = time.perf_counter()
    merged = pd.read_parquet(f"{root}/r8-0", storage_options=options or None)
    read_s = time.perf_counter() - start
    expected = plain_loop(cube, f"{root}/loop-check.parquet", options)
    pd.testing.assert_frame_equal(merged, expected)
    print(f"{'way':<24}{'seconds':>9}{'units/s':>10}{'x loop':>8}")
    for name, seconds in (
        ("plain loop", loop),
        ("recipe, 1 thread", one),
        ("recipe, 8 threads", eight),
    ):
        print(f"{name:<24}{seconds:>9.2f}{n / seconds:>10.1f}{loop / seconds:>8.2f}")
    print(f"per-unit overhead, 1 thread: {(one - loop) / n * 1e3:+.1f} ms")
    print(
        f"merged Parquet read back in one call: {len(merged)} rows in {read_s * 1e3:.0f} ms, "
        "equal to the loop's table"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=12)
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--s3", action="store_true", help="cube and results on moto S3")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = args.wells * args.fields
    print(
        f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{args.wells} wells x {args.fields} fields of 8x{args.size}x{args.size} uint16, "
        f"{'moto S3' if args.s3 else 'local disk'}"
    )
    work = tempfile.mkdtemp(prefix="recipe-bench-")
    try:
        src = os.path.join(work, "src")
        ingest(["synth-plate", src, "--wells", str(args.wells), "--fields", str(args.fields),
                "--size", str(args.size)])  # fmt: skip
        if args.s3:
            with bench_bucket() as _:
                root = "s3://bench"
                ingest(["cellpainting", src, f"{root}/plate.zarr", "--no-progress"])
                measure(root, work, {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, n)
        else:
            ingest(["cellpainting", src, os.path.join(work, "plate.zarr"), "--no-progress"])
            measure(work, work, {}, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
