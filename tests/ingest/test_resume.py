"""Resume: kill -9 at seeded points, re-run the same command, get what a clean run gets."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import numpy as np
import pytest

import cubes
from ingest.journal import journal_url
from tests.conftest import ROOT, run_cli

VARIABLES = ("images", "thumbnail", "present", "channel_mean", "channel_std", "channel_p99")


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate

    root = tmp_path_factory.mktemp("resume-plate")
    write_synth_plate(str(root), wells=parse_wells("4"), fields=4, size=256, seed=5)
    clean = root.parent / "clean.zarr"
    run_cli("cellpainting", str(root), str(clean), "--no-progress")
    return root, cubes.open_cube(str(clean)).load()


def _kill_after(proc: subprocess.Popen, dest, done: int, timeout: float = 60) -> None:
    """SIGKILL ``proc`` once the cube exists and ``done`` tasks have their journal marker."""
    markers = dest.parent / journal_url(dest.name) / "done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (dest / "zarr.json").exists() and (
            done == 0 or (markers.exists() and len(list(markers.iterdir())) >= done)
        ):
            break
        time.sleep(0.005)
    proc.kill()  # no cleanup of any kind
    proc.wait()


@pytest.mark.slow
def test_kill_9_then_rerun_equals_a_clean_run(plate, tmp_path):
    src, clean = plate
    rng = random.Random(1234)
    points = [0, *sorted(rng.sample(range(1, 16), 3))]  # tasks done when killed (of 16)
    resumed = 0
    for point in points:
        dest = tmp_path / f"cube{point}.zarr"
        args = ["cellpainting", str(src), str(dest), "--threads", "1", "--no-progress"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _kill_after(proc, dest, point)
        again = run_cli(*args)  # the same command again
        resumed += "resuming an interrupted ingest" in again.stderr
        ds = cubes.open_cube(str(dest), require_complete=True).load()
        for name in VARIABLES:
            np.testing.assert_array_equal(ds[name].values, clean[name].values, err_msg=name)
        assert not (tmp_path / journal_url(dest.name)).exists()
    assert resumed >= 3, "the kills should interrupt the runs"


def test_incomplete_cube_of_other_images_is_not_resumed(plate, local_plate, tmp_path):

    from ingest.output import CubeOutput
    from ingest.sources import cellpainting

    dest = str(tmp_path / "c.zarr")
    (other,) = cellpainting.plan(str(local_plate), dest, cellpainting.CellPaintingOptions())
    CubeOutput().create(other, {})  # as if a run on another plate was interrupted
    proc = run_cli("cellpainting", str(plate[0]), dest, check=False)
    assert proc.returncode == 2
    assert (
        "holds an incomplete cube of other inputs" in proc.stderr and "--overwrite" in proc.stderr
    )
