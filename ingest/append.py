"""Appending along a cube's record dim (new time steps): idempotent, exact, in place.

A plan with :attr:`~ingest.plan.IngestPlan.append_dim` whose cube at DEST holds
a prefix of its axis (same variables, other coordinates and shards) is
appended to instead of refused: the arrays are resized, the new coordinate
values written, the cube marked incomplete with the new plan's fingerprint,
and the run then resumes like an interrupted one: only the tasks without a
journal marker run. For such cubes the journal is kept after completion (one
small object per task: its mask and exact statistics), so the statistics after
an append are merged from every task's partial sums, exactly as one run over
all steps gives. The task holding the old last step is redone when the new
steps share its shard.

Running the same command again writes nothing; a file whose steps overlap the
stored ones, or a changed grid, is refused (pangeo-forge-recipes' append is not
idempotent; anemoi-datasets cannot append in place; xarray#10501 lost data).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr
import zarr

from cubes import conventions as cv
from cubes.errors import CubeExistsError
from cubes.store import filesystem, group_array, storage_errors, zarr_store
from ingest.journal import list_done, marker_url
from ingest.output import consolidate
from ingest.plan import IngestPlan

__all__ = ["append_in_place"]

logger = logging.getLogger(__name__)


def append_in_place(plan: IngestPlan, group: zarr.Group, options: dict[str, Any]) -> bool:
    """Grow the complete cube ``group`` at ``plan.dest`` to the plan's axis, if it is a prefix.

    Returns False when the cube is not an earlier state of this plan along its
    append dim (the caller then refuses it as usual).

    Raises
    ------
    CubeExistsError
        The cube's axis is not a prefix of the plan's (steps overlapping the
        stored ones from another file, or changed files).
    """
    dim = plan.append_dim
    if dim is None or not _same_apart_from(group, plan, dim):
        return False
    stored = xr.open_zarr(group.store, consolidated=False, zarr_format=3)[dim].values
    new = plan.template[dim].values
    if len(stored) >= len(new) or not np.array_equal(stored, new[: len(stored)]):
        raise CubeExistsError(_not_a_prefix(plan, stored, new))
    logger.warning(
        "%s: appending %d steps to the %d stored (%s .. %s)",
        plan.dest,
        len(new) - len(stored),
        len(stored),
        new[len(stored)],
        new[-1],
    )
    _drop_partial_marker(plan, len(stored), options)
    store = zarr_store(plan.dest, options, read_only=False)
    root = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
    _resize(plan, root, dim, len(stored))
    consolidate(store)
    return True


def _same_apart_from(group: zarr.Group, plan: IngestPlan, dim: str) -> bool:
    """Same variables, shards and other coordinates; only ``dim`` may be longer."""
    t = plan.template
    for name in plan.variables:
        if name not in group:
            return False
        array = group_array(group, name)
        want = t[name]
        axis = want.dims.index(dim) if dim in want.dims else None
        if axis != 0 or array.shape[1:] != want.shape[1:]:
            return False
        if array.shards != tuple(plan.encoding.get(name, {}).get("shards") or array.shards):
            return False
    others = {str(d) for n in plan.variables for d in t[n].dims} - {dim}
    return all(
        d not in t.coords or np.array_equal(group_array(group, d)[...], t[d].values) for d in others
    )


def _not_a_prefix(plan: IngestPlan, stored: np.ndarray, new: np.ndarray) -> str:
    n = min(len(stored), len(new))
    diff = np.flatnonzero(stored[:n] != new[:n])
    where = f"from {stored[diff[0]]} on" if len(diff) else f"after step {n}"
    return (
        f"{plan.dest} holds {len(stored)} steps ({stored[0]} .. {stored[-1]}); the files under "
        f"{plan.src} now give {len(new)} steps that differ from the stored ones {where}. "
        "Appending only adds steps after the last stored one: remove the file whose steps "
        "overlap the stored ones, or pass --overwrite to ingest everything again."
    )


def _drop_partial_marker(plan: IngestPlan, n_stored: int, options: dict[str, Any]) -> None:
    """The task holding the old last step is redone when the new steps share its region."""
    size = (plan.task_shape or (1,))[0]
    last = (n_stored - 1) // size
    if n_stored % size and (last,) in list_done(plan.dest, options):
        url = marker_url(plan.dest, (last,))
        fs, path = filesystem(url, options)
        with storage_errors(url, options):
            fs.rm_file(path)


def _resize(plan: IngestPlan, root: zarr.Group, dim: str, n_stored: int) -> None:
    """Resize every array on ``dim``, write the new coordinate values, mark incomplete."""
    t = plan.template
    n = t.sizes[dim]
    for name, var in t.variables.items():
        if var.dims[:1] == (dim,) and str(name) in root:
            array = group_array(root, str(name))
            array.resize((n, *array.shape[1:]))
    coord = group_array(root, dim)
    values = t[dim].values[n_stored:]
    if "units" in coord.attrs:
        from xarray.coding.times import encode_cf_datetime

        values, _, _ = encode_cf_datetime(
            values, str(coord.attrs["units"]), str(coord.attrs.get("calendar", "standard"))
        )
    coord[n_stored:] = np.asarray(values, dtype=coord.dtype)
    root.attrs.update({cv.ATTR_COMPLETE: False, cv.ATTR_INPUTS: plan.fingerprint})
