"""Peak memory of ``python -m ingest cellpainting`` for 1 plate and for a batch of 8.

The claim (issue 4, "Bounded memory"): peak RSS depends on the threads and the
shard size, not on the number of plates. Here, on local disk:

- 8 synthetic JUMP-size plates (1080x1080 uint16, 8 channels; ``--wells`` x
  ``--fields`` fields each, one seed and plate id per plate) written side by
  side, so that their folder is a batch (``DEST/<plate>.zarr`` per plate, all
  tasks in one dask graph);
- a folder holding only the first plate (hard links, no extra disk; the
  listing does not follow symbolic links), one per smaller batch size;
- the real CLI, ``python -m ingest cellpainting SRC DEST --no-progress
  --threads T``, run as a fresh subprocess per measurement, on each folder,
  for each T (default scheduler: dask threads);
- peak RSS two ways: the sum of the RSS of the process and its children,
  sampled with psutil every ``--interval`` seconds, and the kernel's
  ``ru_maxrss`` of that one process (from a small wrapper's RUSAGE_CHILDREN,
  so neither earlier runs nor this script's own memory count);
- a baseline: the same interpreter importing the same modules and exiting.

A shard (one field: 8 channels x 1080 x 1080 x 2 bytes) is 18.7 MB; a thread
holds one block plus its decode and encode buffers.

    .venv/bin/python benchmarks/ingest_memory.py [--wells 4] [--fields 2] [--plates 1,8]
        [--threads 2,8] [--repeat 2] [--workdir DIR] [--env MALLOC_MMAP_THRESHOLD_=1048576]

With ``--workdir`` the plates are kept there and reused by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS
from ingest.sources.cellpainting.synth import JUMP_SIZE, TIMESTAMP, parse_wells, write_synth_plate

N_CHANNELS = len(SOURCE4_CHANNELS)
SHARD_BYTES = N_CHANNELS * JUMP_SIZE * JUMP_SIZE * 2
IMPORTS = (
    "import ingest.cli, ingest.writer, ingest.runner, ingest.sources.cellpainting, "
    "dask.threaded, zarr, xarray, tifffile"
)


@dataclass
class Measure:
    """One subprocess: wall time, peak RSS sampled over its tree, and its ru_maxrss."""

    wall_s: float
    sampled_peak: int
    maxrss: int
    output: str


def _plate_folder(root: Path, plate: str) -> Path:
    return root / f"{plate}__{TIMESTAMP}-Measurement1"


def make_plates(root: Path, n: int, wells: int, fields: int) -> list[Path]:
    """Write ``n`` synthetic plates under ``root`` (kept if already there); their folders."""
    folders = []
    for i in range(n):
        plate = f"BENCH{i + 1:04d}"
        folder = _plate_folder(root, plate)
        expected = wells * fields * N_CHANNELS
        if not folder.is_dir() or len(list(folder.glob("Images/*.tiff"))) != expected:
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            write_synth_plate(str(root), wells=parse_wells(str(wells)), fields=fields,
                              size=JUMP_SIZE, seed=i, plate=plate)  # fmt: skip
            print(f"  wrote {plate} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        folders.append(folder)
    (root / "load_data.csv").unlink(missing_ok=True)  # not needed: SRC is listed
    return folders


def _link_tree(src: Path, dest: Path) -> None:
    """``dest`` as a copy of ``src`` made of hard links (a copy where they are not allowed)."""
    if dest.exists():
        return

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link)


# The command runs under a small wrapper: the kernel's maxrss of a process counts the RSS it had
# between fork and exec, so a child forked straight from this (large) process would report at
# least this process's RSS. The wrapper is small; its RUSAGE_CHILDREN covers the one command.
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print(f'{MARK}{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', flush=True)\n"
    "sys.exit(rc)\n"
)
MARK = "ru_maxrss_kib="


def _tree_rss(wrapper: psutil.Process) -> int:
    """Sum of the RSS of the wrapper's descendants (the command and whatever it starts)."""
    total = 0
    for p in wrapper.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def measure(cmd: list[str], interval: float) -> Measure:
    """Run ``cmd``; sample the RSS of its process tree; its ru_maxrss."""
    wrapped = [sys.executable, "-c", _WRAPPER.replace("{MARK}", MARK), *cmd]
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT)
        wrapper = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, _tree_rss(wrapper))
            except psutil.NoSuchProcess:
                break
            time.sleep(interval)
        wall = time.perf_counter() - start
        proc.wait()
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{output}")
    maxrss = int(output.rsplit(MARK, 1)[1].split()[0]) * 1024  # KiB on Linux
    return Measure(wall, peak, maxrss, output)


def ingest(src: Path, dest: Path, threads: int, interval: float) -> Measure:
    """One run of the CLI into a fresh ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-m", "ingest", "cellpainting", str(src), str(dest), "--no-progress",
           "--threads", str(threads)]  # fmt: skip
    result = measure(cmd, interval)
    shutil.rmtree(dest, ignore_errors=True)
    return result


def _cli_summary(run: Measure) -> str:
    """The CLI's own summary line (``N cube(s), X MB in S s (R MB/s)``)."""
    lines = [line for line in run.output.splitlines() if " cube(s), " in line]
    return lines[-1] if lines else run.output.strip()


def _sources(work: Path, counts: list[int], wells: int, fields: int) -> dict[int, Path]:
    """One SRC folder per batch size: the first ``n`` plates (hard links), all of them as is."""
    batch = work / "plates"
    batch.mkdir(parents=True, exist_ok=True)
    print(f"Plates under {batch}", file=sys.stderr)
    folders = make_plates(batch, max(counts), wells, fields)
    sources = {}
    for n in counts:
        if n == len(folders):
            sources[n] = batch
            continue
        sources[n] = work / f"first_{n}_plates"
        sources[n].mkdir(exist_ok=True)
        for folder in folders[:n]:
            _link_tree(folder, sources[n] / folder.name)
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=4, help="wells per plate (default 4)")
    parser.add_argument("--fields", type=int, default=2, help="fields per well (default 2)")
    parser.add_argument("--plates", default="1,8", help="batch sizes, comma-separated (1,8)")
    parser.add_argument("--threads", default="2,8", help="comma-separated (CLI default: 8)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (max peak kept)")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling period (s)")
    parser.add_argument("--workdir", default=None, help="keep (and reuse) the plates here")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="set for the ingest runs, e.g. MALLOC_MMAP_THRESHOLD_=1048576 (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.plates.split(",")})
    threads = [int(t) for t in args.threads.split(",")]
    os.environ.update(dict(item.split("=", 1) for item in args.env))
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        sources = _sources(Path(args.workdir or tmp), counts, args.wells, args.fields)
        base = measure([sys.executable, "-c", IMPORTS], args.interval)
        rows = []
        for n in counts:
            for t in threads:
                runs = [
                    ingest(sources[n], Path(tmp) / "out", t, args.interval)
                    for _ in range(args.repeat)
                ]
                rows.append((n, t, runs))
                print(f"  {n} plate(s), {t} threads: {_cli_summary(runs[-1])}", file=sys.stderr)
    _report(rows, base, args)


def _report(
    rows: list[tuple[int, int, list[Measure]]], base: Measure, args: argparse.Namespace
) -> None:
    mb = 1e6
    per_plate = args.wells * args.fields * N_CHANNELS
    env = f" Environment: {' '.join(args.env)}." if args.env else ""
    print(f"\nShard (one field, {N_CHANNELS}x{JUMP_SIZE}x{JUMP_SIZE} uint16): "
          f"{SHARD_BYTES / mb:.1f} MB. Baseline (interpreter + imports, no ingest): "
          f"{base.sampled_peak / mb:.0f} MB RSS. Peaks: max of {args.repeat} run(s); wall: "
          f"median, including interpreter start.{env}\n")  # fmt: skip
    print(
        "| plates | threads | images | MB of pixels | wall s | MB/s | peak RSS MB (sampled) "
        "| ru_maxrss MB | peak / (threads x shard) | (peak - baseline) / (threads x shard) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    peaks = {}
    for n, t, runs in rows:
        images = n * per_plate
        pixels = images * JUMP_SIZE * JUMP_SIZE * 2 / mb
        wall = statistics.median(r.wall_s for r in runs)
        peak = max(r.sampled_peak for r in runs)
        maxrss = max(r.maxrss for r in runs)
        peaks[n, t] = maxrss
        budget = t * SHARD_BYTES
        print(f"| {n} | {t} | {images} | {pixels:.0f} | {wall:.1f} | {pixels / wall:.0f} "
              f"| {peak / mb:.0f} | {maxrss / mb:.0f} | {maxrss / budget:.2f} "
              f"| {(maxrss - base.maxrss) / budget:.2f} |")  # fmt: skip
    print()
    for (n, t), peak in peaks.items():
        if n > 1 and (1, t) in peaks:
            print(f"- {t} threads: ru_maxrss({n} plates) / ru_maxrss(1 plate) = "
                  f"{peak / peaks[1, t]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
