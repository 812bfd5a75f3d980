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
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import zarr
from zarr.storage import MemoryStore

from cubes import conventions as cv
from cubes.errors import CubeExistsError
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
from ingest.ome import create_ome, finalize_ome, ome_locator
from ingest.plan import BlockReader, IngestPlan, ShardTask
from ingest.report import quality_report, quality_report_url, summary_line
from ingest.runner import Runner
from ingest.stats import ChannelStats

__all__ = ["IngestResult", "write_cube", "write_cubes"]

logger = logging.getLogger(__name__)

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
) -> list[IngestResult]:
    """Write planned cubes (the plates of a batch) in parallel, as one dask graph.

    Every destination is checked before anything is written; then each cube's
    schema is created, all tasks run together, and each cube is finalized.

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

    Raises
    ------
    CubeExistsError
        A destination holds a cube and ``overwrite`` is false, or holds other data.
    DestinationLockedError
        Another job is writing a destination (see :mod:`ingest.lock`).
    """
    start = time.perf_counter()
    for plan in plans:
        check_location(plan.dest, dest_options)  # fail fast on a bad endpoint or bucket
    with contextlib.ExitStack() as locks:
        for plan in plans:
            locks.enter_context(WriterLock(plan.dest, dest_options))
        resumed = [_prepare_dest(plan, dest_options, overwrite, ome) for plan in plans]
        for plan, resume in zip(plans, resumed, strict=True):
            if resume:
                logger.warning("%s: resuming an interrupted ingest", plan.dest)
            elif ome:
                create_ome(plan, dest_options)
            else:
                _create(plan, dest_options)
        runner = runner or Runner(threads=threads, progress=progress)
        partials = _run_tasks(plans, dest_options, runner, ome=ome, resumed=resumed)
        results = []
        for plan, partial in zip(plans, partials, strict=True):
            stats, quality = _finalize(plan, dest_options, partial, ome=ome)
            block_bytes = (
                int(np.prod(plan.block_shape)) * plan.template[plan.variable].dtype.itemsize
            )
            results.append(
                IngestResult(
                    dest=plan.dest,
                    n_tasks=len(plan.tasks),
                    n_images=plan.n_inputs,
                    bytes_written=block_bytes * len(plan.tasks),
                    seconds=time.perf_counter() - start,
                    stats=stats,
                    quality=quality,
                )
            )
        return results


def _prepare_dest(plan: IngestPlan, options: dict[str, Any], overwrite: bool, ome: bool) -> bool:
    """Check and clear the destination; True when an interrupted ingest of this plan resumes."""
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
        if entries and not has_cube and journal_started(dest, options):
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
            if group.attrs.get(cv.ATTR_COMPLETE) is False and not ome:
                if _same_schema(group, plan):
                    return True
                raise CubeExistsError(
                    f"{dest} holds an incomplete cube of other images (different wells, fields, "
                    "channels or image size), which this run cannot resume. Pass --overwrite to "
                    "start again, or choose another DEST."
                )
            raise CubeExistsError(
                f"{dest} already holds a cube. Pass --overwrite to replace it, or choose another "
                "DEST."
            )
        if has_cube:
            logger.info("Removing the cube at %s (--overwrite)", dest)
            fs.rm(path, recursive=True)
    remove_journal(dest, options)
    return False


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
    runner: Runner,
    *,
    ome: bool,
    resumed: list[bool],
) -> list[_Partial]:
    write = dask.delayed(_write_task, pure=False)
    gather = dask.delayed(_gather, pure=False)
    extra = dask.delayed(_write_extra, pure=False)
    totals, extras = [], []
    for plan, resume in zip(plans, resumed, strict=True):
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
            logger.warning("%s: %d of %d tasks already done", plan.dest, len(done), len(plan.tasks))
        wells: dict[tuple[int, ...], tuple[list[Any], list[tuple[int, ...]]]] = {}
        for task in plan.tasks:
            new, old = wells.setdefault(task.index[:1], ([], []))
            if task.index in done:
                old.append(task.index)
            else:
                new.append(write(task, job))
        gathered = [gather(job, key, old, *new) for key, (new, old) in wells.items()]
        totals.append(_tree_reduce(gathered))
        extras += [extra(name, make, job) for name, make in plan.extras.items()]
    with storage_errors(plans[0].dest, options):
        *results, _ = runner.compute(*totals, extras)
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
    """The destination array, opened once per process (workers never share handles)."""
    key = (os.getpid(), dest, json.dumps(options, sort_keys=True, default=str), variable)
    with _arrays_lock:
        if key not in _arrays:
            store = zarr_store(dest, options, read_only=False)
            _arrays[key] = zarr.open_array(store, path=variable, mode="r+", zarr_format=3)
        return _arrays[key]


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
