"""S3 faults: transient errors are retried; the job completes and equals a clean run."""

from __future__ import annotations

import os

import numpy as np
import pytest

import cubes
from tests.conftest import run_cli
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_ingest_through_faults_equals_a_clean_run(bucket):
    src = f"{bucket.url}/raw"
    run_cli("synth-plate", src, "--wells", "3", "--fields", "2", "--size", "48")
    run_cli("cellpainting", src, f"{bucket.url}/clean.zarr", "--no-progress")
    env = dict(os.environ, AWS_REQUEST_CHECKSUM_CALCULATION="when_required")
    with FaultProxy(bucket.endpoint, rate=0.15, seed=7) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.url
        run_cli("cellpainting", src, f"{bucket.url}/faulty.zarr", "--no-progress", env=env)
    assert sum(proxy.injected.values()) >= 10, proxy.injected
    assert set(proxy.injected) == {"503", "500", "reset", "delay"}
    options = bucket.storage_options
    clean = cubes.open_cube(f"{bucket.url}/clean.zarr", storage_options=options).load()
    faulty = cubes.open_cube(
        f"{bucket.url}/faulty.zarr", storage_options=options, require_complete=True
    ).load()
    for name in ("images", "thumbnail", "present", "channel_mean", "channel_p99"):
        np.testing.assert_array_equal(faulty[name].values, clean[name].values, err_msg=name)


def test_permanent_errors_fail_fast(bucket, tmp_path):
    import time

    start = time.perf_counter()
    proc = run_cli("cellpainting", "s3://no-such-bucket-xyz/raw", str(tmp_path / "c.zarr"),
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and "Bucket 'no-such-bucket-xyz' does not exist" in proc.stderr
    assert time.perf_counter() - start < 30  # no retry storm (generous: shared machine)
