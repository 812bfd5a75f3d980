"""Completing cubes: after an uninterrupted run, or once every slice of an array job is done.

Completion writes the quality report, then the mask and statistics (merged from
the tasks' partial results, or from their journal markers), marks the cube
complete and consolidates its metadata, and finally removes the journal.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from cubes import conventions as cv
from cubes.errors import SchemaError
from cubes.layout import layout_of
from cubes.store import filesystem, join_url, storage_errors, zarr_store
from ingest.journal import list_done, load_done, remove_journal
from ingest.lock import WriterLock
from ingest.output import output_of
from ingest.plan import IngestPlan, ShardTask
from ingest.report import quality_report, quality_report_url, summary_line
from ingest.result import IngestResult
from ingest.slices import IncompleteSlicesError, manifest_url, missing_slices, read_manifest
from ingest.tasks import Partial

__all__ = ["complete", "finalize_cubes"]

logger = logging.getLogger(__name__)


def finalize_cubes(dest: str, options: dict[str, Any]) -> list[tuple[IngestPlan, IngestResult]]:
    """Complete the cube(s) an array job wrote: ``dest`` is a cube, or the prefix of a batch.

    Checks that every slice's tasks have their journal marker, then writes the
    mask, statistics, quality report and completion mark from the journal, as
    an uninterrupted run would.

    Raises
    ------
    IncompleteSlicesError
        Some slices have not finished; the message names them.
    SchemaError
        ``dest`` holds no array job to finalize.
    """
    start = time.perf_counter()
    fs, path = filesystem(dest, options)
    if read_manifest(dest, options) is not None:
        dests = [dest]
    else:
        with storage_errors(dest, options):
            found = fs.glob(join_url(path, "*.ingest", "array.json"))
        dests = sorted(
            join_url(dest, posixpath.basename(posixpath.dirname(p))[: -len(".ingest")] + ".zarr")
            for p in found
        )
    if not dests and _is_complete_cube(dest, options):
        logger.warning("%s is complete: nothing to finalize", dest)
        return []
    if not dests:
        raise SchemaError(
            f"Nothing to finalize at {dest}: no array job has written there ({manifest_url(dest)} "
            "is absent). Run the slices first (--task-index I --task-count N), or finalize the "
            "prefix that holds the plates."
        )
    missing: list[str] = []
    for cube in dests:
        manifest = read_manifest(cube, options) or {}
        for k, n in sorted(missing_slices(manifest, list_done(cube, options)).items()):
            missing.append(f"slice {k}: {n} task(s) of {cube}")
    if missing:
        count = (read_manifest(dests[0], options) or {}).get("count", "?")
        raise IncompleteSlicesError(
            f"Not all {count} slices have finished: " + "; ".join(missing) + ". Run those slices "
            "again (--task-index I --task-count N, or the failed tasks of the array job), then "
            "finalize."
        )
    out = []
    for cube in dests:
        with WriterLock(cube, options):
            plan = _plan_of_cube(cube, options, read_manifest(cube, options) or {})
            partial = _partial_from_journal(cube, options, [t.index for t in plan.tasks])
            stats, quality = complete(plan, options, partial)
        out.append(
            (
                plan,
                IngestResult(
                    dest=cube,
                    n_tasks=len(plan.tasks),
                    n_inputs=int(quality["counts"]["found"]),
                    bytes_written=sum(plan.task_bytes(t.index) for t in plan.tasks),
                    seconds=time.perf_counter() - start,
                    stats=stats,
                    quality=quality,
                ),
            )
        )
    return out


def _is_complete_cube(dest: str, options: dict[str, Any]) -> bool:
    fs, path = filesystem(dest, options)
    with storage_errors(dest, options):
        if not fs.exists(join_url(path, "zarr.json")):
            return False
        group = zarr.open_group(zarr_store(dest, options, read_only=True), mode="r")
        return group.attrs.get(cv.ATTR_COMPLETE) is True


def _plan_of_cube(dest: str, options: dict[str, Any], manifest: dict[str, Any]) -> IngestPlan:
    """What finalizing needs of the plan, read back from the cube and the manifest."""
    import xarray as xr

    store = zarr_store(dest, options, read_only=True)
    template = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks={})
    tasks = [
        ShardTask(tuple(index), ())
        for indexes in manifest.get("slices", {}).values()
        for index in indexes
    ]
    provenance = dict(template.attrs.get(cv.ATTR_PROVENANCE, {}))
    shape = manifest.get("task_shape")
    append_dim = manifest.get("append_dim")
    return IngestPlan(
        source_format=str(provenance.get("source_format", "")),
        src=str(manifest.get("source", "")),
        dest=dest,
        template=template,
        encoding={},
        layout=layout_of(template.attrs, dest),
        tasks=tasks,
        task_shape=tuple(shape) if shape else None,
        append_dim=str(append_dim) if append_dim else None,
        reader=_no_reader,
        context=None,
        ignored=list(manifest.get("ignored", [])),
        attrs={cv.ATTR_PROVENANCE: provenance},
    )


def _no_reader(task: ShardTask, context: Any) -> Any:
    raise AssertionError("finalizing reads no images")


def _partial_from_journal(
    dest: str, options: dict[str, Any], indexes: list[tuple[int, ...]]
) -> Partial:
    """The merged results of the tasks at ``indexes``, from their journal markers."""

    def load(index: tuple[int, ...]) -> Partial:
        present, stats, skipped, _ = load_done(dest, options, index)
        return Partial([(index, present)], stats, skipped)

    with ThreadPoolExecutor(16) as pool:
        parts = list(pool.map(load, indexes))
    return parts[0].merge(*parts[1:])


def complete(
    plan: IngestPlan, options: dict[str, Any], partial: Partial
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Write the quality report, then let the output write the mask and statistics, mark
    itself complete and consolidate; the journal goes last."""
    mask = np.zeros(plan.template[plan.layout.mask].shape, dtype=bool)
    for index, present in partial.present:
        mask[plan.region(index)] = present
    stats = {name: part.result() for name, part in partial.stats.items()}
    report = quality_report(
        plan.template,
        plan.layout,
        mask,
        stats,
        unreadable=sorted(url for kind, url in partial.skipped if kind == "unreadable"),
        mismatched=sorted(url for kind, url in partial.skipped if kind == "mismatched"),
        unrecognized=sorted(plan.ignored),
    )
    report_url = quality_report_url(plan.dest)
    output = output_of(plan)
    with storage_errors(plan.dest, options):
        fs, path = filesystem(report_url, options)
        fs.pipe_file(path, json.dumps(report, indent=1).encode())
        output.finalize(
            plan, options, mask, stats, {"counts": report["counts"], "report": report_url}
        )
        if output.journal and plan.append_dim is None:
            remove_journal(plan.dest, options)
        elif output.journal:  # the markers stay: the exact partial statistics appends merge
            fs, path = filesystem(manifest_url(plan.dest), options)
            if fs.exists(path):
                fs.rm_file(path)
    logger.info("%s complete: %s", plan.dest, summary_line(report))
    return stats, report
