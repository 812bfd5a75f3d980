"""Where an ingest's CPU goes: each thread's CPU clock, and the functions that spend it.

py-spy was tried first (``py-spy record``, running threads only): under this
machine's load (2 cores, load average 7-9) it counted 40-90 "CPU-s" for a run
whose process used 5-14 (``getrusage``), as runnable threads waiting for a core
look busy. The CPU clocks of threads (``/proc/self/task``) and of the calling
thread (``time.thread_time``) are exact whatever the load.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any

WRAPPED: tuple[tuple[str, str, str], ...] = (
    (
        "GET wait + tifffile decode (in the task)",
        "ingest.sources.cellpainting.tiff",
        "_read_image_into",
    ),
    ("Blosc encode", "zarr.codecs.blosc:BloscCodec", "_encode_sync"),
    ("statistics (ingest/stats.py)", "ingest.tasks", "_stats"),
    ("thumbnails", "ingest.sources.cellpainting.planning", "thumbnail"),
    ("journal markers (savez + PUT wait)", "ingest.tasks", "record_done"),
    ("shard writes (encode + PUT wait)", "ingest.tasks", "write_region"),
    ("dask scheduling (get_async, main thread)", "dask.threaded", "get_async"),
)


def _thread_cpu() -> dict[int, float]:
    """CPU-seconds of each live thread of this process, by native id (Linux: /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError):
            continue
    return out


def account_in_process(run: Any) -> None:
    """Run ``run()`` once; print its CPU by thread and by the functions in :data:`WRAPPED`.

    Functions are timed by the CPU clock of the thread that calls them
    (``time.thread_time``): other threads' work (the event loops' requests,
    Blosc in zarr's encode threads) is not counted in them. Threads are
    sampled every 50 ms (a thread's last 50 ms before it ends may be missed).
    """
    import importlib
    import threading
    import time

    spent: collections.Counter[str] = collections.Counter()
    restore = []
    for label, where, name in WRAPPED:
        module_name, _, cls = where.partition(":")
        owner = importlib.import_module(module_name)
        owner = getattr(owner, cls) if cls else owner
        original = getattr(owner, name)

        def timed(*a: Any, _f: Any = original, _label: str = label, **k: Any) -> Any:
            start = time.thread_time()
            try:
                return _f(*a, **k)
            finally:
                spent[_label] += time.thread_time() - start

        setattr(owner, name, timed)
        restore.append((owner, name, original))
    names: dict[int, str] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            for t in threading.enumerate():
                if t.native_id is not None:
                    names[t.native_id] = re.sub(r"[-_]?\d+(_\d+)?$", "", t.name)
            seen.update(_thread_cpu())

    sampler = threading.Thread(target=sample, name="cpu-sampler", daemon=True)
    before = _thread_cpu()
    total = time.process_time()
    sampler.start()
    try:
        run()
    finally:
        stop.set()
        sampler.join()
        total = time.process_time() - total
        for owner, name, original in restore:
            setattr(owner, name, original)
    seen.update(_thread_cpu())
    by_thread: collections.Counter[str] = collections.Counter()
    for tid, cpu in seen.items():
        if names.get(tid) != "cpu-sampler":
            by_thread[names.get(tid, "other threads")] += cpu - before.get(tid, 0.0)
    print(f"\nCPU of one in-process ingest (plan + write_cubes): {total:.2f} CPU-s in all\n")
    print("| thread | CPU-s |\n|---|---:|")
    for name, cpu in by_thread.most_common():
        print(f"| {name} | {cpu:.2f} |")
    print("\n| function (its own thread's CPU) | CPU-s |\n|---|---:|")
    for label, _, _ in WRAPPED:
        print(f"| {label} | {spent[label]:.2f} |")
