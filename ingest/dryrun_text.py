"""The text (and ``--json``) of ``python -m ingest <source> SRC DEST --dry-run``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ingest.dryrun import (
    GET_PER_1000,
    PRICES_DATE,
    PUT_PER_1000,
    STORAGE_PER_GB_MONTH,
    CubeEstimate,
    DryRun,
    dry_run,
)
from ingest.plan import IngestPlan
from ingest.slices import TaskSlice

__all__ = ["format_dry_run", "run_dry_run"]

SHOWN_CUBES = 5  # a batch: the first cubes in full, then one line for the rest


def run_dry_run(
    args: argparse.Namespace,
    plans: list[IngestPlan],
    dest_options: dict[str, Any],
    task_slice: TaskSlice | None,
) -> None:
    """The ``--dry-run`` branch of the CLI: check DEST's location (read only), estimate, print."""
    from cubes.store import check_location

    for plan in plans:
        check_location(plan.dest, dest_options)  # a wrong endpoint or bucket fails as a run would
    result = dry_run(
        plans,
        dest_options,
        threads=args.threads,
        workers=args.workers,
        task_slice=task_slice,
        batch=any(plan.dest != args.dest for plan in plans),
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=1, default=str))
        return
    print(format_dry_run(result, f"{args.command} {args.src} -> {args.dest}"))
    if args.scheduler:
        print(
            f"Note: --scheduler {args.scheduler}: its workers are not known here; the wall time "
            "is for one worker of --threads threads (divide by the cluster's workers)."
        )


def size(n: float) -> str:
    """Bytes in decimal units: ``2.3 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _dims(line: Any) -> str:
    return ", ".join(f"{d} {n}" for d, n in zip(line.dims, line.shape, strict=True))


def _cube_lines(cube: CubeEstimate) -> list[str]:
    share = (
        f" (this slice: {cube.tasks} of {cube.all_tasks})" if cube.tasks != cube.all_tasks else ""
    )
    out = [
        f"Cube {cube.dest}: {_n(cube.tasks, 'task')}{share} in {_n(cube.groups, 'group')}, "
        f"{_n(cube.inputs, 'input file')} ({size(cube.input_bytes)})"
    ]
    for v in cube.variables:
        if v.role == "final":
            continue
        chunks = f"chunks {v.chunks}" + (f", shards {v.shards}" if v.shards else "")
        out.append(
            f"  {v.name} ({_dims(v)}) {v.dtype}, {v.codec}, {chunks}: {_n(v.objects, 'object')}, "
            f"{size(v.raw_bytes)} raw -> ~{size(v.stored_bytes)}"
        )
    final = [v for v in cube.variables if v.role == "final"]
    if final:
        out.append(
            f"  mask and statistics, written at the end: {_n(len(final), 'array')}, "
            f"{_n(sum(v.objects for v in final), 'object')}, "
            f"{size(sum(v.raw_bytes for v in final))}"
        )
    if cube.output != "cube":
        out.append(
            f"  output {cube.output}: its own layout; its data counted as a cube's would be, "
            "its metadata objects not (a real run writes more objects and requests)"
        )
    out.append(
        f"  schema: {cube.metadata_objects} metadata and coordinate objects, "
        f"{size(cube.metadata_bytes)}; quality report and journal: {cube.other_objects}"
    )
    return out


def _sample_lines(result: DryRun) -> list[str]:
    rates = result.rates
    where = rates.measured_on or (
        f"{rates.samples[0].cube}" if rates.samples else "the plan (it has no tasks)"
    )
    out = [
        f"Sampled {_n(len(rates.samples), 'task')} of {where}: read with the plan's reader, "
        "written by the writer's own task (statistics, the plan's codec, shards, journal "
        "marker) into a copy of the cube in memory; one warm-up run before, not counted:"
    ]
    for s in rates.samples:
        raw, stored = sum(s.raw.values()), sum(s.stored.values())
        out.append(
            f"  task {s.index}: {s.inputs} files, read+decode {_seconds(s.read_s)} "
            f"(CPU {_seconds(s.read_cpu_s)}), write {_seconds(s.write_s)} "
            f"(CPU {_seconds(s.write_cpu_s)}), {size(raw)} -> {size(stored)}"
        )
    names = sorted({n for s in rates.samples for n in s.raw})
    if names:
        ratios = ", ".join(f"{n} {rates.ratio(n):.2f}" for n in names)
        out.append(f"  compression ratio (raw / stored): {ratios}")
    return out


def format_dry_run(result: DryRun, title: str = "") -> str:
    """The dry run as text: inputs, cubes, objects, bytes, rates, wall time, requests, cost."""
    cubes = result.cubes
    out = [f"Dry run: nothing was written. {title}".rstrip()]
    if result.task_slice is not None:
        ts = result.task_slice
        out.append(
            f"Array job slice {ts.index} of {ts.count}: {sum(c.tasks for c in cubes)} of "
            f"{sum(c.all_tasks for c in cubes)} tasks; `finalize` writes the mask, statistics, "
            "quality report and consolidated metadata once every slice is done (not counted)."
        )
    inputs = sum(c.inputs for c in cubes)
    out.append(
        f"Inputs: {_n(inputs, 'file')}, {size(sum(c.input_bytes for c in cubes))} "
        "(sizes from listings)"
    )
    for cube in cubes[:SHOWN_CUBES]:
        out += _cube_lines(cube)
    if len(cubes) > SHOWN_CUBES:
        rest = cubes[SHOWN_CUBES:]
        out.append(
            f"… and {len(rest)} more cubes: {sum(c.tasks for c in rest)} tasks, "
            f"{sum(c.objects for c in rest)} objects, ~{size(sum(c.stored_bytes for c in rest))}"
        )
    if result.index_objects:
        out.append("Batch index: plates.csv under DEST (1 object)")
    shards = sum(v.objects for c in cubes for v in c.variables)
    meta = sum(c.metadata_objects + c.other_objects for c in cubes) + result.index_objects
    out.append(
        f"Objects to write: {result.objects:,} ({shards:,} shards, {meta:,} metadata and reports)"
    )
    out.append(f"Estimated stored bytes: ~{size(result.stored_bytes)}")
    out += _sample_lines(result)
    slots = result.threads * result.workers
    raw = sum(v.raw_bytes for c in cubes for v in c.variables if v.role == "tasks")
    rate = size(raw / max(result.wall_s, 1e-9))
    out.append(
        f"Estimated wall time: ~{_seconds(result.wall_s)} ({rate}/s of data) at "
        f"{result.threads} threads x "
        f"{_n(result.workers, 'worker')}: tasks in parallel over {slots} slots, their CPU time "
        f"over at most min({slots}, {result.cores} cores); the mean sampled task times the "
        "tasks to run. Not included: uploading (nothing was written), creating and finalizing."
    )
    here = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if result.load > (here or 1):
        out.append(
            f"  This machine is busy (load average {result.load:.1f} on {here} cores): the "
            "samples ran slower than alone, and the estimate assumes the cores are the job's own; "
            "a run sharing them takes longer."
        )
    out += _request_lines(result)
    return "\n".join(out)


def _request_lines(result: DryRun) -> list[str]:
    r = result.requests
    kinds = ", ".join(f"{k} {r.get(k, 0):,}" for k in ("PUT", "GET", "HEAD", "LIST", "DELETE"))
    where = "" if result.remote_dest else " (DEST is local: what an s3:// DEST would take)"
    reads = sum(c.reads for c in result.cubes)
    read_cost = reads / 1000 * GET_PER_1000
    src = f"${read_cost:.4f} where the reader pays" if result.remote_src else "SRC is local"
    return [
        f"S3 requests writing DEST{where}: {kinds}",
        f"Reading SRC: {reads:,} whole-file GETs ({src})",
        f"Cost of the requests: ${result.request_cost:.4f}; storage "
        f"${result.storage_cost_per_month:.4f} per month — S3 Standard list prices of "
        f"{PRICES_DATE}: PUT/COPY/POST/LIST ${PUT_PER_1000} per 1,000, GET ${GET_PER_1000} per "
        f"1,000, storage ${STORAGE_PER_GB_MONTH} per GB-month",
    ]
