"""Scale-out: a real dask LocalCluster with worker processes writes the same cube as threads."""

from __future__ import annotations

import numpy as np
import pytest

import cubes
from tests.conftest import run_cli

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_local_cluster_writes_the_same_cube_as_threads(bucket):
    src = f"{bucket.url}/raw"
    run_cli("synth-plate", src, "--wells", "3", "--fields", "3", "--size", "48")
    run_cli("cellpainting", src, f"{bucket.url}/threads.zarr", "--no-progress")
    proc = run_cli("cellpainting", src, f"{bucket.url}/cluster.zarr", "--workers", "2",
                   "--threads", "2", "--no-progress")  # fmt: skip
    assert "INFO" not in proc.stderr  # distributed's logging follows --log-level
    options = bucket.storage_options
    threads = cubes.open_cube(f"{bucket.url}/threads.zarr", storage_options=options).load()
    cluster = cubes.open_cube(f"{bucket.url}/cluster.zarr", storage_options=options).load()
    for name in ("images", "thumbnail", "present", "channel_mean", "channel_std", "channel_p99"):
        np.testing.assert_array_equal(cluster[name].values, threads[name].values, err_msg=name)
    assert cluster.attrs["cube_complete"] is True


def test_scheduler_address(bucket, tmp_path):
    from distributed import LocalCluster

    src = f"{bucket.url}/raw"
    run_cli("synth-plate", src, "--wells", "2", "--fields", "1", "--size", "32")
    with LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster:
        run_cli("cellpainting", src, str(tmp_path / "c.zarr"), "--scheduler",
                cluster.scheduler_address, "--no-progress")  # fmt: skip
        assert cluster.scheduler.total_occupancy >= 0  # the cluster outlived the job
    ds = cubes.open_cube(str(tmp_path / "c.zarr"), require_complete=True)
    assert bool(ds.present.all())
