"""``python -m ingest recipe CUBE DEST --recipe path/to/recipe.py[:function]``."""

from __future__ import annotations

import argparse
from typing import Any

from ingest.cli_common import common_arguments, run_arguments, storage_arguments, sub_parser
from ingest.sources.base import ON_ERROR

__all__ = ["add_recipe_command", "print_report"]

EXAMPLES = (
    "python -m ingest recipe s3://bkt/plate.zarr s3://bkt/profiles "
    "--recipe examples/recipes/cell_profiles.py",
    "python -m ingest recipe plate.zarr embeddings.zarr --recipe examples/recipes/embed.py",
    "python -m ingest recipe plate.zarr per-well --recipe r.py --unit well --on-error skip",
    "python -m ingest recipe s3://bkt/plate.zarr s3://bkt/out --recipe r.py "
    "--task-index 3 --task-count 8   # then: python -m ingest finalize s3://bkt/out",
)


def add_recipe_command(sub: Any) -> None:
    """Add the ``recipe`` sub-command to ``python -m ingest``."""
    p = sub_parser(
        sub,
        "recipe",
        "apply a Python function to every unit of a cube (a field, a time step), merged",
        "Call a function on every unit of a cube (one position along its layout's sample "
        "dims: a plate's well and field, a climate cube's time step; --unit for coarser "
        "units) and merge what it returns: a pandas.DataFrame per unit becomes one Parquet "
        "dataset at DEST (pandas.read_parquet(DEST)), a dict of arrays / xarray.Dataset per "
        "unit a derived cube at DEST. Each unit is recorded when done: the same command run "
        "again computes only the missing ones.",
        EXAMPLES,
    )
    p.add_argument("cube", metavar="CUBE", help="the source cube (local path or s3:// URL)")
    p.add_argument("dest", metavar="DEST", help="where the results go (local path or s3:// URL)")
    p.add_argument(
        "--recipe",
        required=True,
        metavar="FILE[:FUNCTION]",
        help="a Python file and the function in it to call with each unit's xarray.Dataset "
        "(default function: recipe)",
    )
    p.add_argument(
        "--unit",
        type=lambda text: tuple(d.strip() for d in text.split(",") if d.strip()),
        default=None,
        metavar="DIM[,DIM]",
        help="the sample dims one unit is a position of (default: all of the cube's, e.g. "
        "well,field; 'well' makes a plate's whole well one unit)",
    )
    p.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="fail",
        help="fail: a unit whose recipe raises stops the job (default); skip: record it with "
        "its exception text and go on (the next run tries it again)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard DEST's results (of another recipe or cube too) and compute every unit",
    )
    run_arguments(p)
    storage_arguments(p, with_anon=True)
    common_arguments(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> None:
    from cubes.store import resolve_storage_options
    from ingest.recipe.load import load_recipe
    from ingest.recipe.merge import finalize_recipe
    from ingest.recipe.provenance import source_fingerprint
    from ingest.recipe.run import run_recipe
    from ingest.recipe.store import RecipeDest
    from ingest.recipe.units import open_units, parse_uid
    from ingest.runner import Runner
    from ingest.slices import TaskSlice

    task_slice = TaskSlice.resolve(args.task_index, args.task_count)
    src_options = resolve_storage_options(
        args.cube, endpoint_url=args.endpoint_url, anon=True if args.anon else None
    )
    dest_options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    recipe = load_recipe(args.recipe, resolve_storage_options(args.recipe))
    fingerprint = source_fingerprint(args.cube, src_options)
    space = open_units(args.cube, src_options, args.unit, fingerprint)
    dest = RecipeDest(args.dest, dest_options)
    runner = Runner(
        threads=args.threads,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
    )
    result = run_recipe(
        recipe,
        space,
        dest,
        runner=runner,
        task_slice=task_slice,
        on_error=args.on_error,
        overwrite=args.overwrite,
    )
    what = f"{result.computed} computed, {result.absent} absent, {len(result.failed)} failed"
    before = result.n_units - result.computed - result.absent - len(result.failed)
    print(
        f"{args.dest}: {result.n_units} units, {before} done before; {what} in "
        f"{result.seconds:.1f} s"
    )
    for record in result.failed:
        print(f"  failed: {space.describe(parse_uid(record['unit']))}: {record['error']}")
    if task_slice is not None:
        print(f"When all {task_slice.count} slices are done: python -m ingest finalize {args.dest}")
        return
    print_report(finalize_recipe(args.dest, dest_options))


def print_report(report: dict[str, Any]) -> None:
    """What ``finalize`` merged (the CLI's output)."""
    if report["kind"] is None:
        print("No unit returned a result: nothing merged.")
    elif report["kind"] == "table":
        print(
            f"Merged {report['rows']} rows of {report['done']} units into "
            f"{len(report['outputs'])} Parquet file(s): pandas.read_parquet({report['dest']!r})"
        )
    else:
        print(
            f"Merged {report['done']} units into the cube {report['outputs'][0]} (cubes.open_cube)"
        )
    if report["failed"]:
        print(
            f"{len(report['failed'])} unit(s) failed (listed in the report); re-run the same "
            "command to try them again:"
        )
        for record in report["failed"][:10]:
            coords = ", ".join(f"{k}={v}" for k, v in record["coords"].items())
            print(f"  {coords}: {record['error']}")
