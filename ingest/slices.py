"""Array jobs: one deterministic, disjoint slice of the plan per task of an array job.

``--task-index I --task-count N`` (or AWS Batch's ``AWS_BATCH_JOB_ARRAY_INDEX``
/ ``AWS_BATCH_JOB_ARRAY_SIZE``, or Kubernetes' ``JOB_COMPLETION_INDEX`` with
``--task-count``) runs slice ``I`` of ``N``; ``python -m ingest finalize DEST``
completes the cube once every slice is done.

The unit of slicing is a group of tasks (:attr:`IngestPlan.group_depth`: a
plate's well, whose fields share the thumbnail shard written by one task), so a
group never spans two slices. Groups are taken in plan order (cubes, then
groups) and cut into ``N`` contiguous runs of about equal numbers of tasks.
Every slice computes the same cut from the same listing; the manifest
(``<stem>.ingest/array.json``, written by the first slice and checked by the
others) records it, so a slice that saw a different listing is refused instead
of writing a different cube, and ``finalize`` can name the
slices whose tasks are missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cubes.errors import CubeError, SchemaError
from cubes.store import filesystem, join_url, storage_errors
from ingest.journal import journal_url
from ingest.plan import IngestPlan

__all__ = [
    "IncompleteSlicesError",
    "TaskSlice",
    "check_manifest",
    "missing_slices",
    "read_manifest",
    "slice_tasks",
]

MANIFEST = "array.json"
INDEX_VARIABLES = ("AWS_BATCH_JOB_ARRAY_INDEX", "JOB_COMPLETION_INDEX")
COUNT_VARIABLES = ("AWS_BATCH_JOB_ARRAY_SIZE",)

Index = tuple[int, ...]


class IncompleteSlicesError(CubeError, RuntimeError):
    """``finalize`` found tasks that no slice has written yet."""


@dataclass(frozen=True)
class TaskSlice:
    """Slice ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @property
    def part(self) -> str:
        """The slice's name in lock files: ``slice-3-of-8``."""
        return f"slice-{self.index}-of-{self.count}"

    @classmethod
    def resolve(
        cls,
        index: int | None,
        count: int | None,
        environ: Mapping[str, str] = os.environ,
    ) -> TaskSlice | None:
        """The slice from the arguments, else from the array job's environment; None if neither.

        Raises
        ------
        SchemaError
            Only one of index and count is known, or they are out of range.
        """
        index_from = "--task-index"
        if index is None:
            for name in INDEX_VARIABLES:
                if environ.get(name, "").strip():
                    index, index_from = _int(environ[name], name), name
                    break
        count_from = "--task-count"
        if count is None:
            for name in COUNT_VARIABLES:
                if environ.get(name, "").strip():
                    count, count_from = _int(environ[name], name), name
                    break
        if index is None and count is None:
            return None
        if count is None:
            raise SchemaError(
                f"{index_from} is {index} but the number of slices is unknown: pass --task-count N "
                "(the array job's size)."
            )
        if index is None:
            raise SchemaError(
                f"{count_from} is {count} but this task's slice is unknown: pass --task-index I "
                "(0-based), or run it as an AWS Batch / Kubernetes indexed array job."
            )
        if count < 1 or not 0 <= index < count:
            raise SchemaError(
                f"Slice {index} of {count} ({index_from}, {count_from}): the index must be "
                "0 <= I < N."
            )
        return cls(index, count)


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SchemaError(f"{name}={value!r} is not an integer.") from None


def slice_tasks(plans: Sequence[IngestPlan], count: int) -> list[dict[int, list[Index]]]:
    """Per plan, ``{slice: task indexes}``: task groups in plan order cut into ``count`` runs.

    Cuts fall where the running number of tasks crosses ``k * total / count``,
    so slices are balanced to within one group and never split one.
    """
    groups: list[tuple[int, list[Index]]] = []
    for p, plan in enumerate(plans):
        by_group: dict[Index, list[Index]] = {}
        for task in plan.tasks:
            by_group.setdefault(plan.group(task.index), []).append(task.index)
        groups += [(p, indexes) for indexes in by_group.values()]
    total = sum(len(indexes) for _, indexes in groups)
    out: list[dict[int, list[Index]]] = [{} for _ in plans]
    before = 0
    for p, indexes in groups:
        middle = before + len(indexes) / 2  # the group goes where its middle falls
        k = min(int(middle * count / max(total, 1)), count - 1)
        out[p].setdefault(k, []).extend(indexes)
        before += len(indexes)
    return out


def manifest_url(dest: str) -> str:
    """``…/plate.zarr`` -> ``…/plate.ingest/array.json``."""
    return join_url(journal_url(dest), MANIFEST)


def _manifest(plan: IngestPlan, count: int, slices: dict[int, list[Index]]) -> dict[str, Any]:
    return {
        "count": count,
        "source": plan.src,
        "slices": {str(k): [list(i) for i in v] for k, v in sorted(slices.items())},
        "task_shape": list(plan.task_shape) if plan.task_shape else None,
        "append_dim": plan.append_dim,
        "ignored": sorted(plan.ignored),
    }


def check_manifest(
    plan: IngestPlan, options: dict[str, Any], count: int, slices: dict[int, list[Index]]
) -> None:
    """Write the manifest if absent; refuse a slice whose plan differs from the recorded one."""
    url = manifest_url(plan.dest)
    mine = _manifest(plan, count, slices)
    recorded = read_manifest(plan.dest, options)
    if recorded is None:
        fs, path = filesystem(url, options)
        with storage_errors(url, options):
            fs.pipe_file(path, json.dumps(mine).encode())
        return
    if recorded["count"] != count:
        raise SchemaError(
            f"{plan.dest} is being written by an array job of {recorded['count']} slices "
            f"({url}); this task says {count}. Use the same --task-count for every slice."
        )
    if recorded["slices"] != mine["slices"]:
        raise SchemaError(
            f"{plan.dest}: the images under {plan.src} differ from what the first slice of this "
            f"array job listed ({url}); slices must all see the same SRC. Re-run the whole array "
            "job into a new DEST once SRC has stopped changing."
        )


def read_manifest(dest: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an array job writing ``dest``; None if there is none."""
    url = manifest_url(dest)
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        try:
            data: dict[str, Any] = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
    return data


def missing_slices(manifest: dict[str, Any], done: set[Index]) -> dict[int, int]:
    """``{slice: number of its tasks without a journal marker}``, for unfinished slices."""
    missing = {}
    for k, indexes in manifest["slices"].items():
        n = sum(tuple(i) not in done for i in indexes)
        if n:
            missing[int(k)] = n
    return missing
