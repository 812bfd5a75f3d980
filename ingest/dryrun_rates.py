"""The rates a dry run assumes: a few tasks read with the plan's reader, encoded in memory.

The first, middle and last tasks of the first cube (``n`` of them, spread
evenly) are read with the plan's own reader and encoded with the plan's own
chunks, shards and codec into a zarr ``MemoryStore``; one warm-up read of the
first comes before and is not counted (imports, connections). Their bytes
give the compression ratio per variable; their wall and CPU times the rates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.storage import MemoryStore

from ingest.plan import IngestPlan, ShardTask

__all__ = ["Rates", "Sample", "encoded_size", "measure_rates", "region_shape", "sample_tasks"]

Index = tuple[int, ...]


@dataclass
class Sample:
    """One sampled task: its bytes raw and encoded, and how long reading and encoding took.

    ``raw`` and ``stored`` are per variable (the derived ones too); times in
    seconds, ``*_cpu`` the process CPU time over the same span.
    """

    cube: str
    index: Index
    inputs: int
    raw: dict[str, int]
    stored: dict[str, int]
    read_s: float
    read_cpu_s: float
    encode_s: float
    encode_cpu_s: float


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
    """Read ``n`` sampled tasks of the first plan with its reader; encode them in memory.

    The first sampled task is read and encoded once before the measured ones
    (a warm-up: imports, connections), and not counted.
    """
    plan = next((p for p in plans if p.tasks), None)
    if plan is None:
        return Rates([])
    chosen = sample_tasks(plan, n)
    if chosen:
        _measure(plan, chosen[0])  # warm-up
    return Rates([_measure(plan, task) for task in chosen])


def _measure(plan: IngestPlan, task: ShardTask) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    block = plan.reader(task, plan.context)
    read_s, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    raw: dict[str, int] = {}
    stored: dict[str, int] = {}
    region = plan.region(task.index)
    for name in plan.variables:
        shape = region_shape(plan.template[name].shape, region)
        data = np.asarray(block.data[name]).reshape(shape)
        raw[name], stored[name] = data.nbytes, encoded_size(data, plan.encoding.get(name, {}))
    first = block.data[plan.variables[0]]
    for name, derive in plan.derived.items():
        data = np.asarray(derive(first))
        data = data.reshape((1,) * (plan.template[name].ndim - data.ndim) + data.shape)
        raw[name], stored[name] = data.nbytes, encoded_size(data, plan.encoding.get(name, {}))
    return Sample(
        cube=plan.dest,
        index=task.index,
        inputs=len({url for _, url in task.inputs}),
        raw=raw,
        stored=stored,
        read_s=read_s,
        read_cpu_s=read_cpu,
        encode_s=time.perf_counter() - wall,
        encode_cpu_s=time.process_time() - cpu,
    )


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
