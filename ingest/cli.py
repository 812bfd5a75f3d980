"""``python -m ingest``: the command line.

Errors the user can fix (:class:`cubes.CubeError`) end the command with a
one-paragraph message on stderr and exit status 2, without a traceback;
``--log-level DEBUG`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cubes.errors import CubeError
from cubes.store import resolve_storage_options
from ingest.sources import SOURCES

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.writer import IngestResult

__all__ = ["main"]

logger = logging.getLogger("ingest")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _storage_arguments(parser: argparse.ArgumentParser, *, with_anon: bool) -> None:
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, then AWS); credentials come "
        "from the standard AWS chain",
    )
    if with_anon:
        group.add_argument(
            "--anon",
            action="store_true",
            help="read SRC anonymously (public buckets such as cellpainting-gallery)",
        )


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per source format, plus ``synth-plate``."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Convert raw scientific sources into Zarr v3 cubes on S3 or local disk.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<source>")
    for name, source in SOURCES.items():
        p = sub.add_parser(
            name,
            help=source.help,
            description=source.help,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in source.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("src", metavar="SRC", help="local folder or s3:// prefix")
        p.add_argument("dest", metavar="DEST", help="local path or s3:// URL of the cube")
        p.add_argument("--overwrite", action="store_true", help="replace a cube at DEST")
        p.add_argument(
            "--threads", type=int, default=8, help="threads (per worker process) (default 8)"
        )
        p.add_argument(
            "--workers", type=int, default=None, help="start a LocalCluster of N processes"
        )
        p.add_argument(
            "--scheduler", default=None, help="address of a dask.distributed scheduler to use"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        array = p.add_argument_group(
            "array jobs",
            "write one slice of the plan per task (default from AWS_BATCH_JOB_ARRAY_INDEX / "
            "AWS_BATCH_JOB_ARRAY_SIZE or JOB_COMPLETION_INDEX), then `finalize DEST`",
        )
        array.add_argument("--task-index", type=int, default=None, help="this slice, 0-based")
        array.add_argument("--task-count", type=int, default=None, help="number of slices")
        source.add_arguments(p)
        _storage_arguments(p, with_anon=True)
        _common_arguments(p)
        p.set_defaults(handler=_run_source)

    p = sub.add_parser(
        "finalize",
        help="complete the cube(s) an array job wrote, once every slice is done",
        description="Complete the cube (or the plates under a batch prefix) written by the "
        "slices of an array job: statistics, quality report, consolidated metadata and the "
        "completion mark. Names the slices that have not finished, if any (exit status 2).",
    )
    p.add_argument("dest", metavar="DEST", help="the cube, or the prefix of a batch's plates")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    _storage_arguments(p, with_anon=False)
    _common_arguments(p)
    p.set_defaults(handler=_run_finalize)

    p = sub.add_parser(
        "synth-plate",
        help="write a realistic synthetic Cell Painting plate (TIFFs + load_data.csv)",
    )
    p.add_argument("dest", metavar="DEST", help="local folder or s3:// prefix")
    p.add_argument("--wells", default="12", help="a count (first N wells) or names A01,B03")
    p.add_argument("--fields", type=int, default=4, help="fields (sites) per well (default 4)")
    p.add_argument("--size", type=int, default=256, help="image height/width (default 256)")
    p.add_argument("--jump-size", action="store_true", help="1080x1080 images, as in JUMP")
    p.add_argument("--plate", default="SYNTH0001", help="plate id (default SYNTH0001)")
    p.add_argument("--plate-format", type=int, choices=(96, 384, 1536), default=384)
    p.add_argument("--compression", choices=("none", "lzw"), default="none")
    p.add_argument(
        "--measurement", default="Measurement1", help="plate folder suffix (default Measurement1)"
    )
    p.add_argument("--seed", type=int, default=0)
    _storage_arguments(p, with_anon=False)
    _common_arguments(p)
    p.set_defaults(handler=_run_synth)
    from ingest.sources.netcdf.synth import add_synth_climate_parser

    add_synth_climate_parser(sub)
    return parser


def _run_source(args: argparse.Namespace) -> None:
    from ingest.runner import Runner
    from ingest.slices import TaskSlice
    from ingest.writer import write_cubes

    source = SOURCES[args.command]
    task_slice = TaskSlice.resolve(args.task_index, args.task_count)
    src_options = resolve_storage_options(
        args.src, endpoint_url=args.endpoint_url, anon=True if args.anon else None
    )
    dest_options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    options = source.options_from_args(args, src_options)
    plans = source.plan(args.src, args.dest, options)
    results = write_cubes(
        plans,
        dest_options,
        overwrite=args.overwrite,
        runner=Runner(
            threads=args.threads,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=not args.no_progress,
        ),
        task_slice=task_slice,
    )
    if task_slice is not None:
        for result in results:
            print(f"Slice {task_slice.index} of {task_slice.count}: {_wrote(result)}")
        print(f"When all {task_slice.count} slices are done: python -m ingest finalize {args.dest}")
        return
    _summarize(args.dest, plans, results, dest_options)


def _wrote(result: IngestResult) -> str:
    if result.n_tasks == 0:
        return f"{result.dest} is up to date: nothing written"
    return (
        f"wrote {result.dest}: {result.n_inputs} input files in {result.n_tasks} tasks, "
        f"{result.bytes_written / 1e6:.1f} MB"
    )


def _summarize(
    dest: str, plans: list[IngestPlan], results: list[IngestResult], options: dict[str, Any]
) -> None:
    """Print what was written and its quality; write the batch's index of plates."""
    from ingest.index import write_plate_index
    from ingest.report import summary_line

    for result in results:
        line = _wrote(result)
        print(line[0].upper() + line[1:])
        print(f"  {summary_line(result.quality)}")
    total = sum(r.bytes_written for r in results) / 1e6
    seconds = max(r.seconds for r in results)
    print(f"{len(results)} cube(s), {total:.1f} MB in {seconds:.1f} s ({total / seconds:.1f} MB/s)")
    if any(plan.dest != dest for plan in plans):  # a batch
        print(f"Index of the plates: {write_plate_index(dest, plans, results, options)}")


def _run_finalize(args: argparse.Namespace) -> None:
    from ingest.writer import finalize_cubes

    options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    done = finalize_cubes(args.dest, options)
    if not done:
        print(f"{args.dest} is complete: nothing to finalize")
        return
    _summarize(args.dest, [plan for plan, _ in done], [result for _, result in done], options)


def _run_synth(args: argparse.Namespace) -> None:
    from ingest.sources.cellpainting.synth import JUMP_SIZE, parse_wells, write_synth_plate

    options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    plate = write_synth_plate(
        args.dest,
        wells=parse_wells(args.wells, args.plate_format),
        fields=args.fields,
        size=JUMP_SIZE if args.jump_size else args.size,
        seed=args.seed,
        plate=args.plate,
        plate_format=args.plate_format,
        measurement=args.measurement,
        compression=None if args.compression == "none" else args.compression,
        storage_options=options,
    )
    print(f"Wrote {plate.n_images} images to {plate.images_url} and {plate.load_data_url}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args.handler(args)
    except CubeError as exc:
        logger.debug("Failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: the cube is left incomplete; re-run to finish it.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
