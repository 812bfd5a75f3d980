"""Whole shards written in one request (:mod:`ingest.shards`), read back by zarr as written."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from cubes.store import zarr_store
from ingest.shards import write_region


def _array(store: Any, shape: tuple[int, ...], shards: tuple[int, ...]) -> zarr.Array:
    return zarr.create_array(
        store, shape=shape, chunks=(1, 1, 4, 4), shards=shards, dtype="uint16",
        fill_value=7, zarr_format=3,
    )  # fmt: skip


@pytest.mark.parametrize(
    "selection",
    [
        (slice(0, 1), slice(0, 2)),  # one whole shard
        (1, slice(0, 2)),  # an integer index, as a plate's gather writes a well
        (slice(0, 2),),  # several shards at once
        (slice(2, 3), slice(2, 3)),  # shards cut by the array's edge (padded with fill)
        Ellipsis,
        (slice(0, 1), slice(1, 2)),  # part of a shard: zarr's own path
    ],
)
def test_region_reads_back_as_zarr_writes_it(tmp_path: Path, selection: Any) -> None:
    shape = (3, 3, 6, 9)
    ours = _array(zarr.storage.LocalStore(tmp_path / "ours"), shape, (1, 2, 8, 8))
    theirs = _array(zarr.storage.LocalStore(tmp_path / "theirs"), shape, (1, 2, 8, 8))
    region = np.zeros(shape, dtype=bool)
    region[selection] = True
    values = np.arange(int(region.sum()), dtype=np.uint16).reshape(np.zeros(shape)[selection].shape)
    write_region(ours, selection, values)
    theirs[selection] = values
    np.testing.assert_array_equal(ours[...], theirs[...])
    np.testing.assert_array_equal(ours[...][region], values.ravel())
    assert (ours[...][~region] == 7).all()


def test_a_whole_shard_on_s3_is_one_put_and_nothing_else(bucket: Any, monkeypatch: Any) -> None:
    import s3fs

    url = f"{bucket.url}/cube.zarr"
    array = _array(
        zarr_store(url, bucket.storage_options, read_only=False), (2, 2, 8, 8), (1, 2, 8, 8)
    )
    calls: collections.Counter[str] = collections.Counter()
    original = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        calls[getattr(method, "__name__", str(method))] += 1
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    block = np.full((1, 2, 8, 8), 3, dtype=np.uint16)
    write_region(array, (slice(1, 2),), block)
    assert calls == {"put_object": 1}
    calls.clear()
    array[0:1] = block  # zarr's partial-shard path, for comparison: it reads first
    assert calls["put_object"] == 1 and sum(calls.values()) > 1
    reopened = zarr.open_array(zarr_store(url, bucket.storage_options, read_only=True))
    np.testing.assert_array_equal(reopened[...], np.full((2, 2, 8, 8), 3))
