"""Writing a planned cube: schema first, then shard-aligned tasks, then the completion mark.

The order makes an interrupted job safe: the group is created with
``cube_complete: false``; tasks write whole shards that nothing else touches;
only after every task has succeeded are the ``present`` mask and statistics
written, ``cube_complete`` set and the metadata consolidated. A cube that
looks complete is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import dask

from cubes.errors import SchemaError
from cubes.store import (
    check_location,
    filesystem,
    storage_errors,
)
from ingest.dest import prepare_dest
from ingest.finalize import complete, finalize_cubes
from ingest.journal import list_done
from ingest.lock import WriterLock
from ingest.output import output_of
from ingest.plan import IngestPlan
from ingest.report import quality_report_url
from ingest.result import IngestResult
from ingest.runner import Runner
from ingest.slices import TaskSlice, check_manifest, slice_tasks
from ingest.tasks import Job, Partial, delayed_tasks, merge_partials, write_extra

__all__ = ["IngestResult", "finalize_cubes", "write_cube", "write_cubes"]

logger = logging.getLogger(__name__)

# Tasks per dask graph: a whole JUMP plate (384 wells x 9 fields = 3,456) is one
# wave; smaller cubes share one. ~8 KB of graph per task: ~33 MB at most.
WAVE_TASKS = 4096


def write_cube(
    plan: IngestPlan,
    dest_options: dict[str, Any],
    *,
    overwrite: bool = False,
    progress: bool = True,
    threads: int = 8,
) -> IngestResult:
    """Write one planned cube; see :func:`write_cubes`."""
    return write_cubes(
        [plan], dest_options, overwrite=overwrite, progress=progress, threads=threads
    )[0]


def write_cubes(
    plans: list[IngestPlan],
    dest_options: dict[str, Any],
    *,
    overwrite: bool = False,
    progress: bool = True,
    threads: int = 8,
    runner: Runner | None = None,
    task_slice: TaskSlice | None = None,
    wave_tasks: int = WAVE_TASKS,
) -> list[IngestResult]:
    """Write planned cubes (the plates of a batch) in parallel, in waves of dask graphs.

    Every destination is checked and locked before anything is written. Then,
    wave by wave (consecutive cubes of about ``wave_tasks`` tasks in all),
    each cube's schema is created, the wave's tasks run together, and its cubes
    are finalized: a batch's memory does not grow with its plates, and plates
    finished before a failure stay complete.
    With ``task_slice`` only that slice's tasks are written (an array job,
    :mod:`ingest.slices`) and nothing is finalized: :func:`finalize_cubes` does
    that once every slice is done.

    Parameters
    ----------
    plans
        From a source module's ``plan()``.
    dest_options
        Storage options of the destinations.
    overwrite
        Replace cubes already at the destinations (never other data).
    progress
        Show a progress bar on stderr.
    threads
        Threads of the local dask scheduler; the tasks are I/O bound.
    runner
        Where the tasks run (a dask.distributed cluster …); default: ``threads``
        local threads, with a progress bar if ``progress``.
    task_slice
        Write one slice of an array job; the results then cover the slice only
        and carry no statistics or quality report.
    wave_tasks
        Fields (tasks) per wave; a plate is never split between waves.

    Raises
    ------
    CubeExistsError
        A destination holds a cube and ``overwrite`` is false, or holds other data.
    DestinationLockedError
        Another job is writing a destination (see :mod:`ingest.lock`).
    """
    start = time.perf_counter()
    selected: list[set[tuple[int, ...]] | None] = [None] * len(plans)
    if task_slice is not None:
        if overwrite or any(not output_of(p).journal for p in plans):
            raise SchemaError(
                "--overwrite and outputs without a journal (--ome) cannot be combined with an "
                "array job (--task-count): "
                "slices write one cube together. Delete DEST first, or run without slices."
            )
        cut = slice_tasks(plans, task_slice.count)
        mine = [set(per_plan.get(task_slice.index, [])) for per_plan in cut]
        plans, selected, cut = _keep_slice(plans, mine, cut)
        if not plans:
            logger.warning("Slice %s has no tasks to write", task_slice.part)
            return []
    for plan in plans:
        check_location(plan.dest, dest_options)  # fail fast on a bad endpoint or bucket
    part = task_slice.part if task_slice else None
    with contextlib.ExitStack() as locks:
        for plan in plans:
            locks.enter_context(WriterLock(plan.dest, dest_options, part=part))
        states = [
            prepare_dest(plan, dest_options, overwrite, shared=task_slice is not None)
            for plan in plans
        ]
        if task_slice is not None:  # every plate's cut checked before any is written
            for k, plan in enumerate(plans):
                check_manifest(plan, dest_options, task_slice.count, cut[k])
        runner = runner or Runner(threads=threads, progress=progress)
        waves = _waves(
            [
                0 if st == "done" else _n_tasks(p, c)
                for p, st, c in zip(plans, states, selected, strict=True)
            ],
            wave_tasks,
        )
        results: list[IngestResult] = []
        with runner.session() as compute:
            for number, wave in enumerate(waves, 1):
                if len(waves) > 1:
                    logger.info(
                        "Wave %d of %d: %d cube(s), %d tasks",
                        number,
                        len(waves),
                        len(wave),
                        sum(_n_tasks(plans[k], selected[k]) for k in wave),
                    )
                for k in wave:
                    plan, state = plans[k], states[k]
                    if state == "resume" and task_slice is None:
                        logger.warning("%s: resuming an interrupted ingest", plan.dest)
                    elif state == "new":
                        output_of(plan).create(plan, dest_options)
                partials = _run_tasks(
                    [plans[k] for k in wave],
                    dest_options,
                    compute,
                    states=[states[k] for k in wave],
                    selected=[selected[k] for k in wave],
                )
                finalize = task_slice is None
                for k, partial in zip(wave, partials, strict=True):
                    plan, state, chosen = plans[k], states[k], selected[k]
                    results.append(
                        _result(plan, state, partial, chosen, dest_options, start, finalize)
                    )
        return results


def _n_tasks(plan: IngestPlan, chosen: set[tuple[int, ...]] | None) -> int:
    return len(plan.tasks) if chosen is None else len(chosen)


def _waves(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive plans (their indices) grouped into waves of at most ``limit`` tasks.

    A plan larger than ``limit`` is a wave of its own; plans with nothing to
    do join any wave. Each wave is one dask graph, so the graph (~8 KB per
    task) and the results held at once stay bounded however many plates a
    batch has.
    """
    waves: list[list[int]] = []
    total = limit + 1
    for k, size in enumerate(sizes):
        if waves and total + size <= limit:
            waves[-1].append(k)
            total += size
        else:
            waves.append([k])
            total = size
    return waves


def _result(
    plan: IngestPlan,
    state: str,
    partial: Partial | None,
    chosen: set[tuple[int, ...]] | None,
    options: dict[str, Any],
    start: float,
    finalize: bool,
) -> IngestResult:
    """Finalize one cube (unless an array job's slice) and say what was written."""
    stats: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    if state == "done":  # up to date: nothing written
        chosen, quality = set(), _read_report(plan.dest, options)
    elif finalize:
        assert partial is not None  # a plan with work to do has its partial
        stats, quality = complete(plan, options, partial)
    n_tasks = _n_tasks(plan, chosen)
    mine = [t for t in plan.tasks if chosen is None or t.index in chosen]
    return IngestResult(
        dest=plan.dest,
        n_tasks=n_tasks,
        n_inputs=sum(len(t.inputs) for t in mine),
        bytes_written=sum(plan.task_bytes(t.index) for t in mine),
        seconds=time.perf_counter() - start,
        stats=stats,
        quality=quality,
    )


def _read_report(dest: str, options: dict[str, Any]) -> dict[str, Any]:
    url = quality_report_url(dest)
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        report: dict[str, Any] = json.loads(fs.cat_file(path))
    return report


def _keep_slice(
    plans: list[IngestPlan],
    mine: list[set[tuple[int, ...]]],
    cut: list[dict[int, list[tuple[int, ...]]]],
) -> tuple[list[IngestPlan], list[set[tuple[int, ...]] | None], list[dict[int, list[Any]]]]:
    """The plans with tasks in this slice, with the slice's task indexes and the whole cut."""
    kept = [k for k, chosen in enumerate(mine) if chosen]
    return [plans[k] for k in kept], [mine[k] for k in kept], [cut[k] for k in kept]


def _run_tasks(
    plans: list[IngestPlan],
    options: dict[str, Any],
    compute: Callable[..., tuple[Any, ...]],
    *,
    states: list[str],
    selected: list[set[tuple[int, ...]] | None],
) -> list[Partial]:
    """Run the tasks (those in ``selected``, per plan, if given) and the per-group gathers."""
    extra = dask.delayed(write_extra, pure=False)
    totals: list[Any] = []
    extras: list[Any] = []
    for plan, state, chosen in zip(plans, states, selected, strict=True):
        if state == "done":
            totals.append(None)
            continue
        job = Job.of(plan, options, output_of(plan))
        done = list_done(plan.dest, options) if state in ("resume", "append") else set()
        if state in ("resume", "append"):
            logger.log(
                logging.WARNING if chosen is None else logging.INFO,
                "%s: %d of %d tasks already done",
                plan.dest,
                len(done),
                len(plan.tasks),
            )
        totals.append(_tree_reduce(delayed_tasks(plan, job, chosen, done)))
        if chosen is None or plan.tasks[0].index in chosen:  # the slice of the first group
            extras += [extra(name, make, job) for name, make in plan.extras.items()]
    with storage_errors(plans[0].dest, options):
        *results, _ = compute(*totals, extras)
    return list(results)


def _tree_reduce(items: list[Any], fan_in: int = 16) -> Any:
    """Merge delayed partials as a tree, so no step holds all of them at once."""
    merge = dask.delayed(merge_partials, pure=True)
    while len(items) > 1:
        items = [merge(*items[i : i + fan_in]) for i in range(0, len(items), fan_in)]
    return items[0]
