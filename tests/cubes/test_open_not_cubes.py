"""open_cube on what is not a cube says what it is and what to call; open_batch opens a batch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import cubes
from tests.cubes.conftest import P1_WELLS, P2_WELLS, _ingest


def test_ome_ngff_export(cube_prefix: Path, tmp_path: Path) -> None:
    (plate,) = (cube_prefix.parent / "plates").glob("P2__*")
    dest = tmp_path / "P2.ome.zarr"
    _ingest("cellpainting", str(plate), str(dest), "--ome")
    with pytest.raises(cubes.SchemaError) as info:
        cubes.open_cube(str(dest))
    message = str(info.value)
    assert message.startswith(f"{dest} is an OME-NGFF plate (such as 'python -m ingest ")
    assert "ome-zarr-py, napari, vizarr" in message
    assert f"'python -m ingest cellpainting {plate} DEST' (without --ome)" in message


def test_plain_zarr_group_and_an_array(cube_prefix: Path, tmp_path: Path) -> None:
    store = tmp_path / "plain.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3).create_array("a", data=np.arange(4))
    with pytest.raises(cubes.SchemaError, match=r"plain.zarr is a Zarr group but not a cube: .*"
                       r"Open it with xarray.open_zarr\("):  # fmt: skip
        cubes.open_cube(str(store))
    with pytest.raises(cubes.SchemaError, match=r"images is a Zarr array \(3x2x8x32x32 uint16\)"):
        cubes.open_cube(str(cube_prefix / "P1.zarr" / "images"))
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    with pytest.raises(cubes.SourceNotFoundError, match="v2.zarr: it is a Zarr v2 store"):
        cubes.open_cube(str(tmp_path / "v2.zarr"))


def test_batch_prefix_names_the_plates_and_open_batch(cube_prefix: Path) -> None:
    with pytest.raises(cubes.SourceNotFoundError) as info:
        cubes.open_cube(str(cube_prefix))
    assert str(info.value) == (
        f"No cube at {cube_prefix}: it is a batch prefix: its plates.csv lists 2 plate(s) "
        f"(P1, P2), not a cube. Open them all with cubes.open_batch('{cube_prefix}') (a dict "
        f"plate -> Dataset), or one with cubes.open_cube('{cube_prefix}/P1.zarr'); list them "
        f"with 'python -m cubes ls {cube_prefix}'."
    )
    plates = cubes.open_batch(str(cube_prefix))
    assert list(plates) == ["P1", "P2"]  # the batch's plates, not the climate cube beside them
    assert list(plates["P1"].well.values) == list(P1_WELLS)
    assert list(plates["P2"].well.values) == list(P2_WELLS)
    assert plates["P1"].images.chunks is not None  # lazy
    with pytest.raises(cubes.SchemaError, match="is a cube, not a batch of cubes"):
        cubes.open_batch(str(cube_prefix / "P1.zarr"))


def test_empty_and_missing_paths_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(cubes.SourceNotFoundError, match=f"No cube at {path}: nothing is there"):
            cubes.open_cube(str(path))
    (tmp_path / "tiffs").mkdir()
    (tmp_path / "tiffs" / "a.tiff").write_bytes(b"II*\x00")
    with pytest.raises(cubes.SourceNotFoundError, match=r"holds 1 file\(s\) .* 'python -m ingest"):
        cubes.open_cube(str(tmp_path / "tiffs"))
    with pytest.raises(cubes.SourceNotFoundError, match="No cubes under .*nothing is there"):
        cubes.open_batch(str(tmp_path / "empty"))


@pytest.mark.s3
def test_on_s3_a_batch_prefix_and_a_wrong_endpoint(s3_cubes) -> None:
    prefix = f"{s3_cubes.url}/all"
    with pytest.raises(cubes.SourceNotFoundError, match=r"batch prefix: .* \(P1, P2\)"):
        cubes.open_cube(prefix, endpoint_url=s3_cubes.endpoint)
    plates = cubes.open_batch(prefix, endpoint_url=s3_cubes.endpoint)
    assert {k: v.sizes["well"] for k, v in plates.items()} == {"P1": 3, "P2": 1}
    start = time.perf_counter()
    with pytest.raises(cubes.StorageError) as info:
        cubes.open_cube("s3://b/x.zarr", endpoint_url="http://127.0.0.1:9")
    assert time.perf_counter() - start < 15  # it took 36-47 s, with 8 attempts per request
    assert str(info.value).startswith(
        "Cannot reach the S3 endpoint http://127.0.0.1:9 for s3://b/x.zarr (EndpointConnection"
    )
