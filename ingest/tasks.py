"""The write tasks of a plan and what they report back, for any layout.

A task reads its block (the source's reader), writes each variable at the
task's region, summarises what it wrote (the mask and per-variable
statistics, :mod:`ingest.stats`) and records a journal marker. Derived
variables sharded per task group (a plate's thumbnails, per well) travel to one
gather task per group, the only writer of their shard.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import zarr

from cubes.store import zarr_store
from ingest.journal import load_done, record_done
from ingest.plan import BlockReader, IngestPlan, ShardTask
from ingest.shards import write_region
from ingest.stats import ChannelStats

__all__ = ["Job", "Partial", "delayed_tasks", "forget_arrays", "merge_partials", "open_array"]

Index = tuple[int, ...]


@dataclass
class Partial:
    """What tasks report back: the mask of their regions, statistics, skipped inputs."""

    present: list[tuple[Index, np.ndarray]]
    stats: dict[str, ChannelStats]
    skipped: list[tuple[str, str]]
    # derived blocks on their way to the task that writes their whole shard
    derived: dict[tuple[str, Index], np.ndarray] = field(default_factory=dict)

    def merge(self, *others: Partial) -> Partial:
        """Everything in ``self`` and ``others`` (none is modified)."""
        present, skipped = list(self.present), list(self.skipped)
        stats, derived = dict(self.stats), dict(self.derived)
        for other in others:
            present.extend(other.present)
            skipped.extend(other.skipped)
            for name, part in other.stats.items():
                stats[name] = stats[name].merge(part) if name in stats else part
            derived.update(other.derived)
        return Partial(present, stats, skipped, derived)


def merge_partials(first: Partial, *rest: Partial) -> Partial:
    """``first.merge(*rest)`` as a module-level function (for dask)."""
    return first.merge(*rest)


@dataclass(frozen=True)
class _VarInfo:
    """What a task needs to know of one variable: its dims and how its stats group."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    group: str | None


@dataclass(frozen=True)
class Job:
    """What every write task of one plan needs: picklable, no open handles."""

    reader: BlockReader
    context: Any
    dest: str
    options: dict[str, Any]
    variables: dict[str, _VarInfo]
    mask_dims: tuple[str, ...]
    mask_shape: tuple[int, ...]
    derived: dict[str, Any]
    locate: Any  # (variable, task index) -> (array path, selection)
    task_shape: tuple[int, ...] | None = None
    fingerprint: str = ""  # the plan's: arrays opened for another plan are not reused
    stats_mask: np.ndarray | None = None  # over the first sample dim: what the stats count
    gather: bool = False  # derived shards written by one gather task per group
    journal: bool = False  # record each finished task (resume after interruption)

    @classmethod
    def of(cls, plan: IngestPlan, options: dict[str, Any], output: Any) -> Job:
        """The job of ``plan`` written to ``output``."""
        t, layout = plan.template, plan.layout
        infos = {}
        for name in plan.variables:
            spec = layout.statistics.get(name)
            group = spec.dims[0] if spec is not None and spec.dims else None
            infos[name] = _VarInfo(tuple(str(d) for d in t[name].dims), t[name].shape, group)
        mask = (
            t[layout.mask]
            if layout.mask
            else t[plan.variables[0]].isel({d: 0 for d in t[plan.variables[0]].dims[plan.depth :]})
        )
        return cls(
            plan.reader,
            plan.context,
            plan.dest,
            options,
            infos,
            tuple(str(d) for d in mask.dims),
            tuple(mask.shape),
            plan.derived,
            output.locator(plan),
            plan.task_shape,
            plan.fingerprint,
            plan.stats_mask,
            gather=bool(plan.derived) and output.gather,
            journal=output.journal,
        )


def _region_shape(shape: tuple[int, ...], selection: Any) -> tuple[int, ...]:
    if selection is Ellipsis:
        return shape
    lead = [len(range(*s.indices(n))) for s, n in zip(selection, shape, strict=False)]
    return (*lead, *shape[len(selection) :])


def _stats(data: np.ndarray, info: _VarInfo, present: np.ndarray, mask_dims: tuple) -> Any:
    """Statistics of one variable's region, per group, over what ``present`` marks."""
    if info.group is None:
        return ChannelStats.from_block(data[None], present[None])
    data = np.moveaxis(data, info.dims.index(info.group), 0)
    if info.group in mask_dims:
        present = np.moveaxis(present, mask_dims.index(info.group), 0)
    else:
        present = np.broadcast_to(present, (data.shape[0], *present.shape))
    return ChannelStats.from_block(data, present)


def write_task(task: ShardTask, job: Job) -> Partial:
    """Read, write and summarise one task; its journal marker last."""
    data, present, skipped = job.reader(task, job.context)
    shape = job.task_shape or (1,) * len(task.index)
    region = tuple(slice(i * s, (i + 1) * s) for i, s in zip(task.index, shape, strict=True))
    present = present.reshape(_region_shape(job.mask_shape, region))
    counted = present
    if job.stats_mask is not None:  # e.g. a training period: the others are stored, not counted
        period = job.stats_mask[region[0]].reshape(-1, *[1] * (present.ndim - 1))
        counted = present & period
    stats = {}
    for name, info in job.variables.items():
        block = data[name].reshape(_region_shape(info.shape, region))
        path, selection = job.locate(name, task.index)
        array = open_array(job, path)
        write_region(array, selection, block.reshape(_region_shape(array.shape, selection)))
        stats[name] = _stats(block, info, counted, job.mask_dims)
    derived = {}
    first = data[next(iter(job.variables))]
    for name, derive in job.derived.items():
        if job.gather:
            derived[(name, task.index)] = derive(first)
        else:
            path, selection = job.locate(name, task.index)
            write_region(open_array(job, path), selection, derive(first))
    if job.journal:  # after the shards: the marker proves them written
        blocks = {name: block for (name, _), block in derived.items()}
        record_done(job.dest, job.options, task.index, present, stats, skipped, blocks)
    return Partial([(task.index, present)], stats, skipped, derived)


def gather(job: Job, key: Index, done: list[Index], *parts: Partial) -> Partial:
    """Merge one group's results (new, and ``done`` by an earlier run, from the journal);
    write its derived shards whole (fill value where no task)."""
    loaded = []
    for index in done:
        present, stats, skipped, derived = load_done(job.dest, job.options, index)
        blocks = {(name, index): data for name, data in derived.items()}
        loaded.append(Partial([(index, present)], stats, skipped, blocks))
    items = [*loaded, *parts]
    merged = items[0].merge(*items[1:])
    for name in job.derived if merged.derived else ():
        array = open_array(job, name)
        shard = np.zeros(array.shape[len(key) :], dtype=array.dtype)
        for (var, index), data in merged.derived.items():
            if var == name:
                shard[index[len(key) :]] = data
        write_region(array, key, shard)
    merged.derived = {}
    return merged


def write_extra(name: str, make: Any, job: Job) -> None:
    """Write a whole small variable (illumination functions) computed by ``make()``."""
    open_array(job, name)[...] = make()


def delayed_tasks(
    plan: IngestPlan, job: Job, chosen: set[Index] | None, done: set[Index]
) -> list[Any]:
    """The plan's delayed tasks (those in ``chosen``, if given), one gather per group."""
    write = dask.delayed(write_task, pure=False)
    gather_group = dask.delayed(gather, pure=False)
    spec = dask.delayed(job, pure=True)  # one key, shipped once to distributed workers
    groups: dict[Index, tuple[list[Any], list[Index]]] = {}
    for task in plan.tasks:
        if chosen is not None and task.index not in chosen:
            continue
        new, old = groups.setdefault(plan.group(task.index), ([], []))
        if task.index in done:
            old.append(task.index)
        else:
            new.append(write(task, spec))
    return [gather_group(spec, key, old, *new) for key, (new, old) in groups.items()]


_arrays: dict[tuple[int, str, str, str, str], zarr.Array] = {}
_arrays_lock = threading.Lock()


def forget_arrays(dest: str) -> None:
    """Drop the arrays of ``dest`` opened by :func:`open_array` (a cube that is gone)."""
    with _arrays_lock:
        for key in [k for k in _arrays if k[1] == dest]:
            del _arrays[key]


def open_array(job: Job, variable: str) -> zarr.Array:
    """The destination array, opened once per process and plan (workers never share
    handles; a cube grown by an append, or replaced, is another plan: opened afresh).

    ``write_empty_chunks``: zarr otherwise compares every shard and every inner
    chunk with the fill value before encoding it (~110 ms of CPU per 1080² field
    of 8 channels, half our encode time); a missing input is marked in the
    mask and its zeros compress to almost nothing.
    """
    options = json.dumps(job.options, sort_keys=True, default=str)
    key = (os.getpid(), job.dest, options, variable, job.fingerprint)
    with _arrays_lock:
        if key not in _arrays:
            store = zarr_store(job.dest, job.options, read_only=False)
            array = zarr.open_array(store, path=variable, mode="r+", zarr_format=3)
            _arrays[key] = array.with_config({"write_empty_chunks": True})
        return _arrays[key]
