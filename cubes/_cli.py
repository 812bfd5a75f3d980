"""What the command lines share: one-line argument errors, examples, storage and log options.

``python -m cubes`` and ``python -m ingest`` (and the sources' own commands) build
their parsers from these, so that a mistake reads the same in both: one line on
stderr naming the option, the value and what is accepted, exit status 2. ``ingest``
imports this module; ``cubes`` never imports ``ingest``. Nothing here imports more
than the standard library and :mod:`cubes.errors`: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cubes.errors import ArgumentError, CubeError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "LOG_LEVELS",
    "Parser",
    "configure_logging",
    "endpoint_url",
    "epilog",
    "int_at_least",
    "log_level_argument",
    "main_parser",
    "run_command",
    "storage_arguments",
    "sub_parser",
]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are :class:`ArgumentError`: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`ArgumentError` naming the option, the value and what is accepted."""
        raise ArgumentError(f"{message.removeprefix('argument ')} (see '{self.prog} --help')")


def main_parser(prog: str, description: str, examples: Sequence[str]) -> Parser:
    """A command line's parser: its description, ``--version`` and its examples."""
    import cubes

    parser = Parser(
        prog=prog,
        description=description,
        epilog=epilog(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"cellcubes {cubes.__version__}",
        help="show the version of cellcubes and exit",
    )
    return parser


def epilog(examples: Sequence[str]) -> str:
    """The ``examples:`` block that ends a ``--help``."""
    return "examples:\n" + "\n".join(f"  {e}" for e in examples)


def sub_parser(
    sub: Any, name: str, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with its examples."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def endpoint_url(text: str) -> str:
    """An argparse ``type=``: an S3 endpoint, ``http(s)://host[:port]``."""
    if not re.fullmatch(r"https?://[^/\s]+/?", text):
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected an endpoint URL such as http://localhost:9000 or "
            "https://s3.us-east-1.amazonaws.com"
        )
    return text


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number of at least ``minimum``.

    Examples
    --------
    >>> int_at_least(1)("8")
    8
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"got {text!r}; expected a whole number of at least {minimum}"
            )
        return value

    return parse


def storage_arguments(parser: argparse.ArgumentParser, *, anon: str | None) -> None:
    """``--endpoint-url``, and ``--anon`` with the help ``anon`` unless it is None."""
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--endpoint-url",
        type=endpoint_url,
        default=None,
        metavar="URL",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, then AWS); credentials come "
        "from the standard AWS chain",
    )
    if anon is not None:
        group.add_argument("--anon", action="store_true", help=anon)


def log_level_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-level``."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="what to log on stderr: DEBUG (with tracebacks), INFO, WARNING (default) or ERROR",
    )


def run_command(command: Callable[[], None], logger: logging.Logger, *, interrupted: str) -> int:
    """Run a command line's work; its exit status.

    0; 2 for a :class:`CubeError` (a mistake the user can fix), printed as one
    ``error: …`` line on stderr (the traceback is logged at DEBUG); 130 when
    interrupted, after printing ``interrupted``.
    """
    try:
        command()
    except CubeError as exc:
        logger.debug("Failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def configure_logging(level: str) -> None:
    """Log at ``level`` on stderr, with time, level and logger name."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
