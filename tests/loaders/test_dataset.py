"""CubeBatchDataset: values, sampling, workers over S3, and clear errors."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

import cubes
from cubes.errors import SchemaError
from loaders import CubeBatchDataset
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def s3_cube(moto_server, tmp_path_factory):
    """A plate cube on the moto server with one field missing entirely (C07 field 2)."""
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="loaders")
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    from ingest.synth import parse_wells, write_synth_plate

    plate = write_synth_plate(
        "s3://loaders/raw",
        wells=parse_wells("A01,B02,C07"),
        fields=3,
        size=48,
        seed=3,
        storage_options={"endpoint_url": moto_server},
    )
    images = plate.images_url.removeprefix("s3://")
    for ch in range(1, 9):
        fs.rm(f"{images}/r03c07f02p01-ch{ch}sk1fk1fl1.tiff")
    url = "s3://loaders/plate.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server)
        run_cli("cellpainting", "s3://loaders/raw", url, "--no-progress")
    options = {"endpoint_url": moto_server}
    return url, options, cubes.open_cube(url, storage_options=options).load()


def _epoch(loader) -> list[tuple[str, int]]:
    seen = []
    for batch in loader:
        seen += list(zip(batch["well"], batch["field"].tolist(), strict=True))
    return seen


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_dataloader_with_two_workers_reads_every_field_once(s3_cube, context):
    url, options, cube = s3_cube
    data = CubeBatchDataset(url, storage_options=options, batch_size=3)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=multiprocessing.get_context(context),
    )
    seen_values = {}
    for batch in loader:
        assert batch["images"].dtype == torch.float32
        assert batch["images"].shape[1:] == (8, 48, 48)
        for i, (well, field_index) in enumerate(
            zip(batch["well"], batch["field"].tolist(), strict=True)
        ):
            key = (well, field_index)
            assert key not in seen_values, f"{key} twice in one epoch"
            seen_values[key] = batch["images"][i].numpy()
    expected = {
        (str(w), int(f))
        for w in cube.well.values
        for f in cube.field.values
        if bool(cube.present.sel(well=w, field=f).any())
    }
    assert set(seen_values) == expected
    assert len(seen_values) == 3 * 3 - 1  # the missing field is not a sample
    for (well, field), values in seen_values.items():
        truth = cube.images.sel(well=well, field=field).values.astype(np.float32)
        np.testing.assert_array_equal(values, truth)


@pytest.mark.s3
def test_loader_helper_uses_forkserver_workers(s3_cube):
    url, options, _ = s3_cube
    data = CubeBatchDataset(url, storage_options=options, batch_size=4)
    loader = data.loader(num_workers=2)
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    assert sorted(_epoch(loader)) == sorted(_epoch(loader))  # persistent workers, 2 epochs
    assert len(_epoch(loader)) == data.n_samples == 8


def test_patches_and_channel_subsets_match_the_cube(local_cube):
    cube = cubes.open_cube(str(local_cube))
    data = CubeBatchDataset(
        str(local_cube),
        input_dims={"y": 32, "x": 16},
        input_overlap={"x": 8},
        channels=["DNA", "Mito"],
        batch_size=5,
    )
    patches_per_field = 2 * 7  # y: 64/32; x: windows of 16 every 8 px in 64
    assert data.n_samples == cube.sizes["well"] * cube.sizes["field"] * patches_per_field
    assert len(data) == -(-data.n_samples // 5)
    seen = 0
    for b in range(len(data)):
        batch = data[b]
        assert batch["images"].shape[1:] == (2, 32, 16)
        for i in range(len(batch["well"])):
            y, x = int(batch["y"][i]), int(batch["x"][i])
            truth = cube.images.sel(
                well=batch["well"][i], field=int(batch["field"][i]), channel=["DNA", "Mito"]
            ).isel(y=slice(y, y + 32), x=slice(x, x + 16))
            np.testing.assert_array_equal(batch["images"][i].numpy(), truth.values)
            seen += 1
    assert seen == data.n_samples


def test_normalize_uses_the_cube_statistics(local_cube):
    cube = cubes.open_cube(str(local_cube))
    data = CubeBatchDataset(str(local_cube), channels=["ER"], normalize=True, batch_size=100)
    batch = data[0]["images"].numpy()
    raw = cube.images.sel(channel="ER").values.astype(np.float64)
    expected_first = (raw[0, 0] - cube.channel_mean.sel(channel="ER").item()) / (
        cube.channel_std.sel(channel="ER").item()
    )
    np.testing.assert_allclose(batch[0, 0], expected_first, rtol=1e-5, atol=1e-5)
    assert abs(batch.mean()) < 0.05 and abs(batch.std() - 1) < 0.05


def test_in_memory_dataset(local_cube):
    cube = cubes.open_cube(str(local_cube)).load()
    cube.encoding.clear()  # as if built in memory: read through xarray
    data = CubeBatchDataset(cube, batch_size=2, channels=["RNA"])
    batch = data[1]  # samples 2 and 3: the second well's two fields
    assert batch["well"] == [str(cube.well.values[1])] * 2
    truth = cube.images.sel(channel=["RNA"]).isel(well=1)
    np.testing.assert_array_equal(batch["images"].numpy(), truth.values)


def test_several_cubes_are_one_dataset(local_cube):
    data = CubeBatchDataset([str(local_cube), str(local_cube)], batch_size=4)
    one = CubeBatchDataset(str(local_cube), batch_size=4)
    assert data.n_samples == 2 * one.n_samples
    cubes_seen = torch.cat([data[i]["cube"] for i in range(len(data))])
    assert cubes_seen.tolist().count(1) == one.n_samples


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dims": {"z": 4}}, r"input_dims has \['z'\]"),
        ({"input_dims": {"y": 65}}, r"input_dims\['y'\] = 65, but the cube's 'y' has 64 pixels"),
        ({"channels": ["DAPI"]}, r"channels=\['DAPI'\]: unknown.*the cube has \['Mito'"),
        ({"channels": []}, r"unknown or empty selection"),
        ({"batch_size": 0}, r"batch_size must be at least 1"),
        ({"batch_size": 1000, "drop_last": True}, r"make no full batch of 1000"),
    ],
)
def test_bad_arguments_are_clear(local_cube, kwargs, message):
    with pytest.raises(SchemaError, match=message):
        CubeBatchDataset(str(local_cube), **kwargs)


def test_index_out_of_range(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=4)
    with pytest.raises(IndexError):
        data[len(data)]
