"""Where a plan's data goes: a cube (default), or a source's own output (OME-NGFF plates).

An output creates the schema before the tasks run, says where each task's
block goes, and completes itself once every task has succeeded. The writer
(:mod:`ingest.writer`) drives any output the same way.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import numpy as np
import zarr
from zarr.storage import MemoryStore

from cubes import conventions as cv
from cubes.layout import ATTR_LAYOUT
from cubes.store import filesystem, group_array, join_url, storage_errors, zarr_store
from ingest.journal import start_journal
from ingest.plan import IngestPlan

__all__ = [
    "CONSOLIDATED_WARNING",
    "CubeOutput",
    "Locator",
    "Output",
    "output_of",
    "schema_objects",
]

CONSOLIDATED_WARNING = "Consolidated metadata is currently not part in the Zarr format 3"


class Locator(Protocol):
    """``(variable, task index) -> (array path, selection)``; picklable."""

    def __call__(self, name: str, index: tuple[int, ...]) -> tuple[str, Any]: ...


class Output(Protocol):
    """What the writer needs of an output.

    Attributes
    ----------
    journal
        Record finished tasks beside the output (resume, array jobs).
    gather
        Derived variables are sharded per task group and written by one
        gather task per group (else each task writes its own).
    """

    journal: bool
    gather: bool

    def create(self, plan: IngestPlan, options: dict[str, Any]) -> None:
        """Write the schema (no data); what a reader sees first says 'incomplete'."""

    def locator(self, plan: IngestPlan) -> Locator:
        """Where each task's blocks go."""

    def finalize(
        self,
        plan: IngestPlan,
        options: dict[str, Any],
        mask: np.ndarray,
        stats: dict[str, dict[str, np.ndarray]],
        quality: dict[str, Any],
    ) -> None:
        """Write the mask and statistics, mark the output complete, consolidate."""


def output_of(plan: IngestPlan) -> Output:
    """The plan's output: its own, else a cube."""
    return plan.output if plan.output is not None else CubeOutput()


class _CubeLocator:
    def __init__(self, task_shape: tuple[int, ...] | None) -> None:
        self.task_shape = task_shape

    def __call__(self, name: str, index: tuple[int, ...]) -> tuple[str, Any]:
        shape = self.task_shape or (1,) * len(index)
        return name, tuple(slice(i * s, (i + 1) * s) for i, s in zip(index, shape, strict=True))


class CubeOutput:
    """A cube: the template written as a Zarr v3 group, consolidated when complete."""

    journal = True
    gather = True

    def create(self, plan: IngestPlan, options: dict[str, Any]) -> None:
        """Write the schema (metadata and coords) and mark the cube incomplete.

        xarray writes it into memory first; the objects are then uploaded
        together (one concurrent batch instead of ~40 sequential round trips),
        the group's own metadata last: a cube is there only when all of it is.
        """
        objects = schema_objects(plan)
        fs, root = filesystem(plan.dest, options)
        files = {join_url(root, key): value.to_bytes() for key, value in objects.items()}
        root_key = join_url(root, "zarr.json")
        start_journal(plan.dest, options)
        with storage_errors(plan.dest, options):
            fs.pipe({k: v for k, v in files.items() if k != root_key})
            fs.pipe_file(root_key, files[root_key])

    def locator(self, plan: IngestPlan) -> Locator:
        """Variables at the task's region of the leading dims."""
        return _CubeLocator(plan.task_shape)

    def finalize(
        self,
        plan: IngestPlan,
        options: dict[str, Any],
        mask: np.ndarray,
        stats: dict[str, dict[str, np.ndarray]],
        quality: dict[str, Any],
    ) -> None:
        """Mask, statistics and provenance counts; then ``cube_complete`` and consolidation."""
        store = zarr_store(plan.dest, options, read_only=False)
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
        if plan.layout.mask is not None:
            group_array(group, plan.layout.mask)[...] = mask
        for variable, values in stats.items():
            for stat, array in values.items():
                name = plan.layout.stat_var(variable, stat)
                if name in plan.template:  # stats over no dim are () in the cube, (1,) here
                    target = group_array(group, name)
                    target[...] = np.reshape(array, target.shape)
        provenance = dict(plan.attrs.get(cv.ATTR_PROVENANCE, {}))
        provenance["n_present"] = int(mask.sum())
        provenance["n_missing"] = int(mask.size - mask.sum())
        group.attrs.update(
            {cv.ATTR_PROVENANCE: provenance, "quality": quality, cv.ATTR_COMPLETE: True}
        )
        consolidate(store)


def schema_objects(plan: IngestPlan) -> dict[str, Any]:
    """The cube's schema as zarr objects (key -> buffer): metadata and coordinates, written
    by xarray into memory; the lazy data variables stay unwritten."""
    template = plan.template.copy()
    template.attrs.update(plan.attrs)
    template.attrs[cv.ATTR_VERSION] = cv.CONVENTION_VERSION
    template.attrs[ATTR_LAYOUT] = plan.layout.to_attrs()
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
    return objects


def consolidate(store: Any) -> None:
    """Consolidate the metadata (deliberate: opening a cube is then one small read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CONSOLIDATED_WARNING)
        zarr.consolidate_metadata(store)
