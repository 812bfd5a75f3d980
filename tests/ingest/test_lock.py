"""One writer per destination: a live lock refuses a second job; an expired one is taken over."""

from __future__ import annotations

import json
import time

import pytest

import cubes
from ingest.lock import WriterLock, lock_url
from tests.conftest import run_cli


def test_a_second_writer_is_refused_locally(local_plate, tmp_path):
    dest = str(tmp_path / "c.zarr")
    with WriterLock(dest, {}):  # another job, alive
        proc = run_cli("cellpainting", str(local_plate), dest, "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{dest} is being written by another ingest" in proc.stderr
    assert "Wait for it to finish" in proc.stderr
    assert not (tmp_path / "c.zarr").exists()  # refused before writing anything
    run_cli("cellpainting", str(local_plate), dest, "--no-progress")  # released: fine now
    assert not (tmp_path / "c.lock").exists()


def test_an_expired_lock_is_taken_over(local_plate, tmp_path):
    dest = str(tmp_path / "c.zarr")
    stale = {"owner": "dead", "host": "h", "pid": 1, "heartbeat": time.time() - 600}
    (tmp_path / "c.lock").write_text(json.dumps({**stale, "lease_seconds": 120}))
    proc = run_cli("cellpainting", str(local_plate), dest, "--no-progress")
    assert "Taking over the expired lock" in proc.stderr
    assert cubes.open_cube(dest, require_complete=True).attrs["cube_complete"] is True
    assert not (tmp_path / "c.lock").exists()


def test_the_lock_of_a_killed_process_on_this_host_is_taken_over(local_plate, tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    holder = {"owner": "killed", "host": socket.gethostname(), "pid": int(dead.stdout)}
    holder.update(heartbeat=time.time(), lease_seconds=120)  # fresh, but its process is gone
    (tmp_path / "c.lock").write_text(json.dumps(holder))
    dest = str(tmp_path / "c.zarr")
    proc = run_cli("cellpainting", str(local_plate), dest, "--no-progress")
    assert "Taking over the expired lock" in proc.stderr


@pytest.mark.s3
def test_a_second_writer_is_refused_on_s3(bucket, local_plate):
    dest = f"{bucket.url}/c.zarr"
    with WriterLock(dest, bucket.storage_options):  # S3 conditional create
        assert bucket.fs().exists(lock_url(dest).removeprefix("s3://"))
        with pytest.raises(cubes.CubeError, match="is being written by another ingest"):
            WriterLock(dest, bucket.storage_options).acquire()
        proc = run_cli("cellpainting", str(local_plate), dest, "--no-progress", check=False)
        assert proc.returncode == 2 and "is being written by another ingest" in proc.stderr
    assert not bucket.fs().exists(lock_url(dest).removeprefix("s3://"))
