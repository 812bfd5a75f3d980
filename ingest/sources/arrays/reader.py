"""The write half of the ``arrays`` source: read one shard's samples from their files.

Each task covers ``samples_per_shard`` consecutive samples. It reads every file that
holds one of them once (:func:`~ingest.sources.arrays.files.read_file`) and copies
the samples into one block per variable. A batch file that straddles two shards is
read by both of their tasks (each copies its own samples): shards never share a writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubes.errors import CubeError, SchemaError
from ingest.plan import Block, ShardTask
from ingest.sources.arrays.files import read_file

__all__ = ["ArraysContext", "read_samples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArraysContext:
    """What every task reads with: picklable, no open handles.

    Attributes
    ----------
    storage_options
        fsspec options for the files.
    ranges
        ``{url: (start, stop)}``: the samples of the cube each file holds.
    variables
        ``{name: (sample_shape, dtype string)}`` in the cube's order.
    samples_per_shard, n_samples
        Samples per task (the last may hold fewer) and in the cube.
    batched
        Whether each file is a batch along its first axis.
    on_error
        ``"fail"`` or ``"skip"`` (a bad file's samples are left absent).
    """

    storage_options: dict[str, Any]
    ranges: dict[str, tuple[int, int]]
    variables: dict[str, tuple[tuple[int, ...], str]]
    samples_per_shard: int
    n_samples: int
    batched: bool
    on_error: str = "fail"


def read_samples(task: ShardTask, context: ArraysContext) -> Block:
    """Read the samples of the shard ``task.index[0]`` (a :data:`ingest.plan.BlockReader`).

    Parameters
    ----------
    task
        The shard's task; ``inputs`` pairs each file's first sample with its URL.
    context
        The plan's :class:`ArraysContext`.

    Returns
    -------
    Block
        ``(samples, *shape)`` per variable, ``present`` over the samples, and the files
        skipped under ``on_error="skip"``.

    Raises
    ------
    CubeError
        A file cannot be read or does not match the plan (``on_error="fail"``).
    """
    lo = task.index[0] * context.samples_per_shard
    hi = min(lo + context.samples_per_shard, context.n_samples)
    data = {
        name: np.zeros((hi - lo, *shape), dtype=np.dtype(dtype))
        for name, (shape, dtype) in context.variables.items()
    }
    present = np.zeros(hi - lo, dtype=bool)
    skipped: list[tuple[str, str]] = []
    for _, url in task.inputs:
        start, stop = context.ranges[url]
        first, last = max(start, lo), min(stop, hi)
        try:
            samples = _file_samples(url, context, first - start, last - start)
        except CubeError as exc:
            if context.on_error != "skip":
                raise
            kind = "mismatched" if isinstance(exc, _Mismatch) else "unreadable"
            logger.warning("Skipped %s (%s): %s", url, kind, exc)
            skipped.append((kind, url))
            continue
        for name, values in samples.items():
            data[name][first - lo : last - lo] = values
        present[first - lo : last - lo] = True
    return Block(data=data, present=present, skipped=skipped)


class _Mismatch(SchemaError):
    """A file that reads but no longer matches the plan (changed since planning)."""


def _file_samples(url: str, context: ArraysContext, first: int, last: int) -> dict[str, np.ndarray]:
    """The file's samples ``[first, last)`` (counted within the file), checked against the plan."""
    arrays = read_file(url, context.storage_options)
    if set(arrays) != set(context.variables):
        raise _Mismatch(
            f"{url} holds {sorted(arrays)}, not the planned variables "
            f"{sorted(context.variables)}: it changed since planning. Run the ingest again."
        )
    out = {}
    for name, (shape, dtype) in context.variables.items():
        values = arrays[name] if context.batched else arrays[name][None]
        expected = (last - first if context.batched else 1, *shape)
        values = values[first:last]
        if values.shape != expected or not np.can_cast(values.dtype, dtype, "equiv"):
            raise _Mismatch(
                f"{url}: variable '{name}' is {values.shape} {values.dtype} where the plan "
                f"expects {expected} {np.dtype(dtype)}: it changed since planning. Run the "
                "ingest again."
            )
        out[name] = values
    return out
