"""Round trip through the moto S3 server: synth-plate -> python -m ingest -> open_cube."""

from __future__ import annotations

import os

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
    fs = bucket.fs()
    chunks = [p for p in fs.find(f"{bucket.name}/plate.zarr/images") if "/c/" in p]
    assert len(chunks) == 2 * 2  # one shard object per (well, field), all 8 channels inside
    thumbs = [p for p in fs.find(f"{bucket.name}/plate.zarr/thumbnail") if "/c/" in p]
    assert len(thumbs) == 2  # one thumbnail shard per well
    assert bucket.fs().exists(f"{bucket.name}/plate.zarr/zarr.json")


def test_anon_reads_a_public_bucket_without_credentials(bucket, tmp_path):
    run_cli("synth-plate", f"{bucket.url}/raw", "--wells", "1", "--fields", "1", "--size", "16")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=bucket.endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
    )
    args = ["cellpainting", f"{bucket.url}/raw", str(tmp_path / "a.zarr"), "--no-progress"]
    signed = run_cli(*args, env=env, check=False)
    assert signed.returncode == 2
    assert f"No AWS credentials found to access {bucket.url}/raw" in signed.stderr
    assert "--anon" in signed.stderr
    denied = run_cli(*args, "--anon", env=env, check=False)  # private objects
    assert denied.returncode == 2
    assert "Anonymous access to s3://" in denied.stderr and "Drop --anon" in denied.stderr
    _make_public(bucket)
    run_cli(*args, "--anon", env=env)
    assert cubes.open_cube(str(tmp_path / "a.zarr")).present.all()


def _make_public(bucket) -> None:
    """Public-read ACLs on every object, as on a public dataset bucket."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=bucket.endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
        for obj in page.get("Contents", []):
            s3.put_object_acl(Bucket=bucket.name, Key=obj["Key"], ACL="public-read")
