"""Where the tasks run: dask threads here (default), or a dask.distributed cluster.

``Runner(workers=N)`` starts a ``LocalCluster`` of N processes for this job;
``Runner(scheduler="tcp://host:8786")`` uses a running cluster. Tasks carry
URLs and options, never open handles, so they run anywhere; each worker
process opens its stores once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dask
import dask.threaded
from dask.diagnostics import ProgressBar

from ingest import progress as bars

__all__ = ["Runner"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runner:
    """How to compute a job's dask graphs.

    Parameters
    ----------
    threads
        Threads of the local scheduler, or per worker process on a ``LocalCluster``.
    workers
        Start a ``LocalCluster`` with this many worker processes.
    scheduler
        Address of a running dask.distributed scheduler (takes precedence).
    progress
        Show progress on stderr.
    """

    threads: int = 8
    workers: int | None = None
    scheduler: str | None = None
    progress: bool = True

    def compute(self, *graphs: Any) -> tuple[Any, ...]:
        """Compute delayed objects together; results in the same order."""
        with self.session() as compute:
            return compute(*graphs)

    @contextlib.contextmanager
    def session(self) -> Iterator[Callable[..., tuple[Any, ...]]]:
        """A ``compute(*graphs)`` for several graphs in turn, on one cluster.

        A ``LocalCluster`` (``workers``) starts once for the session, not once
        per graph; a running cluster's client connects once.
        """
        if not (self.scheduler or self.workers):
            yield self._compute_threads
            return
        from distributed import Client, LocalCluster

        _quiet_distributed()
        with contextlib.ExitStack() as stack:
            if self.scheduler:
                client = stack.enter_context(Client(self.scheduler))
            else:
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=self.threads,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=logging.getLogger().getEffectiveLevel(),
                    )
                )
                client = stack.enter_context(Client(cluster))
            logger.info("Running on %s", client)
            yield functools.partial(self._compute_distributed, client)

    def _compute_threads(self, *graphs: Any) -> tuple[Any, ...]:
        bar = ProgressBar(out=sys.stderr, minimum=bars.MINIMUM_S) if self.progress else _NoBar()
        # Our own pool, so that a failing task stops the job only after the tasks
        # in flight have finished (their shards and journal markers whole), before
        # the caller releases the destination's lock.
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ingest")
        try:
            with bar:  # the function, not "threads": that name makes dask import distributed
                return dask.compute(*graphs, scheduler=dask.threaded.get, pool=pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _compute_distributed(self, client: Any, *graphs: Any) -> tuple[Any, ...]:
        from distributed import progress

        futures = client.compute(list(graphs))
        if self.progress:
            with contextlib.redirect_stdout(sys.stderr):
                progress(futures)
        return tuple(client.gather(futures))


def _quiet_distributed() -> None:
    """Make distributed's loggers (configured at import) follow the root level (--log-level)."""
    level = logging.getLogger().getEffectiveLevel()
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] == "distributed":
            logging.getLogger(name).setLevel(level)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
