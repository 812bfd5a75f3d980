"""The task side of the NetCDF source: read one time shard's files into blocks.

Each write task covers ``S`` consecutive steps of the record axis. The reader
fetches every file the shard needs once (:func:`read_steps`: one whole-object
GET), decodes it with that file's own packing and copies the steps it holds
into NaN-filled float32 blocks; steps no file holds stay NaN and absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cubes.errors import CubeError
from ingest.codecs import keep_bits
from ingest.plan import Block, ShardTask
from ingest.sources.netcdf.steps import read_steps

__all__ = ["ReadContext", "read_block"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadContext:
    """What a task needs to read its files (picklable: URLs and options only).

    Attributes
    ----------
    storage_options
        fsspec options for the source files.
    record_dim
        The record dimension (moved first when reading).
    variables
        The cube's data variables, in order.
    steps_per_task
        Record steps per task (whole shards).
    n_steps
        Length of the record axis.
    shapes
        Per variable, its shape without the record dim.
    engines, file_steps, file_vars
        Per file URL: its xarray engine, the axis indices of its steps (in file
        order) and the cube variables it holds.
    on_error
        ``"fail"`` or ``"skip"`` (an unreadable file is left out and reported).
    keep_bits
        Mantissa bits the values are rounded to (lossy, on request); None: all.
    """

    storage_options: dict[str, Any]
    record_dim: str
    variables: tuple[str, ...]
    steps_per_task: int
    n_steps: int
    shapes: dict[str, tuple[int, ...]]
    engines: dict[str, str] = field(default_factory=dict)
    file_steps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    file_vars: dict[str, tuple[str, ...]] = field(default_factory=dict)
    on_error: str = "fail"
    keep_bits: int | None = None


def read_block(task: ShardTask, context: ReadContext) -> Block:
    """Read the steps of the time shard ``task.index[0]`` from the files that hold them.

    Returns
    -------
    Block
        ``data[var]`` of shape ``(S_k, *shape)`` float32 (NaN where absent) and
        ``present`` of shape ``(S_k,)``; ``S_k`` is ``S`` except for the last shard.
    """
    start = task.index[0] * context.steps_per_task
    stop = min(start + context.steps_per_task, context.n_steps)
    data = {
        name: np.full((stop - start, *context.shapes[name]), np.nan, dtype=np.float32)
        for name in context.variables
    }
    present = np.zeros(stop - start, dtype=bool)
    skipped: list[tuple[str, str]] = []
    wanted: dict[str, set[int]] = {}
    for position, url in task.inputs:
        wanted.setdefault(url, set()).add(position)
    for url, positions in wanted.items():
        try:
            _copy_file(url, positions, start, context, data, present)
        except (CubeError, OSError, ValueError) as exc:
            if context.on_error != "skip":
                raise
            logger.warning("Skipping %s: %s", url, exc)
            skipped.append(("unreadable", url))
    if context.keep_bits is not None:  # before the statistics: they describe what is stored
        data = {name: keep_bits(values, context.keep_bits) for name, values in data.items()}
    return Block(data=data, present=present, skipped=skipped)


def _copy_file(
    url: str,
    positions: set[int],
    start: int,
    context: ReadContext,
    data: dict[str, np.ndarray],
    present: np.ndarray,
) -> None:
    """Read ``url`` once and copy its steps at axis ``positions`` into the blocks."""
    names = [n for n in context.variables if n in context.file_vars.get(url, context.variables)]
    arrays = read_steps(
        url,
        context.storage_options,
        names,
        context.engines.get(url),
        record_dim=context.record_dim,
    )
    steps = context.file_steps[url]
    for i, position in enumerate(steps):
        if position not in positions:
            continue
        for name in names:
            data[name][position - start] = arrays[name][i]
        present[position - start] = True
