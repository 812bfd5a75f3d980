"""Argument helpers shared by the CLI and the sources' own commands (``synth-plate`` …)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.checks import endpoint_url, int_at_least

if TYPE_CHECKING:
    from ingest.result import IngestResult

__all__ = [
    "LOG_LEVELS",
    "Clock",
    "common_arguments",
    "epilog",
    "process_start",
    "progress_argument",
    "run_arguments",
    "storage_arguments",
    "sub_parser",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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


def storage_arguments(parser: argparse.ArgumentParser, *, with_anon: bool) -> None:
    """``--endpoint-url`` (and ``--anon`` for commands that read SRC)."""
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


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level``."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        help="what to log on stderr: DEBUG (with tracebacks), INFO, WARNING (default) or ERROR",
    )


def progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar on stderr (:mod:`ingest.progress`)."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (drawn once the work has taken a second)",
    )


def run_arguments(p: argparse.ArgumentParser) -> None:
    """Where a job runs: ``--threads``, ``--workers``, ``--scheduler``, ``--no-progress`` and the
    array-job options ``--task-index`` / ``--task-count``."""
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
    progress_argument(p)
    array = p.add_argument_group(
        "array jobs",
        "run one slice per task (default from AWS_BATCH_JOB_ARRAY_INDEX / "
        "AWS_BATCH_JOB_ARRAY_SIZE or JOB_COMPLETION_INDEX), then `finalize DEST`",
    )
    array.add_argument(
        "--task-index", type=int_at_least(0), default=None, help="this slice, 0-based"
    )
    array.add_argument(
        "--task-count", type=int_at_least(1), default=None, help="number of slices, 1 or more"
    )


def process_start() -> float:
    """When this process started (``time.time()`` scale), as the OS counts it.

    The interpreter's own start-up and every import before :func:`ingest.cli.main`
    runs count in the command's time. On Linux: the process's start in clock ticks
    since boot (``/proc/self/stat``) against ``/proc/uptime``, to 10 ms (psutil's
    ``create_time()`` adds the boot time, which Linux gives in whole seconds: up to
    1 s off); elsewhere psutil's ``create_time()``.
    """
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            age = float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        import psutil

        return float(psutil.Process().create_time())


@dataclass(frozen=True)
class Clock:
    """When a command started and when its arguments were parsed (``time.time()``)."""

    started: float
    parsed: float

    def summary(self, megabytes: float, results: Sequence[IngestResult]) -> str:
        """``in 3.1 s (72.3 MB/s): start-up 0.4 s, planning 0.5 s, writing 2.2 s (102 MB/s)``.

        The whole wall time from ``started`` to now: start-up (interpreter, imports,
        parsing), planning (with the imports it needs) and the writer's time.
        """
        wall = time.time() - self.started
        startup = self.parsed - self.started
        writing = max((r.seconds for r in results), default=0.0)
        planning = max(wall - startup - writing, 0.0)
        return (
            f"in {wall:.1f} s ({megabytes / max(wall, 1e-6):.1f} MB/s): start-up {startup:.1f} s, "
            f"planning {planning:.1f} s, writing {writing:.1f} s "
            f"({megabytes / max(writing, 1e-6):.1f} MB/s)"
        )
