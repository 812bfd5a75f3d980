"""Round trip through the moto S3 server: synth-plate -> python -m ingest -> open_cube."""

from __future__ import annotations

import numpy as np
import pytest

import cubes
from ingest.sources.cellpainting import SOURCE4_CHANNELS
from tests.conftest import run_cli
from tests.helpers import source_images

pytestmark = pytest.mark.s3


def test_round_trip_is_pixel_exact(bucket):
    src, dest = f"{bucket.url}/raw", f"{bucket.url}/cubes/plate.zarr"
    run_cli("synth-plate", src, "--wells", "A01,A02,C07", "--fields", "3", "--size", "96")
    fs = bucket.fs()
    images_dir = next(p for p in fs.find(f"{bucket.name}/raw") if p.endswith(".tiff")).rsplit(
        "/", 1
    )[0]
    missing = f"{images_dir}/r01c02f03p01-ch4sk1fk1fl1.tiff"  # A02, field 3, ER
    fs.rm(missing)

    proc = run_cli("cellpainting", src, dest, "--no-progress")
    assert "Wrote s3://" in proc.stdout

    ds = cubes.open_cube(dest, storage_options=bucket.storage_options, require_complete=True)
    assert ds.images.dims == ("well", "field", "channel", "y", "x")
    assert ds.images.dtype == np.uint16
    assert [str(w) for w in ds.well.values] == ["A01", "A02", "C07"]
    assert [str(r) for r in ds.row.values] == ["A", "A", "C"]
    assert ds.column.values.tolist() == [1, 2, 7]
    assert ds.field.values.tolist() == [1, 2, 3]
    assert [str(c) for c in ds.channel.values] == list(SOURCE4_CHANNELS.values())
    assert ds.channel_number.values.tolist() == list(SOURCE4_CHANNELS)

    truth = source_images(fs, f"{bucket.name}/raw")
    assert len(truth) == 3 * 3 * 8 - 1
    values = ds.images.values  # every pixel of the cube, once
    for w, well in enumerate(ds.well.values):
        for f, field in enumerate(ds.field.values):
            for c, channel in enumerate(ds.channel.values):
                key = (str(well), int(field), str(channel))
                assert bool(ds.present.values[w, f, c]) == (key in truth)
                if key in truth:
                    np.testing.assert_array_equal(values[w, f, c], truth[key], err_msg=str(key))
                else:
                    assert not values[w, f, c].any()  # the fill value, flagged by `present`
    assert not ds.present.sel(well="A02", field=3, channel="ER")
    assert ds.attrs["cube_complete"] is True
    assert ds.attrs["provenance"]["n_missing"] == 1
    assert ds.attrs["provenance"]["src"] == src
    assert ds.attrs["plate"] == "SYNTH0001"


def test_storage_layout_is_one_object_per_field(bucket):
    src, dest = f"{bucket.url}/raw", f"{bucket.url}/plate.zarr"
    run_cli("synth-plate", src, "--wells", "2", "--fields", "2", "--size", "32")
    run_cli("cellpainting", src, dest, "--no-progress")
    chunks = [p for p in bucket.fs().find(f"{bucket.name}/plate.zarr/images") if "/c/" in p]
    assert len(chunks) == 2 * 2  # one shard object per (well, field), all 8 channels inside
    assert bucket.fs().exists(f"{bucket.name}/plate.zarr/zarr.json")
