"""MemoryCache and DiskCache: byte limits (threads, processes), no thrashing, damage, settings."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cubes.errors import SchemaError
from loaders.cache import CacheConfigError, DiskCache, MemoryCache

URL = "s3://bkt/plate.zarr"


# --- MemoryCache --------------------------------------------------------------------------


def test_memory_cache_is_an_lru_bounded_by_bytes():
    cache = MemoryCache(1000)
    for i in range(3):
        assert cache.put(i, np.zeros(300, dtype=np.uint8))
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache.put(3, np.zeros(300, dtype=np.uint8))  # evicts 1, the least recently used
    assert [k for k in range(4) if cache.get(k) is not None] == [0, 2, 3]
    assert not cache.put("big", np.zeros(1001, dtype=np.uint8))  # larger than the limit
    assert cache.get("big") is None and cache.nbytes == 900
    cache.put(2, np.zeros(1000, dtype=np.uint8))  # replacing an entry frees its bytes
    assert cache.nbytes == 1000 and len(cache) == 1
    value = cache.get(2)
    assert value is not None and not value.flags.writeable  # shared: read-only


def test_memory_cache_limit_holds_under_threads():
    cache = MemoryCache(50_000)
    over = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(2000):
            key = int(rng.integers(0, 300))
            if cache.get(key) is None:
                cache.put(key, np.empty(int(rng.integers(1, 8000)), dtype=np.uint8))
            total = sum(v.nbytes for v in list(cache._items.values()))
            if cache.nbytes > cache.max_bytes or total > cache.max_bytes:
                over.append((cache.nbytes, total))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not over
    assert cache.nbytes == sum(v.nbytes for v in cache._items.values())


def test_caches_pickle_as_settings():
    memory = MemoryCache(123)
    memory.put("k", np.zeros(10, dtype=np.uint8))
    copy = pickle.loads(pickle.dumps(memory))
    assert (copy.max_bytes, len(copy)) == (123, 0)


# --- DiskCache ----------------------------------------------------------------------------


def test_disk_cache_round_trip_and_full_cache_admits_nothing(tmp_path):
    cache = DiskCache(tmp_path / "c", 3 * (16 + 100))
    payloads = {i: bytes([i]) * 100 for i in range(5)}
    admitted = [cache.put(URL, f"images/c/{i}", None, p) for i, p in payloads.items()]
    assert admitted == [True, True, True, False, False]  # full: refused, nothing evicted
    for i in range(3):
        assert bytes(cache.get(URL, f"images/c/{i}")) == payloads[i]
    assert cache.get(URL, "images/c/3") is None
    assert cache.nbytes == cache.max_bytes == _on_disk(cache)
    assert cache.get(URL, "images/c/0", (0, 10)) is None  # ranges are entries of their own
    assert pickle.loads(pickle.dumps(cache)).get(URL, "images/c/1") is not None
    cache.clear()
    assert cache.nbytes == 0 == _on_disk(cache) and cache.get(URL, "images/c/0") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-7],  # truncated
        lambda b: b[:10],  # shorter than the header
        lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:],  # a flipped bit
        lambda b: b"XXXX" + b[4:],  # not a cache file
    ],
)
def test_damaged_entries_are_misses_and_removed(tmp_path, damage):
    cache = DiskCache(tmp_path / "c", 10_000)
    cache.put(URL, "images/c/0/0", (100, 300), bytes(range(200)))
    path = cache.path(URL, "images/c/0/0", (100, 300))
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    assert cache.get(URL, "images/c/0/0", (100, 300)) is None
    assert not path.exists()
    # The bytes the file held are freed; never more, so the count stays >= what is on disk.
    assert cache.nbytes == 16 + 200 - len(damaged) >= _on_disk(cache) == 0
    assert cache.put(URL, "images/c/0/0", (100, 300), bytes(range(200)))  # can be cached again
    assert bytes(cache.get(URL, "images/c/0/0", (100, 300))) == bytes(range(200))


def test_no_thrashing_when_the_dataset_is_twice_the_cache(tmp_path):
    """An LRU would hit ~0 % in the second shuffled epoch; keeping the first-admitted half
    hits ~50 %."""
    cache = DiskCache(tmp_path / "c", 100 * (16 + 1000))
    rng = np.random.default_rng(0)
    keys = [f"images/c/{i}/0/0/0/0" for i in range(200)]
    hits = []
    for _ in range(2):
        hits = []
        for i in rng.permutation(200):
            found = cache.get(URL, keys[i]) is not None
            hits.append(found)
            if not found:
                cache.put(URL, keys[i], None, rng.bytes(1000))
    assert 0.35 <= np.mean(hits) <= 0.65
    assert cache.nbytes <= cache.max_bytes


def _fill(directory: str, max_bytes: int, seed: int, start: Any, out: Any) -> None:
    cache = DiskCache(directory, max_bytes)
    rng = np.random.default_rng(seed)
    payloads = [rng.bytes(int(n)) for n in rng.integers(100, 5000, 300)]
    start.wait(timeout=120)  # both processes write at the same time
    out.put(sum(cache.put(URL, f"w{seed}/{i}", None, p) for i, p in enumerate(payloads)))


def test_disk_cache_limit_holds_across_processes(tmp_path):
    """This process and a spawned one fill one directory at once; each alone would overfill it."""
    directory, limit = str(tmp_path / "shared"), 300_000
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(2), context.Queue()
    other = context.Process(target=_fill, args=(directory, limit, 1, start, out))
    other.start()
    try:
        _fill(directory, limit, 2, start, out)
        admitted = [out.get(timeout=120), out.get(timeout=120)]
    finally:
        other.join(timeout=30)
    assert all(n > 10 for n in admitted)  # both processes got entries in
    cache = DiskCache(directory, limit)
    assert _on_disk(cache) == cache.nbytes <= limit
    assert cache.nbytes > limit - 5000 - 16  # full: the rest was refused for lack of room
    assert sum(1 for _ in cache.directory.glob("*/*.bin")) == sum(admitted)
    (cache.directory / "usage").unlink()  # lost accounting is recounted from the files
    assert cache.nbytes == _on_disk(cache)


def _on_disk(cache: DiskCache) -> int:
    return sum(p.stat().st_size for p in Path(cache.directory).glob("*/*") if p.is_file())


# --- from_env -----------------------------------------------------------------------------


def test_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CACHE_DIR", raising=False)
    monkeypatch.delenv("CACHE_GB", raising=False)
    assert DiskCache.from_env() is None
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "env"))
    cache = DiskCache.from_env()
    assert cache is not None
    assert (cache.directory, cache.max_bytes) == (tmp_path / "env", 10 * 10**9)
    monkeypatch.setenv("CACHE_GB", "0.5")
    assert DiskCache.from_env().max_bytes == 5 * 10**8
    cache = DiskCache.from_env(tmp_path / "arg", gb=2)  # arguments win
    assert (cache.directory, cache.max_bytes) == (tmp_path / "arg", 2 * 10**9)
    monkeypatch.delenv("CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DiskCache.from_env().directory == tmp_path / "xdg" / "cellcubes"


@pytest.mark.parametrize("value", ["ten", "-3", "0", "nan", "inf"])
def test_from_env_rejects_sizes_that_are_not_positive_numbers(monkeypatch, tmp_path, value):
    monkeypatch.setenv("CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CACHE_GB", value)
    with pytest.raises(CacheConfigError, match=f"CACHE_GB='{value}' is not a size in GB"):
        DiskCache.from_env()


def test_unwritable_directory_is_named(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(SchemaError, match=f"directory {blocker / 'cache'} cannot be written"):
        DiskCache.from_env()
    with pytest.raises(ValueError, match="Point CACHE_DIR"):
        DiskCache(blocker, 100)
