"""Array jobs: slices in separate processes, then ``finalize``; missing slices are named."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cubes
from cubes.errors import SchemaError
from ingest.journal import journal_url
from ingest.plan import ShardTask
from ingest.slices import TaskSlice, slice_tasks
from tests.conftest import ROOT, run_cli

VARIABLES = ("images", "thumbnail", "present", "channel_mean", "channel_std", "channel_p99")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate

    root = tmp_path_factory.mktemp("array-plate")
    write_synth_plate(str(root / "src"), wells=parse_wells("5"), fields=3, size=48, seed=9)
    run_cli("cellpainting", str(root / "src"), str(root / "clean.zarr"), "--no-progress")
    return root / "src", cubes.open_cube(str(root / "clean.zarr")).load()


@pytest.mark.slow
def test_slices_in_separate_processes_then_finalize(plate, tmp_path):
    src, clean = plate
    dest = tmp_path / "cube.zarr"
    args = [sys.executable, "-m", "ingest", "cellpainting", str(src), str(dest), "--no-progress"]
    procs = [  # slices 0 and 2 at the same time; slice 1 later
        subprocess.Popen([*args, "--task-index", str(i), "--task-count", "3"], cwd=ROOT)
        for i in (0, 2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    missing = run_cli("finalize", str(dest), check=False)
    assert missing.returncode == 2
    assert "Not all 3 slices have finished: slice 1:" in missing.stderr
    with pytest.raises(cubes.IncompleteCubeError):
        cubes.open_cube(str(dest), require_complete=True)

    # slice 1 as AWS Batch would run it: the index and size from the environment
    env = _env(AWS_BATCH_JOB_ARRAY_INDEX="1", AWS_BATCH_JOB_ARRAY_SIZE="3")
    proc = run_cli("cellpainting", str(src), str(dest), "--no-progress", env=env)
    assert "Slice 1 of 3" in proc.stdout and "finalize" in proc.stdout
    proc = run_cli("finalize", str(dest))
    assert "75/120 images" not in proc.stdout and "120/120 images" in proc.stdout

    ds = cubes.open_cube(str(dest), require_complete=True).load()
    for name in VARIABLES:
        np.testing.assert_array_equal(ds[name].values, clean[name].values, err_msg=name)
    assert not (tmp_path / journal_url("cube.zarr")).exists()
    assert not list(tmp_path.glob("*.lock"))
    again = run_cli("finalize", str(dest))
    assert "is complete: nothing to finalize" in again.stdout
    # a slice run again after the end writes nothing
    proc = run_cli("cellpainting", str(src), str(dest), "--no-progress", env=env)
    assert "up to date" in proc.stdout


@pytest.mark.s3
@pytest.mark.slow
def test_a_batch_in_two_kubernetes_slices_on_s3(bucket):
    import pandas as pd

    batch = f"{bucket.url}/Batch1/images"
    for plate, seed in (("BR00000001", "1"), ("BR00000002", "2")):
        run_cli("synth-plate", batch, "--plate", plate, "--wells", "3", "--fields", "2",
                "--size", "16", "--seed", seed)  # fmt: skip
    dest = f"{bucket.url}/cubes"
    for index in ("0", "1"):  # Kubernetes gives the index; the count is an argument
        env = _env(JOB_COMPLETION_INDEX=index)
        run_cli("cellpainting", batch, dest, "--task-count", "2", "--no-progress", env=env)
    proc = run_cli("finalize", dest)
    assert "2 cube(s)" in proc.stdout and "Index of the cubes" in proc.stdout
    index = pd.read_csv(io.BytesIO(bucket.fs().cat_file(f"{bucket.name}/cubes/plates.csv")))
    assert index["plate"].tolist() == ["BR00000001", "BR00000002"]
    assert index["images"].tolist() == [48, 48]
    for url in index["url"]:
        ds = cubes.open_cube(url, require_complete=True, storage_options=bucket.storage_options)
        assert bool(ds.present.all())


def test_a_slice_with_another_count_is_refused(plate, tmp_path):
    src, _ = plate
    dest = str(tmp_path / "cube.zarr")
    run_cli("cellpainting", str(src), dest, "--task-index", "0", "--task-count", "2")
    proc = run_cli("cellpainting", str(src), dest, "--task-index", "1", "--task-count", "3",
                   check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "array job of 2 slices" in proc.stderr and "same --task-count" in proc.stderr


@pytest.mark.parametrize(
    ("index", "count", "environ", "message"),
    [
        (None, None, {"JOB_COMPLETION_INDEX": "3"}, "pass --task-count"),
        (None, 4, {}, "pass --task-index"),
        (4, 4, {}, "0 <= I < N"),
        (None, None, {"AWS_BATCH_JOB_ARRAY_INDEX": "x", "AWS_BATCH_JOB_ARRAY_SIZE": "2"}, "not an"),
    ],
)
def test_bad_slice_arguments(index, count, environ, message):
    with pytest.raises(SchemaError, match=message):
        TaskSlice.resolve(index, count, environ)


def test_slice_from_arguments_and_environment():
    assert TaskSlice.resolve(None, None, {}) is None
    aws = {"AWS_BATCH_JOB_ARRAY_INDEX": "2", "AWS_BATCH_JOB_ARRAY_SIZE": "5"}
    assert TaskSlice.resolve(None, None, aws) == TaskSlice(2, 5)
    assert TaskSlice.resolve(1, 3, aws) == TaskSlice(1, 3)  # arguments win
    assert TaskSlice.resolve(None, 4, {"JOB_COMPLETION_INDEX": "3"}) == TaskSlice(3, 4)


@settings(max_examples=60, deadline=None)
@given(
    fields=st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=12), min_size=1, max_size=3),
    count=st.integers(1, 10),
)
def test_slices_are_disjoint_complete_whole_wells_and_balanced(fields, count):
    plans = [
        SimpleNamespace(
            tasks=[ShardTask((w, f), ()) for w, n in enumerate(ns) for f in range(n)],
            group=lambda index: index[:1],  # wells, as IngestPlan.group with group_depth=1
        )
        for ns in fields
    ]
    cut = slice_tasks(plans, count)  # type: ignore[arg-type]
    assert cut == slice_tasks(plans, count)  # deterministic
    for plan, per_plan in zip(plans, cut, strict=True):
        got = [i for indexes in per_plan.values() for i in indexes]
        assert sorted(got) == sorted(t.index for t in plan.tasks)  # disjoint and complete
        owner = {i[0]: k for k, indexes in per_plan.items() for i in indexes}
        assert all(owner[i[0]] == k for k, indexes in per_plan.items() for i in indexes)
    sizes = [sum(len(p.get(k, [])) for p in cut) for k in range(count)]
    total, biggest = sum(sizes), max(max(w) for w in fields)
    assert max(sizes) <= total / count + biggest  # within one well of an even share
