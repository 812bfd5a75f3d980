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

__all__ = ["Block", "BlockReader", "IngestPlan", "ShardTask"]


@dataclass(frozen=True)
class ShardTask:
    """One write task: the block at ``index`` (one entry per leading dim) and its inputs.

    ``inputs`` pairs a position along the block's first axis (the channel for a
    plate) with the URL of the file that fills it. Positions without an input
    are missing images.
    """

    index: tuple[int, ...]
    inputs: tuple[tuple[int, str], ...]


class Block(NamedTuple):
    """What a reader returns for one task.

    ``data`` has the shape of one shard without the task's indexed leading dims;
    ``present`` is a bool per position of its first axis; ``skipped`` lists the
    inputs left out under ``--on-error skip`` as ``(kind, url)``, kind
    ``"unreadable"`` or ``"mismatched"``.
    """

    data: np.ndarray
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
    variable
        The variable the tasks fill (``images``); ``present`` is derived.
    tasks
        Independent tasks, each writing whole shards of ``variable``.
    reader, context
        ``reader(task, context)`` reads one task's block; both are pickled to
        workers, so ``context`` holds URLs and options, never open handles.
    derived
        Variables computed from each block and written at the same index by the
        same task (a thumbnail level); module-level functions, so they pickle.
    extras
        Whole variables written by one task each (illumination functions):
        ``extras[name]()`` returns the array; picklable (``functools.partial``).
    ignored
        Files under SRC that look like inputs but that the plan leaves out
        (unparseable names); named in the quality report.
    """

    source_format: str
    src: str
    dest: str
    template: xr.Dataset
    encoding: dict[str, dict[str, Any]]
    variable: str
    tasks: list[ShardTask]
    reader: BlockReader
    context: Any
    derived: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    extras: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of one task's block (the shard without its indexed leading dims)."""
        shape = self.template[self.variable].shape
        return tuple(shape[len(self.tasks[0].index) :]) if self.tasks else tuple(shape)

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
