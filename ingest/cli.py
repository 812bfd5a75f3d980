"""``python -m ingest``: the command line.

Errors the user can fix (:class:`cubes.CubeError`) end the command with a
one-paragraph message on stderr and exit status 2, without a traceback;
``--log-level DEBUG`` shows the traceback too. Argument values are checked as
they are parsed (:mod:`ingest.checks`), and inputs named by URL and DEST before
the writer starts, so such a mistake never leaves anything written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import cubes
from cubes.errors import CubeError
from cubes.store import resolve_storage_options
from ingest.checks import check_batch_dest, endpoint_url, int_at_least, matching
from ingest.sources import SOURCES, ArgumentError
from ingest.sources.netcdf.synth import add_synth_climate_parser

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.writer import IngestResult

__all__ = ["main"]

logger = logging.getLogger("ingest")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

FINALIZE_EXAMPLES = (
    "python -m ingest finalize s3://my-bucket/plate.zarr",
    "python -m ingest finalize s3://my-bucket/batch1/   # every plate of a batch",
    "python -m ingest finalize /scratch/plate.zarr --log-level INFO",
)
SYNTH_EXAMPLES = (
    "python -m ingest synth-plate demo-data/plate",
    "python -m ingest synth-plate demo-data/batch --plate SYNTH0002 --wells A01,B03 --fields 2",
    "python -m ingest synth-plate s3://my-bucket/synth --jump-size --compression lzw",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are :class:`ArgumentError`: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`ArgumentError` naming the option, the value and what is accepted."""
        raise ArgumentError(f"{message.removeprefix('argument ')} (see '{self.prog} --help')")


def _epilog(examples: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {e}" for e in examples)


def _storage_arguments(parser: argparse.ArgumentParser, *, with_anon: bool) -> None:
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--endpoint-url",
        type=endpoint_url,
        default=None,
        metavar="URL",
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
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="what to log on stderr: DEBUG (with tracebacks), INFO, WARNING (default) or ERROR",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per source format, ``finalize`` and ``synth-plate``.

    Every value is checked as it is parsed: a mistake raises :class:`ArgumentError`
    (exit status 2, one line) before anything is read or written.
    """
    parser = _Parser(
        prog="python -m ingest",
        description="Convert raw scientific sources into Zarr v3 cubes on S3 or local disk.",
        epilog=_epilog([e for source in SOURCES.values() for e in source.examples[:1]]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"cellcubes {cubes.__version__}",
        help="show the version of cellcubes and exit",
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="<source>",
        help="a source format to convert, finalize or synth-plate; `<source> --help` for more",
    )
    for name, source in SOURCES.items():
        p = _sub_parser(sub, name, source.help, source.help, source.examples)
        _source_arguments(p)
        source.add_arguments(p)
        _storage_arguments(p, with_anon=True)
        _common_arguments(p)
        p.set_defaults(handler=_run_source)
    _finalize_parser(sub)
    _synth_parser(sub)
    add_synth_climate_parser(sub)
    return parser


def _sub_parser(
    sub: Any, name: str, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with its examples."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_epilog(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _source_arguments(p: argparse.ArgumentParser) -> None:
    """SRC, DEST and the options of every source: how to write, where to run."""
    p.add_argument("src", metavar="SRC", help="local folder or s3:// prefix")
    p.add_argument("dest", metavar="DEST", help="local path or s3:// URL of the cube")
    p.add_argument("--overwrite", action="store_true", help="replace a cube at DEST")
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        default=8,
        help="threads (per worker process), 1 or more (default 8)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=None,
        help="start a LocalCluster of N processes, 1 or more (default: threads only)",
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
    array.add_argument(
        "--task-index", type=int_at_least(0), default=None, help="this slice, 0-based"
    )
    array.add_argument(
        "--task-count", type=int_at_least(1), default=None, help="number of slices, 1 or more"
    )


def _finalize_parser(sub: Any) -> None:
    p = _sub_parser(
        sub,
        "finalize",
        "complete the cube(s) an array job wrote, once every slice is done",
        "Complete the cube (or the plates under a batch prefix) written by the slices of an "
        "array job: statistics, quality report, consolidated metadata and the completion mark. "
        "Names the slices that have not finished, if any (exit status 2).",
        FINALIZE_EXAMPLES,
    )
    p.add_argument("dest", metavar="DEST", help="the cube, or the prefix of a batch's plates")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    _storage_arguments(p, with_anon=False)
    _common_arguments(p)
    p.set_defaults(handler=_run_finalize)


def _synth_parser(sub: Any) -> None:
    summary = "write a realistic synthetic Cell Painting plate (TIFFs + load_data.csv)"
    p = _sub_parser(
        sub,
        "synth-plate",
        summary,
        f"{summary}, in a plate folder DEST/<plate>__<timestamp>-<measurement>/Images/; "
        "several plates in one DEST make a batch",
        SYNTH_EXAMPLES,
    )
    p.add_argument("dest", metavar="DEST", help="local folder or s3:// prefix")
    p.add_argument("--wells", default="12", help="a count (first N wells) or names A01,B03")
    p.add_argument(
        "--fields", type=int_at_least(1), default=4, help="fields (sites) per well (default 4)"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size", type=int_at_least(1), default=256, help="image height/width (default 256)"
    )
    size.add_argument("--jump-size", action="store_true", help="1080x1080 images, as in JUMP")
    _plate_arguments(p)
    p.add_argument(
        "--compression",
        choices=("none", "lzw"),
        default="none",
        help="TIFF compression (default none, as most JUMP images)",
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="seed of the images' content, 0 or more; a seed and a field give one image "
        "(default 0)",
    )
    _storage_arguments(p, with_anon=False)
    _common_arguments(p)
    p.set_defaults(handler=_run_synth)


def _plate_arguments(p: argparse.ArgumentParser) -> None:
    """``synth-plate``'s plate: id, format and folder name (as JUMP names them)."""
    p.add_argument(
        "--plate",
        type=matching(r"(?!.*__)[A-Za-z0-9][A-Za-z0-9._-]*", "letters, digits, . _ - (not __)"),
        default="SYNTH0001",
        help="plate id, the start of the plate folder's name (default SYNTH0001)",
    )
    p.add_argument(
        "--plate-format",
        type=int,
        choices=(96, 384, 1536),
        default=384,
        help="wells of the plate (default 384)",
    )
    p.add_argument(
        "--measurement",
        type=matching(r"Measurement ?\d+", "Measurement followed by a number"),
        default="Measurement1",
        help="plate folder suffix: Measurement1 (default) or 'Measurement 1'",
    )


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
    check_batch_dest(args.src, args.dest, plans, dest_options)
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


def _wrote(result: IngestResult, *, verb: str = "wrote") -> str:
    """What was done to one cube; ``verb`` starts the sentence (paths keep their case)."""
    if result.n_tasks == 0:
        return f"{result.dest} is up to date: nothing written"
    return (
        f"{verb} {result.dest}: {result.n_inputs} inputs in {result.n_tasks} tasks, "
        f"{result.bytes_written / 1e6:.1f} MB"
    )


def _summarize(
    dest: str, plans: list[IngestPlan], results: list[IngestResult], options: dict[str, Any]
) -> None:
    """Print what was written and its quality; write the batch's index of plates."""
    from ingest.index import write_plate_index
    from ingest.report import summary_line

    for result in results:
        print(_wrote(result, verb="Wrote"))
        print(f"  {summary_line(result.quality)}")
    total = sum(r.bytes_written for r in results) / 1e6
    seconds = max(r.seconds for r in results)
    rate = total / max(seconds, 1e-6)
    print(f"{len(results)} cube(s), {total:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s)")
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
    wells = parse_wells(args.wells, args.plate_format)  # ArgumentError before writing
    plate = write_synth_plate(
        args.dest,
        wells=wells,
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
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0; 2 for a mistake the user can fix (an argument, an input, DEST), with a
        one-line message on stderr; 130 when interrupted. ``--help`` and
        ``--version`` exit (:class:`SystemExit`, status 0).
    """
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        args.handler(args)
    except CubeError as exc:
        logger.debug("Failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: the cube is left incomplete; re-run to finish it.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
