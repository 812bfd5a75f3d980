"""The ingest plan: a cube's schema plus independent, shard-aligned write tasks.

A source module turns SRC into an :class:`IngestPlan` by listing and reading
metadata only. The runner executes :attr:`IngestPlan.tasks` in any order and on
any worker: each task owns whole shards that no other task touches, so tasks
never race on one object (zarr-python#3514, xarray#8371).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from cubes.layout import Layout

__all__ = ["Block", "BlockReader", "IngestPlan", "ShardTask"]


@dataclass(frozen=True)
class ShardTask:
    """One write task: the region at ``index`` and the inputs that fill it.

    ``index`` counts in units of the plan's :attr:`IngestPlan.task_shape` along
    the leading dims of the variables (a plate: one well and field; a climate
    cube: one shard of time steps). ``inputs`` pairs a position with the URL
    of the file that fills it (its meaning is the source's: a plate's channel,
    a time step); positions without an input are missing.
    """

    index: tuple[int, ...]
    inputs: tuple[tuple[int, str], ...]


class Block(NamedTuple):
    """What a reader returns for one task.

    ``data`` holds, per variable the plan fills, the task's region; leading
    dims of size one may be left out (a plate field's ``(channel, y, x)``).
    ``present`` is the mask over the same region; ``skipped`` lists the inputs
    left out under ``--on-error skip`` as ``(kind, url)``, kind ``"unreadable"``
    or ``"mismatched"``.
    """

    data: dict[str, np.ndarray]
    present: np.ndarray
    skipped: list[tuple[str, str]]


BlockReader = Callable[[ShardTask, Any], Block]


@dataclass
class IngestPlan:
    """Everything needed to write a cube, and nothing that is not picklable.

    Attributes
    ----------
    template
        The cube's schema: coords as numpy arrays, data variables lazy (dask);
        only metadata and coords of it are ever written.
    encoding
        Per-variable zarr encoding (chunks, shards, compressors).
    layout
        What the cube's dims mean (:class:`cubes.layout.Layout`); the tasks fill
        ``layout.variables`` (several of one region, for a climate cube), and
        the mask and statistics it names are derived from what they write.
    tasks
        Independent tasks, each writing whole shards of the variables.
    task_shape
        Elements per task along the variables' leading dims (default: one).
    group_depth
        Tasks whose indexes agree on their first ``group_depth`` entries share
        the shards of the derived variables (a plate's wells): one task
        gathers and writes them, and array jobs never split such a group.
        Default: every task is its own group.
    reader, context
        ``reader(task, context)`` reads one task's block; both are pickled to
        workers, so ``context`` holds URLs and options, never open handles.
    derived
        Variables computed from each block of the first variable and written
        at the same index (a thumbnail level); module-level functions, so they
        pickle.
    extras
        Whole variables written by one task each (illumination functions):
        ``extras[name]()`` returns the array; picklable (``functools.partial``).
    ignored
        Files under SRC that look like inputs but that the plan leaves out
        (unparseable names); named in the quality report.
    stats_mask
        Which positions of the first sample dim count for the statistics (the
        training period of a climate cube); None: all present ones.
    append_dim
        The record dim a later run may extend in place (a climate cube's
        ``time``; :mod:`ingest.append`); None: the cube is written whole.
    output
        Where the cube goes (:class:`ingest.output.CubeOutput` by default; a
        source may bring its own, such as the plates' OME-NGFF export).
    codec
        The codec the user named (``--codec``), which ``encoding`` uses; None:
        the dtype's default (:mod:`ingest.codecs`). A cube at DEST written with
        another codec is then refused, where None keeps the stored one.
    """

    source_format: str
    src: str
    dest: str
    template: xr.Dataset
    encoding: dict[str, dict[str, Any]]
    layout: Layout
    tasks: list[ShardTask]
    reader: BlockReader
    context: Any
    task_shape: tuple[int, ...] | None = None
    group_depth: int | None = None
    derived: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    extras: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    stats_mask: np.ndarray | None = None
    append_dim: str | None = None
    output: Any = None
    codec: str | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables the tasks fill."""
        return self.layout.variables

    @property
    def depth(self) -> int:
        """Number of leading dims the tasks index."""
        return len(self.tasks[0].index) if self.tasks else len(self.task_shape or ())

    def region(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The selection of the task at ``index`` along the leading dims."""
        shape = self.task_shape or (1,) * len(index)
        return tuple(slice(i * s, (i + 1) * s) for i, s in zip(index, shape, strict=True))

    def group(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The group of the task at ``index`` (see :attr:`group_depth`)."""
        return index if self.group_depth is None else index[: self.group_depth]

    def task_bytes(self, index: tuple[int, ...]) -> int:
        """Uncompressed bytes the task at ``index`` writes into the variables."""
        total = 0
        for name in self.variables:
            var = self.template[name]
            sel = self.region(index)
            lead = [len(range(*s.indices(n))) for s, n in zip(sel, var.shape, strict=False)]
            total += int(np.prod(lead + list(var.shape[len(sel) :]))) * var.dtype.itemsize
        return total

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the tasks and their input files: equal plans write equal cubes."""
        digest = hashlib.sha256()
        for task in sorted(self.tasks, key=lambda t: t.index):
            digest.update(repr((task.index, sorted(task.inputs))).encode())
        return digest.hexdigest()

    @property
    def n_inputs(self) -> int:
        """Number of input files the plan reads."""
        return sum(len(t.inputs) for t in self.tasks)
