"""Running a recipe: one task per unit that is not done yet, on the ingest runners.

Each task loads its unit, calls the recipe, checks what it returned and writes
it whole as the unit's done marker (:mod:`ingest.recipe.store`). A re-run of
the same command (after a kill, or after a failure) computes only the units
without one. Under ``--on-error skip`` a unit whose recipe raises is recorded with
its exception text under ``_recipe/failed/`` and the job goes on; the next run
tries those units again. Threads by default; ``Runner(workers=…)`` or
``scheduler=…`` runs the same tasks on dask.distributed, and an array job's
task runs one contiguous slice of the units.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask

from cubes.errors import ArgumentError
from ingest.recipe.load import Recipe, RecipeError
from ingest.recipe.provenance import check_or_write_manifest
from ingest.recipe.results import (
    ABSENT as ABSENT_SUFFIX,
)
from ingest.recipe.results import (
    KIND,
    SUFFIX,
    TABLE,
    as_result,
    encode,
    read_part,
    schema_of,
    schema_text,
)
from ingest.recipe.store import RecipeDest
from ingest.recipe.units import Index, UnitSpace, load_unit, parse_uid, slice_units, uid
from ingest.runner import Runner
from ingest.slices import TaskSlice

__all__ = ["RunResult", "run_recipe"]

logger = logging.getLogger(__name__)

DONE, FAILED, ABSENT = "done", "failed", "absent"


@dataclass(frozen=True)
class UnitJob:
    """What every unit's task needs; small and picklable (no open handles)."""

    recipe: Recipe
    space: UnitSpace
    dest: RecipeDest
    on_error: str
    retry: frozenset[str] = frozenset()  # units with a failure record from an earlier run


@dataclass
class RunResult:
    """What a run did."""

    dest: str
    n_units: int  # in this run's slice
    computed: int = 0
    absent: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def run_unit(job: UnitJob, index: Index) -> dict[str, Any]:
    """Compute one unit and write its result (its done marker); returns what happened."""
    where = f"{job.recipe.name} on unit {job.space.describe(index)}"
    name = uid(index)
    try:
        unit = load_unit(job.space, index)
        if unit is None:
            job.dest.put(job.dest.done(name, ABSENT_SUFFIX), b"")
            outcome: dict[str, Any] = {"status": ABSENT, "unit": name}
        else:
            kind, value = as_result(job.recipe.compiled()(unit), job.space.dims, where)
            data = encode(kind, value, job.space.coords(index))
            job.dest.put(job.dest.done(name, SUFFIX[kind]), data)
            outcome = {"status": DONE, "unit": name, "schema": schema_of(kind, value)}
    except Exception as exc:  # noqa: BLE001 - the user's code: recorded or re-raised below
        return _failed(job, index, where, exc)
    if name in job.retry:
        job.dest.remove(job.dest.failure(name))
    return outcome


def _failed(job: UnitJob, index: Index, where: str, exc: Exception) -> dict[str, Any]:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RecipeError) and job.on_error != "skip":
        raise exc
    if job.on_error != "skip":
        line = _user_line(exc, job.recipe.path)
        raise RecipeError(
            f"{where} raised {text}{line}. Fix the recipe, or pass --on-error skip to record "
            "failing units and go on (a re-run then tries them again)."
        ) from exc
    record = {
        "status": FAILED,
        "unit": uid(index),
        "coords": job.space.coords(index),
        "error": text,
        "traceback": "".join(traceback.format_exception(exc)),
    }
    job.dest.put_json(job.dest.failure(uid(index)), record)
    logger.warning("%s raised %s (recorded; --on-error skip)", where, text)
    return record


def _user_line(exc: BaseException, path: str) -> str:
    """`` (recipe.py line 12)``: where in the recipe the exception was raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return f" ({path} line {frames[-1].lineno})" if frames else ""


def run_recipe(
    recipe: Recipe,
    space: UnitSpace,
    dest: RecipeDest,
    *,
    runner: Runner,
    task_slice: TaskSlice | None = None,
    on_error: str = "fail",
    overwrite: bool = False,
) -> RunResult:
    """Apply ``recipe`` to the units of ``space`` (this slice's) that are not done yet.

    Raises
    ------
    RecipeChangedError
        DEST holds results of another recipe, function or cube (without ``overwrite``).
    RecipeError
        The recipe failed on a unit (``on_error="fail"``), or units returned
        results of different kinds or columns; the message names the unit.
    """
    start = time.perf_counter()
    if overwrite and task_slice is not None:
        raise ArgumentError(
            f"--overwrite with --task-index/--task-count: each slice would delete what the "
            f"others wrote to {dest.url}. Delete DEST once before submitting the array job "
            "(or choose a new DEST), and run the slices without --overwrite."
        )
    if overwrite:
        dest.remove(dest.url, recursive=True)
    check_or_write_manifest(dest, recipe, space, task_slice.count if task_slice else None)
    units = list(space.indexes())
    if task_slice is not None:
        units = slice_units(units, task_slice.index, task_slice.count)
    done = dest.names("done")
    failed = frozenset(dest.names("failed"))
    todo = [i for i in units if uid(i) not in done]
    logger.info(
        "%s: %d units, %d done before, %d to compute",
        dest.url,
        len(units),
        len(units) - len(todo),
        len(todo),
    )
    result = RunResult(dest.url, len(units))
    if todo:
        job = UnitJob(recipe, space, dest, on_error, failed)
        n = len(todo)
        tasks = [  # dask's local scheduler starts with the highest key: units in their order
            dask.delayed(run_unit, pure=False)(job, i, dask_key_name=f"recipe-unit-{n - k:09d}")
            for k, i in enumerate(todo)
        ]
        outcomes = runner.compute(*tasks)
        _check_same_schema(space, recipe, dest, list(outcomes), done)
        result.computed = sum(o["status"] == DONE for o in outcomes)
        result.absent = sum(o["status"] == ABSENT for o in outcomes)
        result.failed = [o for o in outcomes if o["status"] == FAILED]
    result.seconds = time.perf_counter() - start
    return result


def _check_same_schema(
    space: UnitSpace,
    recipe: Recipe,
    dest: RecipeDest,
    outcomes: list[dict[str, Any]],
    done_before: dict[str, str],
) -> None:
    """Every unit's result has the first one's schema (an earlier run's, if any: one GET)."""
    markers = [o for o in outcomes if o["status"] == DONE]
    earlier = next((n for n, s in sorted(done_before.items()) if s in KIND), None)
    if earlier is not None:
        kind = KIND[done_before[earlier]]
        part = read_part(kind, dest.get(dest.done(earlier, SUFFIX[kind])) or b"")
        schema = schema_of(kind, part, len(space.dims) if kind == TABLE else 0)
        markers.insert(0, {"unit": earlier, "schema": schema})
    check_schemas(_describer(space), recipe.name, markers)


def _describer(space: UnitSpace) -> Callable[[str], str]:
    return lambda name: space.describe(parse_uid(name))


def check_schemas(
    describe: Callable[[str], str], recipe: str, markers: list[dict[str, Any]]
) -> None:
    """Raise :class:`RecipeError` naming the first unit whose schema differs from the first's."""
    if not markers:
        return
    first = markers[0]
    for marker in markers[1:]:
        if marker["schema"] != first["schema"]:
            raise RecipeError(
                f"{recipe} returned {schema_text(marker['schema'])} for unit "
                f"{describe(marker['unit'])}, but {schema_text(first['schema'])} for unit "
                f"{describe(first['unit'])}. A recipe must return the same columns (or "
                "arrays) for every unit: fix it and run again with --overwrite."
            )
