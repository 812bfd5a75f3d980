"""``--dry-run``: what an ingest would read, write and cost, without writing anything.

Works on the :class:`~ingest.plan.IngestPlan` objects every source's ``plan()``
returns, so every source (and a new one) gets it. Nothing is written: not at
DEST, no journal, no lock. What it does read:

- the input files' sizes from listings (one LIST per folder of inputs on S3,
  ``stat`` locally; no GET), unless ``sizes`` are given;
- a few sampled tasks (first, middle and last of the first cube, plus one
  warm-up run of the first that is not counted), read with the plan's own
  reader and written by the writer's own task into a copy of the cube in
  memory (:mod:`ingest.dryrun_rates`): their compression ratio gives the
  stored bytes, their times the wall time.

Objects are counted from the plan: the schema's metadata and coordinate
objects exactly (the template written to memory, as the writer does), one
object per shard a task touches, the derived, mask and statistics shards, and
the quality report. Requests follow the writer's code paths
(:mod:`ingest.writer`, :mod:`ingest.lock`, :mod:`ingest.journal`,
:mod:`ingest.finalize`); see :func:`requests_of`.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cubes.store import filesystem, is_local
from ingest.codecs import codec_name
from ingest.dryrun_rates import Rates, measure_rates, region_shape
from ingest.lock import LEASE_SECONDS
from ingest.output import CubeOutput, output_of, schema_objects
from ingest.plan import IngestPlan, ShardTask
from ingest.slices import TaskSlice, slice_tasks

__all__ = ["CubeEstimate", "DryRun", "dry_run", "estimate_cube", "requests_of"]

# S3 Standard list prices, us-east-1, as given in issue 14 (2026-12-03); DELETE is free.
PRICES_DATE = "2026-12-03"
PUT_PER_1000 = 0.005  # PUT, COPY, POST, LIST
GET_PER_1000 = 0.0004  # GET, HEAD
STORAGE_PER_GB_MONTH = 0.023
DELETE_BATCH = 1000  # keys per DeleteObjects POST (s3fs rm)

Index = tuple[int, ...]


@dataclass
class VariableLine:
    """One array of the cube: what the dry run prints of it."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    codec: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    objects: int
    raw_bytes: int
    stored_bytes: int
    role: str  # "tasks" (the tasks write it), "derived" (from their blocks), "final" (at the end)


@dataclass
class CubeEstimate:
    """What writing one cube (or one array-job slice of it) reads, writes and requests."""

    dest: str
    source_format: str
    tasks: int
    all_tasks: int
    groups: int
    inputs: int
    input_bytes: int
    variables: list[VariableLine]
    metadata_objects: int
    metadata_bytes: int
    arrays: int  # zarr.json objects of arrays
    other_objects: int  # the quality report; the journal where it stays (appendable cubes)
    reads: int = 0  # GETs of SRC: each task reads each of its files whole, once
    output: str = "cube"  # another output (OME-NGFF): its own layout, counted as a cube's
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        """Objects the cube holds when complete (and its quality report)."""
        return self.metadata_objects + self.other_objects + sum(v.objects for v in self.variables)

    @property
    def stored_bytes(self) -> int:
        """Estimated stored bytes: data from the sampled ratio, metadata exact (twice:
        once per array, once consolidated in the group's)."""
        return 2 * self.metadata_bytes + sum(v.stored_bytes for v in self.variables)


@dataclass
class DryRun:
    """A dry run's result: per cube estimates, the rates they assumed, totals and cost."""

    cubes: list[CubeEstimate]
    rates: Rates
    threads: int
    workers: int
    cores: int
    wall_s: float
    remote_dest: bool
    remote_src: bool
    task_slice: TaskSlice | None = None
    index_objects: int = 0  # a batch's plates.csv
    load: float = 0.0  # this machine's 1-minute load average while sampling

    @property
    def objects(self) -> int:
        return sum(c.objects for c in self.cubes) + self.index_objects

    @property
    def stored_bytes(self) -> int:
        return sum(c.stored_bytes for c in self.cubes)

    @property
    def requests(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for cube in self.cubes:
            for kind, n in cube.requests.items():
                total[kind] = total.get(kind, 0) + n
        if self.index_objects:
            total["HEAD"] = total.get("HEAD", 0) + 1
            total["PUT"] = total.get("PUT", 0) + 1
        return total

    @property
    def request_cost(self) -> float:
        """US dollars of the requests at S3 Standard list prices (:data:`PRICES_DATE`)."""
        r = self.requests
        put = r.get("PUT", 0) + r.get("LIST", 0)
        get = r.get("GET", 0) + r.get("HEAD", 0)
        return put / 1000 * PUT_PER_1000 + get / 1000 * GET_PER_1000

    @property
    def storage_cost_per_month(self) -> float:
        return self.stored_bytes / 1e9 * STORAGE_PER_GB_MONTH

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON types (``--json``)."""
        out = asdict(self)
        out["task_slice"] = asdict(self.task_slice) if self.task_slice else None
        for cube, data in zip(self.cubes, out["cubes"], strict=True):
            data.update(objects=cube.objects, stored_bytes=cube.stored_bytes)
        out["rates"]["ratios"] = {
            name: self.rates.ratio(name) for s in self.rates.samples[:1] for name in s.raw
        }
        out.update(
            objects=self.objects,
            stored_bytes=self.stored_bytes,
            requests=self.requests,
            request_cost_usd=self.request_cost,
            storage_usd_per_month=self.storage_cost_per_month,
            prices={
                "date": PRICES_DATE,
                "put_copy_post_list_per_1000": PUT_PER_1000,
                "get_head_per_1000": GET_PER_1000,
                "storage_per_gb_month": STORAGE_PER_GB_MONTH,
            },
        )
        return out


def dry_run(
    plans: Sequence[IngestPlan],
    dest_options: dict[str, Any],
    *,
    threads: int = 8,
    workers: int | None = None,
    task_slice: TaskSlice | None = None,
    samples: int = 3,
    rates: Rates | None = None,
    sizes: dict[str, int] | None = None,
    batch: bool = False,
    cores: int | None = None,
) -> DryRun:
    """Estimate what writing ``plans`` reads, writes, requests and costs; write nothing.

    Parameters
    ----------
    plans
        From a source's ``plan()``.
    dest_options
        Storage options of the destinations (only to tell S3 from local).
    threads, workers
        As given to the run (``--threads``, ``--workers``): tasks run in parallel
        over ``threads * workers``, their CPU time over at most this machine's cores.
    task_slice
        An array job's slice: count its share of the tasks only.
    samples
        Tasks to sample for the compression ratio and the rates.
    rates
        Rates measured elsewhere (:func:`measure_rates`), instead of sampling.
    sizes
        Input sizes by URL (a listing), instead of listing SRC.
    batch
        The plans are a batch under one prefix (a ``plates.csv`` is written).
    cores
        Cores of the machine that will run the job (default: this one's).

    Returns
    -------
    DryRun
    """
    plans = list(plans)
    chosen: list[set[Index] | None] = [None] * len(plans)
    if task_slice is not None:
        cut = slice_tasks(plans, task_slice.count)
        chosen = [set(per_plan.get(task_slice.index, [])) for per_plan in cut]
    rates = rates if rates is not None else measure_rates(plans, samples)
    urls = sorted({url for plan in plans for task in plan.tasks for _, url in task.inputs})
    sizes = sizes if sizes is not None else input_sizes(urls, plans[0].context)
    processes = max(workers or 1, 1)
    cubes = [
        estimate_cube(plan, rates, sizes, mine, processes)
        for plan, mine in zip(plans, chosen, strict=True)
    ]
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_tasks = sum(c.tasks for c in cubes)
    wall = wall_seconds(rates, n_tasks, threads * processes, cores or 1)
    for cube in cubes:  # the lock's heartbeat: a GET and a PUT every lease / 4
        beats = int(wall // (LEASE_SECONDS / 4))
        cube.requests["GET"] += beats
        cube.requests["PUT"] += beats
    remote = [not is_local(p.dest) for p in plans]
    return DryRun(
        cubes=cubes,
        rates=rates,
        threads=threads,
        workers=processes,
        cores=cores or 1,
        wall_s=wall,
        remote_dest=any(remote),
        remote_src=any(not is_local(u) for u in urls),
        task_slice=task_slice,
        index_objects=1 if batch and task_slice is None else 0,
        load=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
    )


def wall_seconds(rates: Rates, n_tasks: int, slots: int, cores: int) -> float:
    """Tasks in parallel over ``slots``; their CPU time over at most ``min(slots, cores)``."""
    if not n_tasks:
        return 0.0
    per_task = rates.mean("read_s") + rates.mean("write_s")
    cpu = rates.mean("read_cpu_s") + rates.mean("write_cpu_s")
    return n_tasks * max(per_task / slots, cpu / min(slots, cores))


def input_sizes(urls: Sequence[str], context: Any = None) -> dict[str, int]:
    """Sizes of ``urls`` from listings of their folders (one LIST each on S3; no GET).

    The storage options are the plan's reader's (``context.storage_options``).
    A file missing from its folder's listing is asked for by itself (a HEAD).
    """
    options = getattr(context, "storage_options", None) or {}
    sizes: dict[str, int] = {}
    folders: dict[str, list[str]] = {}
    for url in urls:
        if is_local(url):
            sizes[url] = os.path.getsize(url.removeprefix("file://"))
        else:
            folders.setdefault(url.rsplit("/", 1)[0], []).append(url)
    for folder, members in folders.items():
        fs, path = filesystem(folder, options)
        listed = {
            entry["name"].rsplit("/", 1)[-1]: int(entry.get("size") or 0)
            for entry in fs.ls(path, detail=True)
        }
        for url in members:
            name = url.rsplit("/", 1)[-1]
            if name in listed:
                sizes[url] = listed[name]
            else:
                _, file_path = filesystem(url, options)
                sizes[url] = int(fs.info(file_path).get("size") or 0)
    return sizes


def estimate_cube(
    plan: IngestPlan,
    rates: Rates,
    sizes: dict[str, int],
    chosen: set[Index] | None,
    processes: int,
) -> CubeEstimate:
    """What writing ``plan`` (its ``chosen`` tasks, for an array job's slice) involves."""
    tasks = [t for t in plan.tasks if chosen is None or t.index in chosen]
    output = output_of(plan)
    metadata = schema_sizes(plan) if isinstance(output, CubeOutput) else {}
    task_vars = set(plan.variables) | set(plan.derived)
    lines = []
    for name in plan.template.data_vars:
        name = str(name)
        if any(k.startswith(f"{name}/c") for k in metadata):
            continue  # written with the schema (counted there)
        if chosen is not None and name not in task_vars:
            continue  # an array job's slice: finalize writes the mask and statistics
        touched = _shards_touched(plan, name, tasks) if name in task_vars else None
        lines.append(_line(plan, name, rates, touched, tasks))
    groups = {plan.group(t.index) for t in tasks}
    per_task_urls = [{url for _, url in t.inputs} for t in tasks]
    urls = set().union(*per_task_urls) if per_task_urls else set()
    estimate = CubeEstimate(
        dest=plan.dest,
        source_format=plan.source_format,
        tasks=len(tasks),
        all_tasks=len(plan.tasks),
        groups=len(groups),
        inputs=len(urls),
        input_bytes=sum(sizes.get(u, 0) for u in urls),
        variables=lines,
        metadata_objects=len(metadata),
        arrays=sum(1 for k in metadata if k.endswith("/zarr.json")),
        metadata_bytes=sum(metadata.values()),
        # the quality report, written when complete; an appendable cube keeps its journal
        # (the exact partial statistics an append merges: finalize.complete)
        other_objects=(1 if chosen is None else 0) + (len(tasks) + 1 if plan.append_dim else 0),
        reads=sum(len(u) for u in per_task_urls),
        output="cube" if isinstance(output, CubeOutput) else type(output).__name__,
    )
    estimate.requests = requests_of(plan, estimate, processes, finalize=chosen is None)
    return estimate


def schema_sizes(plan: IngestPlan) -> dict[str, int]:
    """The objects (key -> bytes) the writer creates before the tasks run: metadata and
    coordinates, exactly as :meth:`ingest.output.CubeOutput.create` writes them."""
    with warnings.catch_warnings():  # a real run warns once; a dry run plans, quietly
        warnings.simplefilter("ignore")
        objects = schema_objects(plan)
    return {key: len(value.to_bytes()) for key, value in objects.items()}


def _shard_shape(plan: IngestPlan, name: str) -> tuple[int, ...]:
    var = plan.template[name]
    enc = plan.encoding.get(name, {})
    shape = enc.get("shards") or enc.get("chunks")
    if shape is None and var.chunks:  # dask chunks of the template
        shape = tuple(c[0] for c in var.chunks)
    return tuple(int(s) for s in shape) if shape is not None else tuple(var.shape)


def _shards_touched(plan: IngestPlan, name: str, tasks: list[ShardTask]) -> int:
    """Shards of ``name`` that ``tasks`` write (each task's region along the leading dims)."""
    var, shard = plan.template[name], _shard_shape(plan, name)
    depth = plan.depth
    rest = math.prod(
        math.ceil(n / s) for n, s in zip(var.shape[depth:], shard[depth:], strict=True)
    )
    touched: set[Index] = set()
    for task in tasks:
        ranges = []
        for sel, n, s in zip(plan.region(task.index), var.shape, shard, strict=False):
            start, stop, _ = sel.indices(n)
            ranges.append(range(start // s, math.ceil(stop / s)) if stop > start else range(0))
        touched.update(itertools.product(*ranges))
    return len(touched) * rest


def _line(
    plan: IngestPlan, name: str, rates: Rates, touched: int | None, tasks: list[ShardTask]
) -> VariableLine:
    """One variable: its objects, raw bytes and estimated stored bytes."""
    var = plan.template[name]
    enc = plan.encoding.get(name, {})
    shard = _shard_shape(plan, name)
    whole = math.prod(math.ceil(n / s) for n, s in zip(var.shape, shard, strict=True))
    if name in plan.variables:
        shape = var.shape
        raw = var.dtype.itemsize * sum(
            math.prod(region_shape(shape, plan.region(t.index))) for t in tasks
        )
    elif name in plan.derived:
        raw = int(rates.raw_per_task(name) * len(tasks))
    else:
        raw = int(var.nbytes)
    compressors = enc.get("compressors") or []
    codec = ", ".join(codec_name(c) for c in compressors) or "zarr default"
    return VariableLine(
        name=name,
        dims=tuple(str(d) for d in var.dims),
        shape=tuple(int(n) for n in var.shape),
        dtype=str(var.dtype),
        codec=codec,
        chunks=tuple(int(c) for c in enc.get("chunks") or shard),
        shards=tuple(int(s) for s in enc["shards"]) if enc.get("shards") else None,
        objects=whole if touched is None else touched,
        raw_bytes=raw,
        stored_bytes=int(raw / rates.ratio(name)) if name in rates_names(rates) else raw,
        role="tasks" if name in plan.variables else "derived" if name in plan.derived else "final",
    )


def rates_names(rates: Rates) -> set[str]:
    """The variables the samples measured."""
    return {name for s in rates.samples for name in s.stored}


def requests_of(
    plan: IngestPlan, cube: CubeEstimate, processes: int, *, finalize: bool
) -> dict[str, int]:
    """S3 requests of writing one cube to a new DEST, following the writer's code paths.

    As counted on the moto server's request log for a real run (zarr 3.1's
    ``FsspecStore`` on s3fs, opened by :func:`cubes.store.zarr_store`): reading a
    ``zarr.json`` is a GET, writing a shard or a chunk a PUT (:mod:`ingest.shards`);
    reading the lease (plain s3fs) a HEAD and a GET. Under
    many threads a few arrays are opened twice (more HEAD/GET). Reading SRC is
    counted apart (:attr:`CubeEstimate.reads`); the lock's heartbeats are added
    by :func:`dry_run` once the wall time is known. DELETE here means a
    DeleteObjects POST (free, as DELETE is).
    """
    task_vars = set(plan.variables) | set(plan.derived)
    data_puts = sum(v.objects for v in cube.variables if v.role != "final")
    final = [v for v in cube.variables if v.role == "final"]
    arrays = cube.arrays
    markers = cube.tasks + 1  # a journal marker per task, and 'started'
    r = {"PUT": 0, "GET": 0, "HEAD": 0, "LIST": 0, "DELETE": 0}

    def read_json(n: int, *, head: bool = False) -> None:
        r["HEAD"] += n if head else 0
        r["GET"] += n

    # writer.check_location (LIST); WriterLock.acquire (conditional PUT);
    # dest.prepare_dest: DEST's listing and its zarr.json's and journal's absence (LISTs)
    r["LIST"] += 1 + 4
    r["PUT"] += 1
    # output.create: the journal's 'started', the schema's objects
    r["PUT"] += 1 + cube.metadata_objects
    # tasks: their shards, a journal marker each; each process opens each array it
    # writes once
    r["PUT"] += data_puts + cube.tasks
    read_json(processes * len(task_vars))
    if finalize:
        # finalize.complete: the quality report; the group opened; mask and statistics
        # written whole (each array opened); the attributes (3 PUTs of the group's
        # zarr.json); consolidation (4 LISTs, every zarr.json read, the group's PUT);
        # the journal removed (2 LISTs per 1,000 keys, a DeleteObjects per 1,000)
        r["PUT"] += 1 + sum(v.objects for v in final) + 3 + 1
        read_json(1 + len(final) + 1 + arrays)
        if plan.append_dim is None:
            r["LIST"] += 4 + 2 * math.ceil(markers / DELETE_BATCH)
            r["DELETE"] += math.ceil(markers / DELETE_BATCH)
        else:  # the journal stays; the array job's manifest is looked for
            r["LIST"] += 4 + 1
            r["HEAD"] += 1
    else:  # a slice: the array job's manifest (read; written by the first slice)
        r["GET"] += 1
        r["PUT"] += 1
    # WriterLock.release: read the lease, delete it
    read_json(1, head=True)
    r["DELETE"] += 1
    return r
