"""``python -m cubes``: list, describe and preview cubes, local or on S3. Reads only.

Errors the user can fix (:class:`cubes.CubeError`: a wrong URL or endpoint, no
cube there, an option that does not fit the cube) end the command with a
one-line message on stderr and exit status 2, without a traceback;
``--log-level DEBUG`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from cubes._cli import (
    configure_logging,
    int_at_least,
    log_level_argument,
    main_parser,
    run_command,
    storage_arguments,
    sub_parser,
)
from cubes.errors import IncompleteCubeWarning
from cubes.store import resolve_storage_options

__all__ = ["main"]

logger = logging.getLogger("cubes")

_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part"  # zarr's, on every open

LS_EXAMPLES = (
    "python -m cubes ls demo-data/",
    "python -m cubes ls s3://my-bucket/cubes/Batch1/ --sizes",
    "python -m cubes ls s3://my-bucket/cubes/ --recursive --json --endpoint-url http://localhost:9000",
)
DESCRIBE_EXAMPLES = (
    "python -m cubes describe demo-data/plate.zarr",
    "python -m cubes describe s3://my-bucket/cubes/Batch1/BR00117035.zarr --json",
)
PREVIEW_EXAMPLES = (
    "python -m cubes preview demo-data/plate.zarr --out /tmp/plate.png",
    "python -m cubes preview s3://my-bucket/plate.zarr --out plate.png --channels DNA,Mito "
    "--fields 1",
    "python -m cubes preview demo-data/climate.zarr --out t.png --variable T --time 2000-03-01 "
    "--level 50000",
    "python -m cubes preview data/samples.zarr --out sheet.png --count 25",
)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected names separated by commas")
    return names


def _fields(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected field numbers separated by commas (1,2)"
        ) from None


def _level(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected a number (a level coordinate value such as 50000)"
        ) from None


def _common(parser: argparse.ArgumentParser) -> None:
    """``--endpoint-url``, ``--anon``, ``--log-level``."""
    storage_arguments(parser, anon="read anonymously (public buckets), unsigned")
    log_level_argument(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: ``ls``, ``describe`` and ``preview``."""
    parser = main_parser(
        "python -m cubes",
        "List, describe and preview cubes, local or on S3 (reads only).",
        [LS_EXAMPLES[0], DESCRIBE_EXAMPLES[0], PREVIEW_EXAMPLES[0]],
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="<command>", help="`<command> --help` for more"
    )
    _ls_parser(sub)
    _describe_parser(sub)
    _preview_parser(sub)
    return parser


def _ls_parser(sub: Any) -> None:
    p = sub_parser(
        sub,
        "ls",
        "one line per cube under a prefix: kind, samples, channels, dtype, status, when written",
        "One line per cube under PREFIX (or PREFIX itself, if it is a cube): URL, kind, samples "
        "(a plate's wells × fields, a time series' steps and time range, an array cube's "
        "samples), channels or variables, dtype, stored size (with --sizes), complete or not "
        "(and how many items are absent), and when it was written. Zarr stores that are not "
        "cubes (OME-NGFF exports, plain groups) are listed as 'not a cube'; a cube a batch's "
        "plates.csv lists but that is not there as 'absent'.\n\n"
        "Requests: one delimiter listing of PREFIX (and of each folder below with --recursive), "
        "one read of each cube's root zarr.json (its consolidated metadata), plates.csv, and a "
        "coordinate read where the metadata does not say (a time series' first and last time); "
        "never a walk over the shards.",
        LS_EXAMPLES,
    )
    p.add_argument("prefix", metavar="PREFIX", help="local folder or s3:// prefix (or a cube)")
    p.add_argument(
        "--recursive", action="store_true", help="look into folders below that are not cubes"
    )
    p.add_argument(
        "--sizes",
        action="store_true",
        help="add each cube's stored size, summed over a listing of its objects (a LIST request "
        "per 1,000 objects of each cube: off by default, as it grows with the shards)",
    )
    p.add_argument("--json", action="store_true", help="a JSON list, one object per cube")
    _common(p)
    p.set_defaults(handler=_run_ls)


def _describe_parser(sub: Any) -> None:
    p = sub_parser(
        sub,
        "describe",
        "a cube's layout, variables, chunks/shards/codecs, statistics, provenance and quality",
        "What one cube holds: its layout (sample dims, window dims, channels, mask), dims and "
        "sizes, each variable's dtype, chunks, shards and codecs, the statistics stored per "
        "channel or variable (and level), provenance (source, inputs fingerprint, software "
        "version, time), the quality report's summary and whether the cube is complete. Reads "
        "the metadata, coordinates and statistics, never the pixels.",
        DESCRIBE_EXAMPLES,
    )
    p.add_argument("url", metavar="URL", help="local path or s3:// URL of the cube")
    p.add_argument("--json", action="store_true", help="a JSON object instead of text")
    _common(p)
    p.set_defaults(handler=_run_describe)


def _preview_parser(sub: Any) -> None:
    p = sub_parser(
        sub,
        "preview",
        "a PNG: a plate montage, a map of a time step, or a contact sheet of samples",
        "Draw a cube into a PNG, reading only what is drawn. A plate: a montage of the stored "
        "thumbnails, wells at their plate positions, fields side by side, channels as a colour "
        "composite (DNA blue, ER green, RNA yellow, AGP red, Mito magenta) each scaled between "
        "its stored p01 and p99; a field missing some drawn images is framed in red, one "
        "missing all of them filled dark red. A time series on a grid (climate): a map of one "
        "variable at one time step (and level), coloured between the variable's stored min and "
        "max. Other cubes (arrays): a contact sheet of the first samples of one variable. "
        "Needs matplotlib.",
        PREVIEW_EXAMPLES,
    )
    p.add_argument("url", metavar="URL", help="local path or s3:// URL of the cube")
    p.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write (or s3://)")
    p.add_argument(
        "--variable", default=None, help="map / contact sheet: the variable (default: the first)"
    )
    p.add_argument(
        "--time",
        default=None,
        metavar="T",
        help="map: the time step, ISO date or time (2000-03-01; default: the first present)",
    )
    p.add_argument(
        "--level",
        type=_level,
        default=None,
        metavar="L",
        help="map: the level, nearest coordinate value (default: the first level)",
    )
    p.add_argument(
        "--channels",
        type=_names,
        default=None,
        metavar="A,B",
        help="plate: channels to composite (default: DNA, ER, RNA, AGP, Mito where present)",
    )
    p.add_argument(
        "--fields",
        type=_fields,
        default=None,
        metavar="1,2",
        help="plate: fields to draw (default: all; one field is faster on a large plate)",
    )
    p.add_argument(
        "--count",
        type=int_at_least(1),
        default=16,
        metavar="N",
        help="contact sheet: how many samples, from the first (default 16)",
    )
    _common(p)
    p.set_defaults(handler=_run_preview)


def _options(url: str, args: argparse.Namespace) -> dict[str, Any]:
    return resolve_storage_options(
        url, endpoint_url=args.endpoint_url, anon=True if args.anon else None
    )


def _run_ls(args: argparse.Namespace) -> None:
    from cubes.listing import format_table, list_cubes

    summaries = list_cubes(
        args.prefix, _options(args.prefix, args), recursive=args.recursive, sizes=args.sizes
    )
    if args.json:
        print(json.dumps([s.to_json() for s in summaries], indent=1))
    else:
        print(format_table(summaries))


def _run_describe(args: argparse.Namespace) -> None:
    from cubes.describe import describe_cube, format_description

    description = describe_cube(args.url, _options(args.url, args))
    if args.json:
        print(json.dumps(description, indent=1, default=str))
    else:
        print(format_description(description))


def _run_preview(args: argparse.Namespace) -> None:
    from cubes.preview import preview_cube

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IncompleteCubeWarning)
        result = preview_cube(
            args.url,
            args.out,
            storage_options=_options(args.url, args),
            variable=args.variable,
            time=args.time,
            level=args.level,
            channels=args.channels,
            fields=args.fields,
            count=args.count,
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"Wrote {result.path} ({result.width}x{result.height} px): {result.what}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0; 2 for a mistake the user can fix (an argument, a URL, the endpoint,
        no cube there), with a one-line message on stderr; 130 when interrupted. ``--help`` and
        ``--version`` exit (:class:`SystemExit`, status 0).
    """

    def command() -> None:
        args = build_parser().parse_args(argv)
        configure_logging(args.log_level)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            warnings.simplefilter("ignore", IncompleteCubeWarning)  # ls/describe say it
            args.handler(args)

    return run_command(command, logger, interrupted="interrupted")
