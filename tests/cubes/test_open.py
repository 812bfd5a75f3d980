"""open_cube: lazy, complete-or-warned, clear when there is no cube."""

from __future__ import annotations

import numpy as np
import pytest
from dask.callbacks import Callback

import cubes
from ingest.output import CubeOutput
from ingest.sources import cellpainting


class _Keys(Callback):
    """Records the keys of every dask graph computed while active."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def _start(self, dsk) -> None:
        self.keys += [str(k) for k in dsk]


def test_open_reads_no_pixels(local_cube):
    with _Keys() as recorder:
        ds = cubes.open_cube(str(local_cube))
    assert not [k for k in recorder.keys if "images" in k]
    assert ds.images.chunks is not None  # dask-backed
    assert ds.images.data.chunksize == (1, 1, 8, 64, 64)  # one dask chunk per shard
    with _Keys() as recorder:
        ds.images.isel(well=0, field=0).values  # noqa: B018 - computing is the point
    assert [k for k in recorder.keys if "images" in k], "the recorder sees pixel reads"


def test_coords_and_attributes(local_cube, local_plate):
    ds = cubes.open_cube(str(local_cube))
    assert ds.attrs["cube_kind"] == "cellpainting-plate"
    assert ds.attrs["cube_convention_version"] == "1"
    assert ds.attrs["provenance"]["src"] == str(local_plate)
    assert ds.attrs["provenance"]["n_images"] == 3 * 2 * 8
    assert "T" in ds.attrs["provenance"]["created"]
    assert ds.encoding["source"] == str(local_cube)
    assert ds.y.attrs["units"] == "µm"  # from the plate's Index.idx.xml
    assert ds.x.values[1] == pytest.approx(0.598)
    assert isinstance(ds.present.data, np.ndarray)  # small variables are in memory
    stats = ds.channel_mean.values
    assert np.all(np.isfinite(stats)) and np.all(ds.channel_std.values > 0)


def test_incomplete_cube_warns_or_refuses(local_plate, tmp_path):
    dest = str(tmp_path / "partial.zarr")
    options = cellpainting.CellPaintingOptions(pixel_size=0.598)
    (plan,) = cellpainting.plan(str(local_plate), dest, options)
    CubeOutput().create(plan, {})  # schema only, as after an interrupted job
    with pytest.warns(cubes.IncompleteCubeWarning, match=f"The cube at {dest} is incomplete"):
        ds = cubes.open_cube(dest)
    assert ds.y.attrs["units"] == "µm"
    assert ds.y.values[1] == pytest.approx(0.598)
    with pytest.raises(cubes.IncompleteCubeError, match="Re-run the ingest"):
        cubes.open_cube(dest, require_complete=True)


def test_no_cube_there(tmp_path):
    with pytest.raises(cubes.SourceNotFoundError, match=f"No cube at {tmp_path}/nothing"):
        cubes.open_cube(str(tmp_path / "nothing"))


@pytest.mark.s3
def test_open_on_s3_with_endpoint(bucket, local_cube):
    bucket.fs().put(str(local_cube), f"{bucket.name}/plate.zarr", recursive=True)
    ds = cubes.open_cube(f"{bucket.url}/plate.zarr", endpoint_url=bucket.endpoint)
    local = cubes.open_cube(str(local_cube))
    np.testing.assert_array_equal(ds.images.values, local.images.values)
    with pytest.raises(cubes.SourceNotFoundError, match="Bucket 'nope-missing' does not exist"):
        cubes.open_cube("s3://nope-missing/plate.zarr", endpoint_url=bucket.endpoint)
