"""How batches are allocated and travel: recycled arrays, workers' stored pixels in reused
shared memory, mapped local files, opening without dask, and the epoch progress bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cubes import open_cube
from cubes.errors import SchemaError
from loaders import CubeBatchDataset
from loaders._buffers import BufferPool, as_tensor, shared_empty
from loaders._transport import STORED_KEY, StoredBatches
from loaders.storage import map_file

SHAPE = (512, 1024)  # 2 MB of float32: pooled


def _batches(loader, epochs):
    """Every batch of ``epochs`` epochs, kept (so none of their arrays is recycled)."""
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out += [(epoch, b) for b in loader]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["stored", "float32"])
def test_two_worker_processes_deliver_the_batches_of_zero_workers(local_cube, transport):
    data = CubeBatchDataset(
        str(local_cube), input_dims={"y": 32, "x": 32}, batch_size=2, normalize=True,
        fill_nan=0.0, shuffle=True, seed=3,
    )  # fmt: skip
    expected = _batches(data.loader(), 2)
    # prefetch=1: a ring of 1 * 2 + 2 slots per worker, reused within each epoch's 6 batches
    with data.loader(num_workers=2, prefetch=1, worker_transport=transport) as loader:
        served = loader.dataloader.dataset
        assert isinstance(served, StoredBatches) == (transport == "stored")
        got = _batches(loader, 2)
    assert len(got) == len(expected) == 2 * len(data)
    for (e1, mine), (e2, theirs) in zip(got, expected, strict=True):
        assert e1 == e2
        assert STORED_KEY not in mine
        assert mine["inputs"].dtype == torch.float32
        assert torch.equal(mine["sample"], theirs["sample"])
        assert torch.equal(mine["inputs"], theirs["inputs"])
        assert mine["well"] == theirs["well"]
    assert abs(float(torch.cat([b["inputs"] for _, b in got]).mean())) < 0.5  # normalised


def test_workers_read_plate_pixels_as_stored_uint16_in_shared_memory(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=3, normalize=True)
    served = StoredBatches(data, slots=2)
    first, second, third = (served[(0, i % 2)] for i in range(3))
    assert first[STORED_KEY] and first["inputs"].dtype == torch.uint16
    assert first["inputs"].is_shared()
    # slots are reused in turn: the third batch is written where the first was
    assert third["inputs"].data_ptr() == first["inputs"].data_ptr()
    assert second["inputs"].data_ptr() != first["inputs"].data_ptr()
    raw = data.read_item((0, 0), stored=lambda shape, dtype: np.empty(shape, np.uint16))
    truth = open_cube(str(local_cube)).images.values
    well, field = raw["well"][0], int(raw["field"][0])
    ds = open_cube(str(local_cube))
    w, f = list(ds.well.values).index(well), list(ds.field.values).index(field)
    assert np.array_equal(raw["inputs"][0].numpy(), truth[w, f])


def test_a_bad_worker_transport_is_refused(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=2)
    with pytest.raises(SchemaError, match="worker_transport='uint8'.*'stored'"):
        data.loader(num_workers=1, worker_transport="uint8")


def test_a_pool_never_hands_out_an_array_that_is_still_held():
    pool = BufferPool(keep=4)
    a = pool.empty(SHAPE, np.float32)
    pointers = {a.ctypes.data}
    tensor = torch.from_numpy(a)
    del a
    b = pool.empty(SHAPE, np.float32)  # `a` is held by the tensor
    assert not np.shares_memory(b, tensor.numpy())
    pointers.add(b.ctypes.data)
    row = tensor[0]  # a view keeps it too
    del tensor, b
    c = pool.empty(SHAPE, np.float32)
    assert c.ctypes.data != row.data_ptr()
    assert c.ctypes.data in pointers  # `b` was free: recycled
    del row, c
    d = pool.empty(SHAPE, np.float32)
    assert d.ctypes.data in pointers
    assert pool.empty((4,), np.float32).shape == (4,)  # small: not pooled


def test_held_batches_keep_their_values_while_later_ones_are_read(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=1)
    held = [b["inputs"] for b in data.loader()]
    assert len({t.data_ptr() for t in held}) == len(held)  # none was recycled under them
    again = [b["inputs"].clone() for b in data.loader()]  # the arrays are recycled now
    for mine, theirs in zip(held, again, strict=True):
        assert torch.equal(mine, theirs)


def test_shared_arrays_become_their_tensor_without_a_copy():
    array = shared_empty((3, 5), np.uint16)
    array[:] = 7
    tensor = as_tensor(array)
    assert tensor.is_shared() and tensor.dtype == torch.uint16
    assert tensor.data_ptr() == array.ctypes.data
    plain = np.ones((2, 2), np.float32)
    assert as_tensor(plain).data_ptr() == plain.ctypes.data


def test_mapped_local_files_give_ranges_suffixes_and_none(tmp_path):
    path = tmp_path / "object"
    path.write_bytes(bytes(range(100)))
    assert bytes(map_file(str(path), None)) == bytes(range(100))
    assert bytes(map_file(str(path), (10, 20))) == bytes(range(10, 20))
    assert bytes(map_file(str(path), (-5, None))) == bytes(range(95, 100))
    assert map_file(str(tmp_path / "missing"), None) is None
    (tmp_path / "empty").write_bytes(b"")
    assert bytes(map_file(str(tmp_path / "empty"), None)) == b""


def test_open_cube_without_dask_reads_the_same(local_cube):
    lazy, plain = open_cube(str(local_cube)), open_cube(str(local_cube), dask=False)
    assert lazy.images.chunks is not None and plain.images.chunks is None
    assert np.array_equal(plain.present.values, lazy.present.values)
    assert np.array_equal(plain.images[1, 0].values, lazy.images[1, 0].values)


def test_a_progress_bar_is_drawn_only_when_asked(local_cube, capsys):
    data = CubeBatchDataset(str(local_cube), batch_size=2)
    list(data.loader())
    assert capsys.readouterr().err == ""
    list(data.loader(progress=True))
    err = capsys.readouterr().err
    assert f"epoch 0: [{'#' * 24}] {len(data)}/{len(data)} batches" in err
    assert err.endswith("\n") and "MB/s read" in err
