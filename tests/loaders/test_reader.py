"""CubeReader: values against zarr's ``oindex``, request counts on the wire, caches, backends."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

from cubes.errors import SchemaError, SourceNotFoundError
from cubes.store import zarr_store
from loaders.cache import DiskCache, MemoryCache
from loaders.reader import BACKEND_ENV, CubeReader, ReadStats
from tests.faultproxy import FaultProxy

BACKENDS = ["obstore", "fsspec"]
EMPTY = 2**64 - 1


def _zarr_array(url: str, options: dict | None = None, variable: str = "images") -> zarr.Array:
    store = zarr_store(url, options or {}, read_only=True)
    return zarr.open_array(store, path=variable, mode="r")


@pytest.fixture(scope="module")
def s3_cube(moto_server, local_cube):
    """``local_cube`` (an ingested plate: 3 wells x 2 fields x 8 channels of 64 px) on moto,
    with the shard of well 2, field 1 removed."""
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="reader")
    options = {"endpoint_url": moto_server}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.put(str(local_cube), "reader/plate.zarr", recursive=True)
    fs.rm("reader/plate.zarr/images/c/2/1/0/0/0")
    return "s3://reader/plate.zarr", options


def _layouts(root: str) -> dict[str, zarr.Array]:
    """Arrays written with zarr, not ingest: other grids, codecs, missing shards and chunks."""
    g = zarr.open_group(root, mode="w", zarr_format=3)
    shape = (2, 3, 5, 37, 45)
    blosc = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
    arrays = {
        "tiled": g.create_array(  # y/x tiles, partial edge shards and chunks
            "tiled", shape=shape, chunks=(1, 1, 1, 16, 16), shards=(1, 1, 5, 32, 32),
            dtype="uint16", compressors=[blosc], fill_value=7,
        ),
        "unsharded": g.create_array(
            "unsharded", shape=shape, chunks=(1, 1, 2, 16, 20), dtype="uint16",
            compressors=[GzipCodec(level=1)], fill_value=3,
        ),
        "zstd_crc_float": g.create_array(
            "zstd_crc_float", shape=shape, chunks=(1, 1, 5, 20, 45), shards=(1, 1, 5, 40, 45),
            dtype="float32", compressors=[ZstdCodec(level=1), Crc32cCodec()],
            fill_value=float("nan"),
        ),
        "big_endian": g.create_array(
            "big_endian", shape=shape, chunks=(1, 1, 1, 37, 45), shards=(1, 3, 5, 37, 45),
            dtype="int16", serializer=BytesCodec(endian="big"), compressors=None, fill_value=-1,
        ),
        "index_at_start": zarr.create(
            shape=shape, chunks=(1, 1, 5, 37, 45), dtype="uint16", zarr_format=3,
            store=g.store, path="index_at_start", fill_value=0,
            codecs=[ShardingCodec(
                chunk_shape=(1, 1, 1, 37, 15), codecs=[BytesCodec(), ZstdCodec()],
                index_location="start",
            )],
        ),
        "transposed": g.create_array(  # not decoded here: read through zarr
            "transposed", shape=shape, chunks=(1, 1, 5, 37, 45), dtype="uint16",
            filters=[TransposeCodec(order=(0, 1, 2, 4, 3))], fill_value=0,
        ),
    }  # fmt: skip
    rng = np.random.default_rng(0)
    for array in arrays.values():
        values = rng.integers(0, 4000, shape).astype(array.dtype)
        values[0, 1, 2] = array.fill_value  # an empty inner chunk (or a fill-only chunk)
        array[:, :2] = values[:, :2]  # field 2 never written: missing objects
        array[0, 2, 1:3] = values[0, 2, 1:3]  # a field with only some channels written
    return arrays


@pytest.fixture(scope="module")
def local_arrays(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("layouts") / "arrays.zarr")
    return root, _layouts(root)


WINDOWS = [
    (0, 0, [0, 1, 2, 3, 4, 5, 6, 7], slice(None), slice(None)),  # whole field
    (1, 1, [6, 0, 6, 3], slice(None), slice(None)),  # odd order, repeats
    (2, 0, [7], slice(50, 64), slice(0, 9)),  # bottom-left edge
    (0, 1, [2, 1], slice(0, 1), slice(63, 64)),  # one pixel at the right edge
    (2, 1, [0, 5, 7], slice(None), slice(None)),  # the missing field: fill value
    (1, 0, [4, 3, 2], slice(-13, None), slice(10, 30)),  # negative bounds
]


@pytest.mark.s3
@pytest.mark.parametrize("backend", BACKENDS)
def test_s3_cube_reads_match_zarr(s3_cube, backend):
    url, options = s3_cube
    truth = _zarr_array(url, options)
    reader = CubeReader(url, options, backend=backend)
    assert reader.backend == backend
    assert (reader.shape, reader.dtype, reader.fill_value) == (
        truth.shape,
        truth.dtype,
        truth.fill_value,
    )
    for well, field, channels, ys, xs in WINDOWS:
        got = reader.read(well, field, np.array(channels), ys, xs)
        expected = truth.oindex[well, field, channels, ys, xs]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    missing = reader.read(2, 1, np.arange(8), slice(None), slice(None))
    assert (missing == truth.fill_value).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_cube_reads_match_zarr(local_cube, backend):
    truth = _zarr_array(str(local_cube))
    reader = CubeReader(f"file://{local_cube}", backend=backend)
    for well, field, channels, ys, xs in WINDOWS:
        np.testing.assert_array_equal(
            reader.read(well, field, np.array(channels), ys, xs),
            truth.oindex[well, field, channels, ys, xs],
        )


LAYOUT_WINDOWS = [
    (0, 0, [0, 1, 2, 3, 4], slice(None), slice(None)),
    (0, 1, [2, 2, 0], slice(None), slice(None)),  # the empty inner chunk, twice
    (1, 0, [4, 1], slice(30, 37), slice(31, 45)),  # across tile edges to the corner
    (1, 2, [0, 1, 2, 3, 4], slice(None), slice(None)),  # a missing shard
    (0, 2, [3, 1, 0], slice(5, 33), slice(15, 16)),  # partly written field
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name",
    ["tiled", "unsharded", "zstd_crc_float", "big_endian", "index_at_start", "transposed"],
)
def test_other_layouts_match_zarr(local_arrays, name, backend, caplog):
    root, arrays = local_arrays
    with caplog.at_level(logging.DEBUG, logger="loaders.reader"):
        reader = CubeReader(root, variable=name, backend=backend)
    through_zarr = "through zarr" in caplog.text
    assert through_zarr == (name == "transposed"), caplog.text
    for well, field, channels, ys, xs in LAYOUT_WINDOWS:
        got = reader.read(well, field, np.array(channels), ys, xs)
        expected = arrays[name].oindex[well, field, channels, ys, xs]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_layouts_exercise_empty_index_entries_and_missing_shards(local_arrays):
    """The cases above are real: an empty inner chunk in a shard index, an absent shard."""
    root, _ = local_arrays
    shard = Path(f"{root}/tiled/c/0/1/0/0/0").read_bytes()
    index = np.frombuffer(shard[-(16 * 5 * 2 * 2 + 4) : -4], "<u8").reshape(5, 2, 2, 2)
    assert (index[2] == EMPTY).all() and (index[0] != EMPTY).all()
    assert not Path(f"{root}/tiled/c/1/2/0/0/0").exists()
    assert Path(f"{root}/tiled/c/1/1/0/0/0").exists()


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_windows_match_zarr(local_arrays, data):
    root, arrays = local_arrays
    name = data.draw(st.sampled_from(["tiled", "unsharded", "index_at_start"]))
    reader = _cached_reader(root, name)
    shape = arrays[name].shape
    well = data.draw(st.integers(0, shape[0] - 1))
    field = data.draw(st.integers(0, shape[1] - 1))
    channels = data.draw(st.lists(st.integers(0, shape[2] - 1), min_size=1, max_size=8))
    y0 = data.draw(st.integers(0, shape[3] - 1))
    y1 = data.draw(st.integers(y0 + 1, shape[3]))
    x0 = data.draw(st.integers(0, shape[4] - 1))
    x1 = data.draw(st.integers(x0 + 1, shape[4]))
    got = reader.read(well, field, np.array(channels), slice(y0, y1), slice(x0, x1))
    expected = arrays[name].oindex[well, field, channels, y0:y1, x0:x1]
    np.testing.assert_array_equal(got, expected)


_READERS: dict[tuple[str, str], CubeReader] = {}


def _cached_reader(root: str, name: str) -> CubeReader:
    """One reader per array across hypothesis examples, with a memory cache, as in training."""
    if (root, name) not in _READERS:
        _READERS[root, name] = CubeReader(root, variable=name, memory_cache=MemoryCache(2**20))
    return _READERS[root, name]


def test_read_orthogonal_on_any_array(tmp_path):
    """Arrays in several dims at once, other ranks, ints that drop dims."""
    a = zarr.create_array(
        str(tmp_path / "g.zarr"), name="v", shape=(9, 10, 11), chunks=(2, 3, 4), dtype="int32"
    )
    a[:] = np.arange(a.size, dtype="int32").reshape(a.shape)
    reader = CubeReader(str(tmp_path / "g.zarr"), variable="v")
    for sel in [
        ([8, 0, 3, 3], slice(2, 9), [10, 1, 4]),
        (4, [9, 0], slice(None)),
        (slice(1, 8, 3), 7, -1),
    ]:
        np.testing.assert_array_equal(reader.read_orthogonal(sel), a.oindex[sel])
    assert reader.read_orthogonal(([], slice(None), [2])).shape == (0, 10, 1)  # zarr refuses []
    with pytest.raises(SchemaError, match="read_orthogonal"):
        reader.read(0, 0, np.array([0]), slice(None), slice(None))
    with pytest.raises(IndexError, match="out of bounds for dim 2"):
        reader.read_orthogonal((0, 0, [11]))


def test_zarr_v2_arrays_are_read_through_zarr(tmp_path, caplog):
    group = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    a = group.create_array("v", shape=(3, 7), chunks=(2, 3), dtype="int16", fill_value=-5)
    a[:2] = np.arange(14, dtype="int16").reshape(2, 7)
    with caplog.at_level(logging.DEBUG, logger="loaders.reader"):
        reader = CubeReader(str(tmp_path / "v2.zarr"), variable="v")
    assert "not a Zarr v3 array" in caplog.text
    assert (reader.shape, reader.dtype, reader.fill_value) == ((3, 7), np.int16, -5)
    sel = ([2, 0, 2], slice(1, 6))
    np.testing.assert_array_equal(reader.read_orthogonal(sel), a.oindex[sel])


# --- requests on the wire -----------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_are_counted_as_sent(s3_cube, moto_server, backend):
    """Each count is checked against the HTTP requests that a proxy in front of moto forwarded.

    ``requests`` counts HTTP requests: one per GET, one per coalesced byte range.
    """
    url, options = s3_cube
    truth = _zarr_array(url, options)  # straight to moto, not through the proxy
    with FaultProxy(moto_server, rate=0.0) as proxy:
        reader = CubeReader(url, {"endpoint_url": proxy.url}, backend=backend)

        def sent(well: int, field: int, channels: list[int]) -> float:
            before = proxy.forwarded
            reader.stats.reset()
            values = reader.read(well, field, np.array(channels), slice(None), slice(None))
            np.testing.assert_array_equal(values, truth.oindex[well, field, channels])
            requests = reader.stats.snapshot()["requests"]
            assert requests == proxy.forwarded - before
            return requests

        assert sent(0, 0, list(range(8))) == 1  # a whole field: one GET of the shard
        assert reader.stats.snapshot()["bytes"] == _object_size(url, options, "c/0/0/0/0/0")
        assert sent(0, 1, [3, 4]) == 2  # shard index + one ranged GET of two adjacent chunks
        assert sent(0, 1, [6, 0]) == 1  # the index is known now: one coalesced range
        reader.coalesce_bytes = 0
        assert sent(1, 0, [1, 5]) == 3  # index + two ranges, not merged
        assert sent(1, 0, [2, 3]) == 1  # adjacent chunks are still one range
        assert sent(1, 0, [0, 1, 2, 3, 4, 5, 6]) == 1  # most of the shard: one GET, whole
        assert sent(2, 1, [0, 1]) == 1  # missing shard: its index request answers 404
        assert sent(2, 1, list(range(8))) == 0  # ... which is remembered
        assert sent(2, 0, list(range(8))) == 1


def _object_size(url: str, options: dict, key: str) -> int:
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    return int(fs.size(f"{url.removeprefix('s3://')}/images/{key}"))


# --- caches -------------------------------------------------------------------------------


def test_memory_cache_serves_repeated_reads(local_cube):
    truth = _zarr_array(str(local_cube))
    reader = CubeReader(str(local_cube), memory_cache=MemoryCache(10 * 2**20))  # per chunk
    first = reader.read(0, 0, np.array([1, 2]), slice(0, 30), slice(None))
    assert reader.stats.reset()["memory_misses"] == 2
    again = reader.read(0, 0, np.array([2, 1, 2]), slice(10, 64), slice(5, 9))
    stats = reader.stats.snapshot()
    assert (stats["memory_hits"], stats["memory_misses"], stats["requests"]) == (2, 0, 0)
    np.testing.assert_array_equal(first, truth.oindex[0, 0, [1, 2], 0:30])
    np.testing.assert_array_equal(again, truth.oindex[0, 0, [2, 1, 2], 10:64, 5:9])


@pytest.mark.s3
@pytest.mark.parametrize("backend", BACKENDS)
def test_disk_cache_serves_other_readers_and_survives_damage(s3_cube, tmp_path, backend):
    url, options = s3_cube
    truth = _zarr_array(url, options)
    cache = DiskCache(tmp_path / "cache", 10 * 2**20)
    first = CubeReader(url, options, backend=backend, disk_cache=cache)
    first.read(0, 0, np.arange(8), slice(None), slice(None))  # whole shard
    first.read(1, 1, np.array([4, 5]), slice(None), slice(None))  # index + two chunks
    assert first.stats.snapshot()["disk_misses"] == 1 + 1 + 2  # shard; index + 2 chunks

    second = CubeReader(url, options, backend=backend, disk_cache=cache)  # another process
    for well, field, channels in [(0, 0, [7, 1]), (1, 1, [5, 4]), (0, 0, np.arange(8))]:
        got = second.read(well, field, np.array(channels), slice(None), slice(None))
        np.testing.assert_array_equal(got, truth.oindex[well, field, channels])
    stats = second.stats.snapshot()
    assert (stats["requests"], stats["disk_misses"]) == (0, 0)
    # subset from the whole shard; index + 2 chunks; the whole shard again
    assert stats["disk_hits"] == 1 + 3 + 1

    path = cache.path(url, "images/c/0/0/0/0/0")
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    third = CubeReader(url, options, backend=backend, disk_cache=cache)
    got = third.read(0, 0, np.arange(8), slice(None), slice(None))
    np.testing.assert_array_equal(got, truth.oindex[0, 0])
    stats = third.stats.snapshot()
    assert (stats["disk_hits"], stats["disk_misses"], stats["requests"]) == (0, 1, 1)
    assert cache.get(url, "images/c/0/0/0/0/0") is not None  # written again, whole


def test_disk_cache_does_not_thrash_when_the_dataset_is_twice_its_size(tmp_path):
    """Two shuffled epochs over 40 fields with room for 20: the second hits about half."""
    root = str(tmp_path / "big.zarr")
    g = zarr.open_group(root, mode="w", zarr_format=3)
    a = g.create_array(
        "images", shape=(40, 1, 2, 32, 32), chunks=(1, 1, 1, 32, 32), shards=(1, 1, 2, 32, 32),
        dtype="uint16", compressors=None,
    )  # fmt: skip
    a[:] = np.random.default_rng(1).integers(0, 2**16, a.shape, dtype="uint16")
    shard_file = 16 + 2 * 2 * 32 * 32 + 2 * 16 + 4  # cache header + chunks + index
    cache = DiskCache(tmp_path / "cache", 20 * shard_file)
    reader = CubeReader(root, disk_cache=cache)
    rng = np.random.default_rng(7)
    for _ in range(2):
        reader.stats.reset()
        for well in rng.permutation(40):
            reader.read(int(well), 0, np.arange(2), slice(None), slice(None))
    stats = reader.stats.snapshot()
    hit_rate = stats["disk_hits"] / (stats["disk_hits"] + stats["disk_misses"])
    assert 0.35 <= hit_rate <= 0.65, stats
    assert cache.nbytes <= cache.max_bytes


# --- backends, processes, errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "env", "expected"),
    [
        ("s3://b/p.zarr", {"endpoint_url": "http://127.0.0.1:1"}, None, "obstore"),
        ("s3://b/p.zarr", {"anon": True, "client_kwargs": {"region_name": "eu-west-1"}}, None,
         "obstore"),
        ("s3://b/p.zarr", {"key": "AKIA", "secret": "s3cr3t-value"}, "fsspec", "fsspec"),
        ("s3://b/p.zarr", {"config_kwargs": {"s3": {"addressing_style": "virtual"}}}, None,
         "fsspec"),
        ("memory://p.zarr", {}, "obstore", "fsspec"),
    ],
)  # fmt: skip
def test_auto_backend(monkeypatch, caplog, url, options, env, expected):
    from loaders.storage import choose_backend

    if env:
        monkeypatch.setenv(BACKEND_ENV, env)
    else:
        monkeypatch.delenv(BACKEND_ENV, raising=False)
    with caplog.at_level(logging.DEBUG, logger="loaders.storage"):
        assert choose_backend(url, options, "auto") == expected
        assert choose_backend(url, options, "fsspec") == "fsspec"
    assert "s3cr3t" not in caplog.text


def test_storage_options_map_to_obstore():
    from loaders.storage import _obstore_store

    options = {
        "endpoint_url": "http://127.0.0.1:9000/",
        "key": "AKIA",
        "secret": "s3cr3t",
        "token": "t0ken",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"connect_timeout": 3, "read_timeout": 30, "retries": {"max_attempts": 4}},
    }
    store = _obstore_store("s3://bkt/plates/p1.zarr", options)
    assert store.prefix == "plates/p1.zarr"
    assert store.config == {
        "bucket": "bkt",
        "endpoint": "http://127.0.0.1:9000",
        "region": "eu-west-1",
        "access_key_id": "AKIA",
        "secret_access_key": "s3cr3t",
        "session_token": "t0ken",
    }
    assert store.client_options["allow_http"] in (True, "true")
    assert store.retry_config["max_retries"] == 3
    anonymous = _obstore_store("s3://bkt", {"anon": True})
    assert anonymous.config["skip_signature"] in (True, "true")
    assert "access_key_id" not in anonymous.config and anonymous.prefix is None


def test_backend_errors(monkeypatch, tmp_path):
    from loaders.storage import choose_backend

    with pytest.raises(SchemaError, match="config_kwargs.signature_version"):
        choose_backend("s3://b/p", {"config_kwargs": {"signature_version": "v2"}}, "obstore")
    with pytest.raises(SchemaError, match="backend='fast'"):
        choose_backend("s3://b/p", {}, "fast")
    monkeypatch.setenv(BACKEND_ENV, "rust")
    with pytest.raises(SchemaError, match=f"{BACKEND_ENV}='rust'.*unset it"):
        choose_backend("s3://b/p", {}, "auto")
    with pytest.raises(SourceNotFoundError, match="No array 'images'.*python -m ingest"):
        CubeReader(str(tmp_path / "nothing.zarr"), backend="fsspec")


@pytest.mark.s3
def test_obstore_errors_name_the_object(s3_cube):
    from cubes.errors import StorageError

    url, _ = s3_cube
    with pytest.raises(StorageError, match="reader/plate.zarr/images/zarr.json"):
        CubeReader(url, {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {
            "connect_timeout": 1, "retries": {"max_attempts": 1}}}, backend="obstore")  # fmt: skip


def _forked_child(root: str, out: multiprocessing.Queue) -> None:
    reader = CubeReader(root, variable="tiled")
    out.put((reader.backend, reader.read(0, 0, np.arange(5), slice(None), slice(None)).sum()))
    try:
        CubeReader(root, variable="tiled", backend="obstore")
    except SchemaError as exc:
        out.put(str(exc))


def test_reader_created_after_fork_avoids_the_parents_obstore_runtime(local_arrays):
    """tokio does not survive fork: a child of a process that used obstore reads with fsspec."""
    root, arrays = local_arrays
    parent = CubeReader(root, variable="tiled", backend="obstore")
    parent.read(0, 0, np.arange(5), slice(None), slice(None))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_forked_child, args=(root, results))
    child.start()
    try:
        backend, total = results.get(timeout=30)
        message = results.get(timeout=30)
    except queue.Empty:
        pytest.fail("the forked child hung or failed")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert backend == "fsspec"
    assert total == arrays["tiled"][0, 0].sum()
    assert "forkserver or spawn" in message


def test_read_stats():
    stats = ReadStats()
    stats.add(bytes=10, requests=1)
    stats.add(bytes=5)
    assert stats.reset()["bytes"] == 15
    assert stats.snapshot()["bytes"] == 0 and set(stats.snapshot()) >= {"disk_hits", "memory_hits"}
    stats.add(requests=3)
    assert pickle.loads(pickle.dumps(stats)).snapshot()["requests"] == 0
