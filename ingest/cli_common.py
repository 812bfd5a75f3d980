"""Argument helpers shared by the CLI and the sources' own commands (``synth-plate`` …).

The parser helpers both command lines use live in :mod:`cubes._cli` (``cubes`` is the
lower layer); this module names them as the sources' commands import them, and adds
``python -m ingest``'s own: SRC's ``--anon`` and the clock of its summary line.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cubes._cli import LOG_LEVELS, epilog, sub_parser
from cubes._cli import log_level_argument as common_arguments
from cubes._cli import storage_arguments as _storage_arguments
from ingest.checks import int_at_least

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


def storage_arguments(parser: argparse.ArgumentParser, *, with_anon: bool) -> None:
    """``--endpoint-url`` (and ``--anon`` for commands that read SRC)."""
    anon = "read SRC anonymously (public buckets such as cellpainting-gallery)"
    _storage_arguments(parser, anon=anon if with_anon else None)


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
