"""The destination of a plan before anything is written: new, to resume, or up to date.

A destination holding a cube of this very plan (same schema and input files)
is resumed (incomplete) or left alone (complete: re-running, or adding plates
to a batch, writes nothing); anything else is refused unless ``--overwrite``,
which only ever replaces a cube. A cube keeps the codec it was written with: a
run without ``--codec`` resumes or appends with the stored codec (whatever the
default is now), a run naming another codec is refused; so is one with another
``--keep-bits`` rounding than the stored values have.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import zarr

from cubes import conventions as cv
from cubes.errors import CubeExistsError
from cubes.store import filesystem, group_array, is_local, join_url, storage_errors, zarr_store
from ingest.append import append_in_place
from ingest.codecs import stored_codec
from ingest.journal import journal_started, remove_journal
from ingest.output import output_of
from ingest.plan import IngestPlan

__all__ = ["prepare_dest"]

logger = logging.getLogger(__name__)


def prepare_dest(
    plan: IngestPlan, options: dict[str, Any], overwrite: bool, *, shared: bool = False
) -> str:
    """Check and clear the destination: ``"new"`` (create the schema), ``"resume"`` (an
    interrupted ingest of this plan), ``"append"`` (a complete cube of an earlier part of
    this plan's record axis, now grown to it: :mod:`ingest.append`), or ``"done"`` (a
    complete cube of this very plan: same schema and input files, so re-running, or
    appending plates to a batch, is a no-op).

    ``shared``: slices of an array job write DEST together, so the schema is
    created idempotently (never removed, whoever created it).
    """
    dest = plan.dest
    fs, path = filesystem(dest, options)
    with storage_errors(dest, options):
        if is_local(dest):
            entries = os.listdir(path) if os.path.isdir(path) else []
            if os.path.isfile(path):
                entries = [path]
        else:
            entries = fs.find(path, maxdepth=1, withdirs=True)
        has_cube = fs.exists(join_url(path, "zarr.json"))
        started = bool(entries) and not has_cube and journal_started(dest, options)
        if started and shared:
            return "new"  # another slice is creating it, or was interrupted: same bytes
        if started:
            logger.warning("%s: removing a schema whose writing was interrupted", dest)
            fs.rm(path, recursive=True)
            entries = []
        if entries and not has_cube:
            raise CubeExistsError(
                f"{dest} already exists and holds data that is not a cube. Choose a new or "
                "empty DEST; --overwrite only ever replaces a cube."
            )
        if has_cube and not overwrite:
            return _existing(plan, options)
        if has_cube:
            logger.info("Removing the cube at %s (--overwrite)", dest)
            fs.rm(path, recursive=True)
    if not shared:
        remove_journal(dest, options)
    return "new"


def _existing(plan: IngestPlan, options: dict[str, Any]) -> str:
    """``"done"`` or ``"resume"`` for a cube of this plan at DEST; else refused."""
    dest = plan.dest
    group = zarr.open_group(zarr_store(dest, options, read_only=True), mode="r")
    complete = group.attrs.get(cv.ATTR_COMPLETE)
    if not output_of(plan).journal:
        raise CubeExistsError(
            f"{dest} already holds output of an ingest. Pass --overwrite to replace it, or choose "
            "another DEST."
        )
    _check_encoding(group, plan)  # before an append resizes anything
    same = _same_schema(group, plan)
    if same and group.attrs.get(cv.ATTR_INPUTS) == plan.fingerprint:
        if complete:
            logger.info("%s is complete and up to date: nothing to write", dest)
        return "done" if complete else "resume"
    if complete and append_in_place(plan, group, options):
        return "append"
    if same and complete is False:  # the source changed under an interrupted run
        raise CubeExistsError(
            f"{dest} holds an incomplete cube of the same coordinates but other input files than "
            "SRC has now. Pass --overwrite to start again."
        )
    raise CubeExistsError(
        f"{dest} holds {'a' if complete else 'an incomplete'} cube of other inputs than SRC has "
        f"now (different coordinates, sizes or files), which this run cannot "
        f"{'add to' if complete else 'resume'}: adding inputs to a cube re-ingests it. Pass "
        "--overwrite to replace it, or choose another DEST."
    )


def _check_encoding(group: zarr.Group, plan: IngestPlan) -> None:
    """A cube keeps the codec and the rounding it was written with.

    Without ``--codec`` (``plan.codec`` None) a resume or an append writes with the
    stored codec; another ``--codec`` is refused. Values rounded to ``keep_bits``
    (the variable's attr) are only resumed or appended to with the same rounding.
    """
    for name in plan.variables:
        if name not in group:
            continue
        array = group_array(group, name)
        stored = stored_codec(array)
        if plan.codec is not None and stored is not None and stored != plan.codec:
            raise CubeExistsError(
                f"{plan.dest} holds a cube whose '{name}' is written with codec {stored}, not "
                f"--codec {plan.codec}: a cube keeps one codec. Leave --codec out (or give "
                f"--codec {stored}) to resume or add to it, or pass --overwrite to rewrite it "
                f"with {plan.codec}."
            )
        had, wants = array.attrs.get("keep_bits"), plan.template[name].attrs.get("keep_bits")
        if had != wants:
            said = f"--keep-bits {had}" if had is not None else "no --keep-bits (lossless)"
            asked = f"--keep-bits {wants}" if wants is not None else "no --keep-bits"
            raise CubeExistsError(
                f"{plan.dest} holds a cube whose '{name}' was written with {said}; this run has "
                f"{asked}. A cube's values are rounded one way: give the same --keep-bits to "
                "resume or add to it, or pass --overwrite to rewrite it."
            )


def _same_schema(group: zarr.Group, plan: IngestPlan) -> bool:
    """The cube at DEST has the plan's variables, shapes and coordinate labels."""
    t = plan.template
    dims: set[str] = set()
    for name in plan.variables:
        if name not in group or group_array(group, name).shape != t[name].shape:
            return False
        dims.update(str(d) for d in t[name].dims)
    return all(
        _labels(group_array(group, dim)) == _labels(group_array(group, dim), t[dim].values)
        for dim in sorted(dims)
        if dim in t.coords and dim in group
    )


def _labels(stored: zarr.Array, values: Any = None) -> list[str]:
    """A coordinate's labels as text: ``values`` (else the stored ones); CF times as their
    numbers in the stored ``units``/``calendar``, as the cube holds them."""
    units = str(stored.attrs.get("units", ""))
    if values is None:
        values = stored[...]
    elif " since " in units and np.asarray(values).dtype.kind in "OM":
        from xarray.coding.times import encode_cf_datetime

        values, _, _ = encode_cf_datetime(
            values, units, str(stored.attrs.get("calendar", "standard"))
        )
    if " since " in units:
        return [repr(float(v)) for v in np.asarray(values)]
    return [str(v) for v in np.asarray(values)]
