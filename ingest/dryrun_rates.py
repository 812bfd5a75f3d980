"""The rates a dry run assumes: a few tasks read with the plan's reader, written in memory.

The first, middle and last tasks of the first cube (``n`` of them, spread
evenly) are read with the plan's own reader and written by the writer's own
task function (:func:`ingest.tasks.write_task`: statistics, the plan's
chunks, shards and codec, the journal marker) into a copy of the cube created
in fsspec's ``memory://``, never at DEST; their derived blocks (thumbnails,
written by a gather task in a real run) are encoded in memory. One warm-up run
of the first comes before and is not counted (imports, connections). Their
bytes give the compression ratio per variable; their wall and CPU times the rates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.storage import MemoryStore

from cubes.store import filesystem
from ingest.output import CubeOutput
from ingest.plan import Block, IngestPlan, ShardTask
from ingest.tasks import Job, forget_arrays, write_task

__all__ = ["Rates", "Sample", "encoded_size", "measure_rates", "region_shape", "sample_tasks"]

Index = tuple[int, ...]


@dataclass
class Sample:
    """One sampled task: its bytes raw and stored, and how long reading and writing took.

    ``raw`` and ``stored`` are per variable (the derived ones too); ``read_s``:
    the source's reader (fetch and decode); ``write_s``: the writer's task into
    memory (statistics, encoding, its journal marker) and the encoding of its
    derived blocks; times in seconds, ``*_cpu`` the process CPU time over the
    same span.
    """

    cube: str
    index: Index
    inputs: int
    raw: dict[str, int]
    stored: dict[str, int]
    read_s: float
    read_cpu_s: float
    write_s: float
    write_cpu_s: float


@dataclass
class Rates:
    """Per-task rates and compression ratios measured on sampled tasks."""

    samples: list[Sample]
    measured_on: str = ""  # where the samples came from, when not the plan itself

    def ratio(self, name: str) -> float:
        """Raw bytes over stored bytes of ``name`` in the samples (1.0 if none)."""
        raw = sum(s.raw.get(name, 0) for s in self.samples)
        stored = sum(s.stored.get(name, 0) for s in self.samples)
        return raw / stored if raw and stored else 1.0

    def mean(self, attr: str) -> float:
        """The mean of a :class:`Sample` time over the samples."""
        return float(np.mean([getattr(s, attr) for s in self.samples])) if self.samples else 0.0

    def raw_per_task(self, name: str) -> float:
        """Mean raw bytes of ``name`` per sampled task."""
        return float(np.mean([s.raw.get(name, 0) for s in self.samples])) if self.samples else 0.0


def sample_tasks(plan: IngestPlan, n: int) -> list[ShardTask]:
    """``n`` tasks spread over the plan: first, last, and evenly between."""
    tasks = [t for t in plan.tasks if t.inputs] or plan.tasks
    if n <= 0 or not tasks:
        return []
    picks = sorted({round(k * (len(tasks) - 1) / max(n - 1, 1)) for k in range(n)})
    return [tasks[k] for k in picks]


def measure_rates(plans: Sequence[IngestPlan], n: int = 3) -> Rates:
    """Read ``n`` sampled tasks of the first plan with its reader and write them, with the
    writer's own task (:func:`ingest.tasks.write_task`), into a cube in memory.

    The first sampled task is run once before the measured ones (a warm-up:
    imports, connections), and not counted.
    """
    plan = next((p for p in plans if p.tasks), None)
    if plan is None:
        return Rates([])
    chosen = sample_tasks(plan, n)
    with _memory_cube(plan) as (job, fs):
        _measure(plan, job, fs, chosen[0])  # warm-up
        return Rates([_measure(plan, job, fs, task) for task in chosen])


@contextlib.contextmanager
def _memory_cube(plan: IngestPlan) -> Iterator[tuple[Job, Any]]:
    """The plan's cube created in fsspec's ``memory://`` (never at DEST); removed after."""
    dest = f"memory://cellcubes-dry-run-{uuid.uuid4().hex}/cube.zarr"
    mem = dataclasses.replace(plan, dest=dest, output=None)
    with warnings.catch_warnings():  # what a real run warns about once, a dry run plans quietly
        warnings.simplefilter("ignore")
        CubeOutput().create(mem, {})
    fs, root = filesystem(dest.rsplit("/", 1)[0], {})
    try:
        yield Job.of(mem, {}, CubeOutput()), fs
    finally:
        fs.rm(root, recursive=True)
        forget_arrays(dest)


def _given(task: ShardTask, block: Block) -> Block:
    """A reader that returns the block already read (the write is timed apart)."""
    return block


def _measure(plan: IngestPlan, job: Job, fs: Any, task: ShardTask) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    block = plan.reader(task, plan.context)
    read_s, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    root = _root(job)
    for path in fs.find(root):  # an earlier sample's shards (the warm-up's: this very task's)
        if path[len(root) :].split("/")[1] in plan.variables and "/c/" in path:
            fs.rm_file(path)
    before = set(fs.find(root))
    wall, cpu = time.perf_counter(), time.process_time()
    partial = write_task(task, dataclasses.replace(job, reader=_given, context=block))
    derived = {
        name: data.reshape((1,) * (plan.template[name].ndim - data.ndim) + data.shape)
        for (name, _), data in partial.derived.items()
    }
    stored = {
        name: encoded_size(data, plan.encoding.get(name, {})) for name, data in derived.items()
    }
    write_s, write_cpu = time.perf_counter() - wall, time.process_time() - cpu
    for path, info in fs.find(root, detail=True).items():
        name = path[len(root) :].split("/")[1]
        if path not in before and name in plan.variables:
            stored[name] = stored.get(name, 0) + int(info["size"])
    raw = {name: np.asarray(block.data[name]).nbytes for name in plan.variables}
    raw.update({name: data.nbytes for name, data in derived.items()})
    return Sample(
        cube=plan.dest,
        index=task.index,
        inputs=len({url for _, url in task.inputs}),
        raw=raw,
        stored=stored,
        read_s=read_s,
        read_cpu_s=read_cpu,
        write_s=write_s,
        write_cpu_s=write_cpu,
    )


def _root(job: Job) -> str:
    return "/" + job.dest.removeprefix("memory://").strip("/")


def region_shape(shape: tuple[int, ...], region: tuple[slice, ...]) -> tuple[int, ...]:
    lead = [len(range(*s.indices(n))) for s, n in zip(region, shape, strict=False)]
    return (*lead, *shape[len(region) :])


def encoded_size(data: np.ndarray, encoding: dict[str, Any]) -> int:
    """Bytes ``data`` takes encoded with ``encoding``'s chunks, shards and codecs (in memory)."""
    shards = _clip(encoding.get("shards"), data.shape)
    chunks = _clip(encoding.get("chunks"), shards or data.shape) or data.shape
    if shards is not None:
        chunks = tuple(c if s % c == 0 else s for c, s in zip(chunks, shards, strict=True))
    objects: dict[str, Any] = {}
    kwargs = {k: encoding[k] for k in ("compressors", "filters", "serializer") if k in encoding}
    array = zarr.create_array(
        MemoryStore(objects),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        zarr_format=3,
        config={"write_empty_chunks": True},
        **kwargs,
    )
    array[...] = data
    return sum(len(v.to_bytes()) for k, v in objects.items() if not k.endswith("zarr.json"))


def _clip(shape: Any, bounds: tuple[int, ...]) -> tuple[int, ...] | None:
    if shape is None:
        return None
    return tuple(min(int(s), int(b)) for s, b in zip(shape, bounds, strict=True))
