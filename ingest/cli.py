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
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cubes._cli import configure_logging, main_parser, run_command
from cubes.errors import ArgumentError
from cubes.store import resolve_storage_options
from ingest.checks import check_batch_dest
from ingest.cli_common import (
    Clock,
    common_arguments,
    run_arguments,
    storage_arguments,
    sub_parser,
)
from ingest.codecs import CODEC_NAMES, FLOAT_DEFAULT, INTEGER_DEFAULT, codec_choice
from ingest.recipe.cli import add_recipe_command
from ingest.sources import SOURCES

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.writer import IngestResult

__all__ = ["main"]

logger = logging.getLogger("ingest")

FINALIZE_EXAMPLES = (
    "python -m ingest finalize s3://my-bucket/plate.zarr",
    "python -m ingest finalize s3://my-bucket/batch1/   # every plate of a batch",
    "python -m ingest finalize /scratch/plate.zarr --log-level INFO",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per source format, ``finalize`` and ``synth-plate``.

    Every value is checked as it is parsed: a mistake raises :class:`ArgumentError`
    (exit status 2, one line) before anything is read or written.
    """
    parser = main_parser(
        "python -m ingest",
        "Convert raw scientific sources into Zarr v3 cubes on S3 or local disk.",
        [e for source in SOURCES.values() for e in source.examples[:1]],
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="<source>",
        help="a source format to convert, finalize or synth-plate; `<source> --help` for more",
    )
    for name, source in SOURCES.items():
        p = sub_parser(sub, name, source.help, source.help, source.examples)
        _source_arguments(p)
        source.add_arguments(p)
        storage_arguments(p, with_anon=True)
        common_arguments(p)
        p.set_defaults(handler=_run_source)
    add_recipe_command(sub)
    _finalize_parser(sub)
    for source in SOURCES.values():  # a source's own commands (synth-plate, synth-climate)
        add_commands = getattr(source, "add_commands", None)
        if add_commands is not None:
            add_commands(sub)
    return parser


def _source_arguments(p: argparse.ArgumentParser) -> None:
    """SRC, DEST and the options of every source: how to write, where to run."""
    p.add_argument("src", metavar="SRC", help="local folder or s3:// prefix")
    p.add_argument("dest", metavar="DEST", help="local path or s3:// URL of the cube")
    p.add_argument("--overwrite", action="store_true", help="replace a cube at DEST")
    p.add_argument(
        "--codec",
        type=codec_choice,
        default=None,
        metavar="NAME",
        help=f"the codec of the cube's data: {', '.join(CODEC_NAMES)} (default: chosen by "
        f"measurement, docs/codecs.md: {INTEGER_DEFAULT} for integers such as pixels, "
        f"{FLOAT_DEFAULT} for floats; a cube resumed or appended to keeps its own)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing: print the inputs, cubes, objects, stored bytes, S3 requests, cost "
        "and wall time the run would take (rates from a few sampled tasks)",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print it as JSON")
    run_arguments(p)


def _finalize_parser(sub: Any) -> None:
    p = sub_parser(
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
    storage_arguments(p, with_anon=False)
    common_arguments(p)
    p.set_defaults(handler=_run_finalize)


def _run_source(args: argparse.Namespace) -> None:
    from ingest.runner import Runner
    from ingest.slices import TaskSlice
    from ingest.writer import write_cubes

    source = SOURCES[args.command]
    if args.json and not args.dry_run:
        raise ArgumentError("--json prints a dry run's plan: add --dry-run, or leave --json out.")
    task_slice = TaskSlice.resolve(args.task_index, args.task_count)
    src_options = resolve_storage_options(
        args.src, endpoint_url=args.endpoint_url, anon=True if args.anon else None
    )
    dest_options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    options = source.options_from_args(args, src_options)
    plans = source.plan(args.src, args.dest, options)
    check_batch_dest(args.src, args.dest, plans, dest_options)
    if args.dry_run:
        from ingest.dryrun_text import run_dry_run

        run_dry_run(args, plans, dest_options, task_slice)
        return
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
    _summarize(args.dest, plans, results, dest_options, args.clock)


def _wrote(result: IngestResult, *, verb: str = "wrote") -> str:
    """What was done to one cube; ``verb`` starts the sentence (paths keep their case)."""
    if result.n_tasks == 0:
        return f"{result.dest} is up to date: nothing written"
    return (
        f"{verb} {result.dest}: {result.n_inputs} inputs in {result.n_tasks} tasks, "
        f"{result.bytes_written / 1e6:.1f} MB"
    )


def _summarize(
    dest: str,
    plans: list[IngestPlan],
    results: list[IngestResult],
    options: dict[str, Any],
    clock: Clock,
) -> None:
    """Print what was written, its quality and the times; write the batch's index of plates."""
    from ingest.index import write_batch_index
    from ingest.report import summary_line

    for result in results:
        print(_wrote(result, verb="Wrote"))
        print(f"  {summary_line(result.quality)}")
    total = sum(r.bytes_written for r in results) / 1e6
    print(f"{len(results)} cube(s), {total:.1f} MB {clock.summary(total, results)}")
    if any(plan.dest != dest for plan in plans):  # a batch
        index = write_batch_index(dest, plans, results, options)
        if index is not None:
            print(f"Index of the cubes: {index}")


def _run_finalize(args: argparse.Namespace) -> None:
    from ingest.recipe import finalize_recipe, is_recipe_output, print_report
    from ingest.writer import finalize_cubes

    options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    if is_recipe_output(args.dest, options):  # a recipe's units, not a cube's slices
        return print_report(finalize_recipe(args.dest, options))
    done = finalize_cubes(args.dest, options)
    if not done:
        print(f"{args.dest} is complete: nothing to finalize")
        return
    plans, results = [plan for plan, _ in done], [result for _, result in done]
    _summarize(args.dest, plans, results, options, args.clock)


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).
    started
        When the command started (``time.time()``), for the times it prints;
        ``python -m ingest`` passes the start of its process (default: now).

    Returns
    -------
    int
        0; 2 for a mistake the user can fix (an argument, an input, DEST), with a
        one-line message on stderr; 130 when interrupted. ``--help`` and
        ``--version`` exit (:class:`SystemExit`, status 0).
    """

    def command() -> None:
        args = build_parser().parse_args(argv)
        args.clock = Clock(time.time() if started is None else started, time.time())
        configure_logging(args.log_level)
        args.handler(args)

    return run_command(
        command,
        logger,
        interrupted="interrupted: the cube is left incomplete; re-run to finish it.",
    )
