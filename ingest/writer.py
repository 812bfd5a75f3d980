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
import os
import posixpath
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import zarr
from zarr.storage import MemoryStore

from cubes import conventions as cv
from cubes.errors import CubeExistsError, SchemaError
from cubes.store import (
    check_location,
    filesystem,
    group_array,
    is_local,
    join_url,
    storage_errors,
    zarr_store,
)
from ingest.journal import (
    journal_started,
    list_done,
    load_done,
    record_done,
    remove_journal,
    start_journal,
)
from ingest.lock import WriterLock
from ingest.plan import BlockReader, IngestPlan, ShardTask
from ingest.report import quality_report, quality_report_url, summary_line
from ingest.runner import Runner
from ingest.slices import (
    IncompleteSlicesError,
    TaskSlice,
    check_manifest,
    manifest_url,
    missing_slices,
    read_manifest,
    slice_tasks,
)
from ingest.sources.cellpainting.ome import create_ome, finalize_ome, ome_locator
from ingest.stats import ChannelStats

__all__ = ["IngestResult", "finalize_cubes", "write_cube", "write_cubes"]

logger = logging.getLogger(__name__)

# Fields (tasks) per dask graph: a whole JUMP plate (384 wells x 9 fields = 3,456) is
# one wave; smaller plates share one. ~8 KB of graph per task: ~33 MB at most.
WAVE_TASKS = 4096

_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part in the Zarr format 3"


@dataclass
class _Partial:
    """What tasks report back: which inputs were present, and their statistics."""

    present: list[tuple[tuple[int, ...], np.ndarray]]
    stats: ChannelStats
    skipped: list[tuple[str, str]]
    # derived blocks on their way to the task that writes their whole shard
    derived: dict[tuple[str, tuple[int, ...]], np.ndarray] = field(default_factory=dict)

    def merge(self, *others: _Partial) -> _Partial:
        present, skipped = list(self.present), list(self.skipped)
        stats, derived = self.stats, dict(self.derived)
        for other in others:
            present.extend(other.present)
            skipped.extend(other.skipped)
            stats = stats.merge(other.stats)
            derived.update(other.derived)
        return _Partial(present, stats, skipped, derived)


@dataclass
class IngestResult:
    """Summary of a finished ingest."""

    dest: str
    n_tasks: int
    n_images: int
    bytes_written: int
    seconds: float
    stats: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    quality: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Uncompressed pixel MB written per second."""
        return self.bytes_written / 1e6 / max(self.seconds, 1e-9)


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
    ome: bool = False,
    runner: Runner | None = None,
    task_slice: TaskSlice | None = None,
    wave_tasks: int = WAVE_TASKS,
) -> list[IngestResult]:
    """Write planned cubes (the plates of a batch) in parallel, in waves of dask graphs.

    Every destination is checked and locked before anything is written. Then,
    wave by wave (consecutive plates of about ``wave_tasks`` fields in all),
    each cube's schema is created, the wave's tasks run together, and its cubes
    are finalized: a batch's memory does not grow with its plates, and plates
    finished before a failure stay complete.
    With ``task_slice`` only that slice's fields are written (an array job,
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
    ome
        Write OME-NGFF 0.5 HCS plates (:mod:`ingest.ome`) instead of cubes.
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
        if overwrite or ome:
            raise SchemaError(
                "--overwrite and --ome cannot be combined with an array job (--task-count): "
                "slices write one cube together. Delete DEST first, or run without slices."
            )
        cut = slice_tasks(plans, task_slice.count)
        mine = [set(per_plan.get(task_slice.index, [])) for per_plan in cut]
        plans, selected, cut = _keep_slice(plans, mine, cut)
        if not plans:
            logger.warning("Slice %s has no fields to write", task_slice.part)
            return []
    for plan in plans:
        check_location(plan.dest, dest_options)  # fail fast on a bad endpoint or bucket
    part = task_slice.part if task_slice else None
    with contextlib.ExitStack() as locks:
        for plan in plans:
            locks.enter_context(WriterLock(plan.dest, dest_options, part=part))
        states = [
            _prepare_dest(plan, dest_options, overwrite, ome, shared=task_slice is not None)
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
                        "Wave %d of %d: %d plate(s), %d fields",
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
                        create_ome(plan, dest_options) if ome else _create(plan, dest_options)
                partials = _run_tasks(
                    [plans[k] for k in wave],
                    dest_options,
                    compute,
                    ome=ome,
                    states=[states[k] for k in wave],
                    selected=[selected[k] for k in wave],
                )
                finalize = task_slice is None
                for k, partial in zip(wave, partials, strict=True):
                    plan, state, chosen = plans[k], states[k], selected[k]
                    results.append(
                        _result(plan, state, partial, chosen, dest_options, start, ome, finalize)
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
    partial: _Partial | None,
    chosen: set[tuple[int, ...]] | None,
    options: dict[str, Any],
    start: float,
    ome: bool,
    finalize: bool,
) -> IngestResult:
    """Finalize one cube (unless an array job's slice) and say what was written."""
    stats: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    if state == "done":  # up to date: nothing written
        chosen, quality = set(), _read_report(plan.dest, options)
    elif finalize:
        assert partial is not None  # a plan with work to do has its partial
        stats, quality = _finalize(plan, options, partial, ome=ome)
    n_tasks = _n_tasks(plan, chosen)
    block_bytes = int(np.prod(plan.block_shape)) * plan.template[plan.variable].dtype.itemsize
    return IngestResult(
        dest=plan.dest,
        n_tasks=n_tasks,
        n_images=sum(len(t.inputs) for t in plan.tasks if chosen is None or t.index in chosen),
        bytes_written=block_bytes * n_tasks,
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
    """The plans with fields in this slice, with the slice's task indexes and the whole cut."""
    kept = [k for k, chosen in enumerate(mine) if chosen]
    return [plans[k] for k in kept], [mine[k] for k in kept], [cut[k] for k in kept]


def _prepare_dest(
    plan: IngestPlan, options: dict[str, Any], overwrite: bool, ome: bool, *, shared: bool = False
) -> str:
    """Check and clear the destination: ``"new"`` (create the schema), ``"resume"`` (an
    interrupted ingest of this plan), or ``"done"`` (a complete cube of this very plan:
    same schema and input files, so re-running, or appending plates to a batch, is a
    no-op).

    ``shared``: slices of an array job write DEST together, so the schema is
    created idempotently (never removed, whoever created it).
    """
    dest = plan.dest
    fs, path = filesystem(dest, options)
    with storage_errors(dest, options):
        if is_local(dest):
            entries = os.listdir(path) if os.path.isdir(path) else []
            if os.path.isfile(path):
                entries = [path]
        else:
            entries = fs.find(path, maxdepth=1, withdirs=True)
        has_cube = fs.exists(join_url(path, "zarr.json"))
        started = bool(entries) and not has_cube and journal_started(dest, options)
        if started and shared:
            return "new"  # another slice is creating it, or was interrupted: same bytes
        if started:
            logger.warning("%s: removing a schema whose writing was interrupted", dest)
            fs.rm(path, recursive=True)
            entries = []
        if entries and not has_cube:
            raise CubeExistsError(
                f"{dest} already exists and holds data that is not a cube. Choose a new or "
                "empty DEST; --overwrite only ever replaces a cube."
            )
        if has_cube and not overwrite:
            group = zarr.open_group(zarr_store(dest, options, read_only=True), mode="r")
            complete = group.attrs.get(cv.ATTR_COMPLETE)
            if ome:
                raise CubeExistsError(
                    f"{dest} already holds a plate. Pass --overwrite to replace it, or choose "
                    "another DEST."
                )
            same = _same_schema(group, plan)
            if same and group.attrs.get(cv.ATTR_INPUTS) == plan.fingerprint:
                if complete:
                    logger.info("%s is complete and up to date: nothing to write", dest)
                return "done" if complete else "resume"
            if same and complete is False:  # the source changed under an interrupted run
                raise CubeExistsError(
                    f"{dest} holds an incomplete cube of the same wells, fields and channels but "
                    "other input files than SRC has now. Pass --overwrite to start again."
                )
            raise CubeExistsError(
                f"{dest} holds {'a' if complete else 'an incomplete'} cube of other images than "
                f"SRC has now (different wells, fields, channels, image size or files), which "
                f"this run cannot {'add to' if complete else 'resume'}: adding images to a cube "
                "re-ingests it. Pass --overwrite to replace it, or choose another DEST."
            )
        if has_cube:
            logger.info("Removing the cube at %s (--overwrite)", dest)
            fs.rm(path, recursive=True)
    if not shared:
        remove_journal(dest, options)
    return "new"


def _same_schema(group: zarr.Group, plan: IngestPlan) -> bool:
    t = plan.template
    if cv.IMAGES not in group or group_array(group, cv.IMAGES).shape != t[cv.IMAGES].shape:
        return False
    return all(
        [str(v) for v in group_array(group, dim)[...]] == [str(v) for v in t[dim].values]
        for dim in ("well", "field", "channel")
    )


def _create(plan: IngestPlan, options: dict[str, Any]) -> None:
    """Write the schema (metadata and coords, no pixels) and mark the cube incomplete.

    xarray writes it into memory first; the objects are then uploaded together
    (one concurrent batch instead of ~40 sequential round trips).
    """
    template = plan.template.copy()
    template.attrs.update(plan.attrs)
    template.attrs[cv.ATTR_VERSION] = cv.CONVENTION_VERSION
    template.attrs[cv.ATTR_COMPLETE] = False
    template.attrs[cv.ATTR_INPUTS] = plan.fingerprint
    objects: dict[str, Any] = {}
    template.to_zarr(
        MemoryStore(objects),
        mode="w",
        compute=False,
        zarr_format=3,
        consolidated=False,
        encoding=plan.encoding,
    )
    fs, root = filesystem(plan.dest, options)
    files = {join_url(root, key): value.to_bytes() for key, value in objects.items()}
    root_key = join_url(root, "zarr.json")
    start_journal(plan.dest, options)
    with storage_errors(plan.dest, options):
        fs.pipe({k: v for k, v in files.items() if k != root_key})
        fs.pipe_file(root_key, files[root_key])  # last: a cube is there only when all of it is


def _run_tasks(
    plans: list[IngestPlan],
    options: dict[str, Any],
    compute: Callable[..., tuple[Any, ...]],
    *,
    ome: bool,
    states: list[str],
    selected: list[set[tuple[int, ...]] | None],
) -> list[_Partial]:
    """Run the tasks (those in ``selected``, per plan, if given) and the per-well gathers."""
    write = dask.delayed(_write_task, pure=False)
    gather = dask.delayed(_gather, pure=False)
    extra = dask.delayed(_write_extra, pure=False)
    totals: list[Any] = []
    extras: list[Any] = []
    for plan, state, chosen in zip(plans, states, selected, strict=True):
        if state == "done":
            totals.append(None)
            continue
        resume = state == "resume"
        locate = ome_locator(plan) if ome else _locate_cube
        spec = _Job(
            plan.reader,
            plan.context,
            plan.dest,
            options,
            plan.variable,
            plan.derived,
            locate,
            gather=bool(plan.derived) and not ome,
            journal=not ome,
        )
        job = dask.delayed(spec, pure=True)  # one key, shipped once to distributed workers
        done = list_done(plan.dest, options) if resume else set()
        if resume:
            logger.log(
                logging.WARNING if chosen is None else logging.INFO,
                "%s: %d of %d tasks already done",
                plan.dest,
                len(done),
                len(plan.tasks),
            )
        wells: dict[tuple[int, ...], tuple[list[Any], list[tuple[int, ...]]]] = {}
        for task in plan.tasks:
            if chosen is not None and task.index not in chosen:
                continue
            new, old = wells.setdefault(task.index[:1], ([], []))
            if task.index in done:
                old.append(task.index)
            else:
                new.append(write(task, job))
        gathered = [gather(job, key, old, *new) for key, (new, old) in wells.items()]
        totals.append(_tree_reduce(gathered))
        if chosen is None or plan.tasks[0].index in chosen:  # the slice of the first well
            extras += [extra(name, make, job) for name, make in plan.extras.items()]
    with storage_errors(plans[0].dest, options):
        *results, _ = compute(*totals, extras)
    return list(results)


def _tree_reduce(items: list[Any], fan_in: int = 16) -> Any:
    """Merge delayed partials as a tree, so no step holds all of them at once."""
    merge = dask.delayed(_merge_partials, pure=True)
    while len(items) > 1:
        items = [merge(*items[i : i + fan_in]) for i in range(0, len(items), fan_in)]
    return items[0]


def _merge_partials(first: _Partial, *rest: _Partial) -> _Partial:
    return first.merge(*rest)


@dataclass(frozen=True)
class _Job:
    """What every write task needs: picklable, no open handles."""

    reader: BlockReader
    context: Any
    dest: str
    options: dict[str, Any]
    variable: str
    derived: dict[str, Any]
    locate: Any  # (variable, task index) -> (array path, selection)
    # Derived variables are sharded per leading index (a well's fields in one shard):
    # tasks hand their blocks to one gather task per well, the shard's only writer.
    gather: bool = False
    journal: bool = False  # record each finished task (resume after interruption)


def _locate_cube(name: str, index: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    return name, index


def _write_task(task: ShardTask, job: _Job) -> _Partial:
    block, present, skipped = job.reader(task, job.context)
    path, selection = job.locate(job.variable, task.index)
    _open_array(job.dest, job.options, path)[selection] = block
    derived = {}
    for name, derive in job.derived.items():
        if job.gather:
            derived[(name, task.index)] = derive(block)
        else:
            path, selection = job.locate(name, task.index)
            _open_array(job.dest, job.options, path)[selection] = derive(block)
    stats = ChannelStats.from_block(block, present)
    if job.journal:  # after the shards: the marker proves them written
        blocks = {name: data for (name, _), data in derived.items()}
        record_done(job.dest, job.options, task.index, present, stats, skipped, blocks)
    return _Partial([(task.index, present)], stats, skipped, derived)


def _gather(
    job: _Job, key: tuple[int, ...], done: list[tuple[int, ...]], *parts: _Partial
) -> _Partial:
    """Merge one well's results (new, and ``done`` by an earlier run, from the journal);
    write its derived shards whole (fill value where no field)."""
    loaded = []
    for index in done:
        present, stats, skipped, derived = load_done(job.dest, job.options, index)
        blocks = {(name, index): data for name, data in derived.items()}
        loaded.append(_Partial([(index, present)], stats, skipped, blocks))
    items = [*loaded, *parts]
    merged = items[0].merge(*items[1:])
    for name in job.derived if merged.derived else ():
        array = _open_array(job.dest, job.options, name)
        shard = np.zeros(array.shape[len(key) :], dtype=array.dtype)
        for (var, index), data in merged.derived.items():
            if var == name:
                shard[index[len(key) :]] = data
        array[key] = shard
    merged.derived = {}
    return merged


def _write_extra(name: str, make: Any, job: _Job) -> None:
    """Write a whole small variable (illumination functions) computed by ``make()``."""
    _open_array(job.dest, job.options, name)[...] = make()


_arrays: dict[tuple[int, str, str, str], zarr.Array] = {}
_arrays_lock = threading.Lock()


def _open_array(dest: str, options: dict[str, Any], variable: str) -> zarr.Array:
    """The destination array, opened once per process (workers never share handles).

    ``write_empty_chunks``: zarr otherwise compares every shard and every inner
    chunk with the fill value before encoding it (~110 ms of CPU per 1080² field
    of 8 channels, half our encode time); a missing image is marked in
    ``present`` and its zeros compress to almost nothing.
    """
    key = (os.getpid(), dest, json.dumps(options, sort_keys=True, default=str), variable)
    with _arrays_lock:
        if key not in _arrays:
            store = zarr_store(dest, options, read_only=False)
            array = zarr.open_array(store, path=variable, mode="r+", zarr_format=3)
            _arrays[key] = array.with_config({"write_empty_chunks": True})
        return _arrays[key]


def finalize_cubes(dest: str, options: dict[str, Any]) -> list[tuple[IngestPlan, IngestResult]]:
    """Complete the cube(s) an array job wrote: ``dest`` is a cube, or the prefix of a batch.

    Checks that every slice's fields have their journal marker, then writes the
    mask, statistics, quality report and completion mark from the journal, as
    an uninterrupted run would.

    Raises
    ------
    IncompleteSlicesError
        Some slices have not finished; the message names them.
    SchemaError
        ``dest`` holds no array job to finalize.
    """
    start = time.perf_counter()
    fs, path = filesystem(dest, options)
    if read_manifest(dest, options) is not None:
        dests = [dest]
    else:
        with storage_errors(dest, options):
            found = fs.glob(join_url(path, "*.ingest", "array.json"))
        dests = sorted(
            join_url(dest, posixpath.basename(posixpath.dirname(p))[: -len(".ingest")] + ".zarr")
            for p in found
        )
    if not dests and _is_complete_cube(dest, options):
        logger.warning("%s is complete: nothing to finalize", dest)
        return []
    if not dests:
        raise SchemaError(
            f"Nothing to finalize at {dest}: no array job has written there ({manifest_url(dest)} "
            "is absent). Run the slices first (--task-index I --task-count N), or finalize the "
            "prefix that holds the plates."
        )
    missing: list[str] = []
    for cube in dests:
        manifest = read_manifest(cube, options) or {}
        for k, n in sorted(missing_slices(manifest, list_done(cube, options)).items()):
            missing.append(f"slice {k}: {n} field(s) of {cube}")
    if missing:
        count = (read_manifest(dests[0], options) or {}).get("count", "?")
        raise IncompleteSlicesError(
            f"Not all {count} slices have finished: " + "; ".join(missing) + ". Run those slices "
            "again (--task-index I --task-count N, or the failed tasks of the array job), then "
            "finalize."
        )
    out = []
    for cube in dests:
        with WriterLock(cube, options):
            plan = _plan_of_cube(cube, options, read_manifest(cube, options) or {})
            partial = _partial_from_journal(cube, options, [t.index for t in plan.tasks])
            stats, quality = _finalize(plan, options, partial, ome=False)
        block = plan.template[plan.variable]
        out.append(
            (
                plan,
                IngestResult(
                    dest=cube,
                    n_tasks=len(plan.tasks),
                    n_images=int(quality["counts"]["found"]),
                    bytes_written=len(plan.tasks) * block[0, 0].nbytes,
                    seconds=time.perf_counter() - start,
                    stats=stats,
                    quality=quality,
                ),
            )
        )
    return out


def _is_complete_cube(dest: str, options: dict[str, Any]) -> bool:
    fs, path = filesystem(dest, options)
    with storage_errors(dest, options):
        if not fs.exists(join_url(path, "zarr.json")):
            return False
        group = zarr.open_group(zarr_store(dest, options, read_only=True), mode="r")
        return group.attrs.get(cv.ATTR_COMPLETE) is True


def _plan_of_cube(dest: str, options: dict[str, Any], manifest: dict[str, Any]) -> IngestPlan:
    """What finalizing needs of the plan, read back from the cube and the manifest."""
    import xarray as xr

    store = zarr_store(dest, options, read_only=True)
    template = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks={})
    tasks = [
        ShardTask(tuple(index), ())
        for indexes in manifest.get("slices", {}).values()
        for index in indexes
    ]
    provenance = dict(template.attrs.get(cv.ATTR_PROVENANCE, {}))
    return IngestPlan(
        source_format=str(provenance.get("source_format", "")),
        src=str(manifest.get("source", "")),
        dest=dest,
        template=template,
        encoding={},
        variable=cv.IMAGES,
        tasks=tasks,
        reader=_no_reader,
        context=None,
        ignored=list(manifest.get("ignored", [])),
        attrs={cv.ATTR_PROVENANCE: provenance},
    )


def _no_reader(task: ShardTask, context: Any) -> Any:
    raise AssertionError("finalizing reads no images")


def _partial_from_journal(
    dest: str, options: dict[str, Any], indexes: list[tuple[int, ...]]
) -> _Partial:
    """The merged results of the tasks at ``indexes``, from their journal markers."""

    def load(index: tuple[int, ...]) -> _Partial:
        present, stats, skipped, _ = load_done(dest, options, index)
        return _Partial([(index, present)], stats, skipped)

    with ThreadPoolExecutor(16) as pool:
        parts = list(pool.map(load, indexes))
    return parts[0].merge(*parts[1:])


def _finalize(
    plan: IngestPlan, options: dict[str, Any], partial: _Partial, *, ome: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the mask, statistics and report, then mark the output complete and consolidate."""
    mask = np.zeros(plan.template[cv.PRESENT].shape, dtype=bool)
    for index, present in partial.present:
        mask[index] = present
    stats = partial.stats.result()
    report = quality_report(
        plan.template,
        mask,
        stats,
        unreadable=sorted(url for kind, url in partial.skipped if kind == "unreadable"),
        mismatched=sorted(url for kind, url in partial.skipped if kind == "mismatched"),
        unrecognized=sorted(plan.ignored),
    )
    report_url = quality_report_url(plan.dest)
    with storage_errors(plan.dest, options):
        fs, path = filesystem(report_url, options)
        fs.pipe_file(path, json.dumps(report, indent=1).encode())
        if ome:
            finalize_ome(plan, options, mask, stats)
        else:
            _finalize_cube(plan, options, mask, stats, report, report_url)
            remove_journal(plan.dest, options)
    logger.info("%s complete: %s", plan.dest, summary_line(report))
    return stats, report


def _finalize_cube(
    plan: IngestPlan,
    options: dict[str, Any],
    mask: np.ndarray,
    stats: dict[str, Any],
    report: dict[str, Any],
    report_url: str,
) -> None:
    store = zarr_store(plan.dest, options, read_only=False)
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    group_array(group, cv.PRESENT)[...] = mask
    for name, values in stats.items():
        group_array(group, cv.stat_var(name))[...] = values
    provenance = dict(plan.attrs.get(cv.ATTR_PROVENANCE, {}))
    provenance["n_present"] = int(mask.sum())
    provenance["n_missing"] = int(mask.size - mask.sum())
    group.attrs.update(
        {
            cv.ATTR_PROVENANCE: provenance,
            "quality": {"counts": report["counts"], "report": report_url},
            cv.ATTR_COMPLETE: True,
        }
    )
    with warnings.catch_warnings():
        # Deliberate: consolidated metadata makes opening one small read.
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
        zarr.consolidate_metadata(store)
