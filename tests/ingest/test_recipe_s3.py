"""``python -m ingest recipe`` on the moto S3 server: cube and results on S3, as in production.

The array-job slices run the commands of ``examples/aws-batch`` and
``examples/kubernetes`` as separate processes; a job killed with SIGKILL is run
again and must compute only the units it had not finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml

from ingest.cli import main
from tests.conftest import ROOT, Bucket, run_cli
from tests.ingest.recipe_texts import LIGHT, light_table, plain_loop, write_recipe

pytestmark = pytest.mark.s3

UNITS = {f"{w}-{f}" for w in ("A01", "A02", "B05") for f in (1, 2)}


@pytest.fixture(scope="module")
def s3_cube(moto_server: str, local_cube: Path) -> str:
    """``local_cube`` (3 wells x 2 fields) copied into a bucket of its own."""
    import s3fs

    name = "recipe-source"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    fs.put(str(local_cube), f"{name}/plate.zarr", recursive=True)
    return f"s3://{name}/plate.zarr"


def _read(bucket: Bucket, dest: str) -> pd.DataFrame:
    """The merged table, read in one call (a fresh s3fs: files were rewritten meanwhile)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return pd.read_parquet(dest, storage_options=bucket.storage_options)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIPE_", "AWS_BATCH"))}
    return {**env, **extra}


def test_the_merged_table_equals_a_plain_loop_over_the_cubes_fields(bucket, s3_cube, tmp_path):
    recipe = write_recipe(tmp_path, LIGHT)
    dest = f"{bucket.url}/profiles"
    assert main(["recipe", s3_cube, dest, "--recipe", str(recipe), "--no-progress"]) == 0
    got = _read(bucket, dest)
    expected = plain_loop(s3_cube, light_table, bucket.storage_options)
    pd.testing.assert_frame_equal(got, expected)
    report = json.loads(bucket.fs().cat_file(f"{bucket.name}/profiles/_recipe/report.json"))
    assert report["done"] == 6 and report["rows"] == len(expected) and report["failed"] == []


def _batch_command(cube: str, dest: str, recipe: str, count: int) -> list[str]:
    """The AWS Batch array job's command, its Ref:: parameters filled in as Batch does."""
    job = json.loads((ROOT / "examples/aws-batch/recipe-job.json").read_text())
    params = {"cube": cube, "dest": dest, "recipe": recipe, "count": str(count)}
    return [
        params[a[5:]] if a.startswith("Ref::") else a for a in job["containerProperties"]["command"]
    ]


def _kubernetes_command(cube: str, dest: str, recipe: str, count: int) -> list[str]:
    """The Indexed Job's command with this test's cube, DEST, recipe and count."""
    job = yaml.safe_load((ROOT / "examples/kubernetes/recipe-job.yaml").read_text())
    command = list(job["spec"]["template"]["spec"]["containers"][0]["command"])
    command[4:6] = [cube, dest]
    command[command.index("--recipe") + 1] = recipe
    command[command.index("--task-count") + 1] = str(count)
    return command


def _finalize_command(dest: str) -> list[str]:
    job = json.loads((ROOT / "examples/aws-batch/finalize-job.json").read_text())
    return [dest if a == "Ref::dest" else a for a in job["containerProperties"]["command"]]


def _start(command: list[str], **env: str) -> subprocess.Popen:
    assert command[:3] == ["python", "-m", "ingest"]
    return subprocess.Popen(
        [sys.executable, *command[1:]], cwd=ROOT, env=_env(**env), stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_array_slices_in_separate_processes_then_finalize_equal_one_run(bucket, s3_cube, tmp_path):
    recipe = str(write_recipe(tmp_path, LIGHT))
    dest = f"{bucket.url}/sliced"
    slices = [
        _start(_batch_command(s3_cube, dest, recipe, 3), AWS_BATCH_JOB_ARRAY_INDEX="0"),
        _start(_kubernetes_command(s3_cube, dest, recipe, 3), JOB_COMPLETION_INDEX="2"),
    ]
    for proc in slices:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    early = run_cli(*_finalize_command(dest)[3:], check=False)
    assert early.returncode == 2
    assert "2 of 6 units are not done yet" in early.stderr and "slice(s) 1 of 3" in early.stderr
    last = _start(_batch_command(s3_cube, dest, recipe, 3), AWS_BATCH_JOB_ARRAY_INDEX="1")
    assert last.wait(timeout=120) == 0
    run_cli(*_finalize_command(dest)[3:])

    # One run's table equals the plain loop (the first test): so does the sliced one.
    expected = plain_loop(s3_cube, light_table, bucket.storage_options)
    pd.testing.assert_frame_equal(_read(bucket, dest), expected)
    files = bucket.fs().glob(f"{bucket.name}/sliced/*.parquet")
    assert len(files) == 3  # one per slice, read back in one call


@pytest.mark.slow
def test_killed_with_sigkill_the_same_command_computes_only_the_missing_units(
    bucket, s3_cube, tmp_path
):
    recipe = str(write_recipe(tmp_path, LIGHT))
    dest = f"{bucket.url}/killed"
    calls = tmp_path / "calls.txt"
    command = [
        "python",
        "-m",
        "ingest",
        "recipe",
        s3_cube,
        dest,
        "--recipe",
        recipe,
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = _start(command, RECIPE_CALLS=str(calls), RECIPE_SLEEP="0.6")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_lines(calls)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    fs = bucket.fs()
    done = {Path(p).name.split(".")[0] for p in fs.glob(f"{bucket.name}/killed/_recipe/done/*")}
    assert 1 <= len(done) < 6
    assert not fs.exists(f"{bucket.name}/killed/_recipe/report.json")
    assert fs.glob(f"{bucket.name}/killed/*.parquet") == []  # nothing looks complete
    first = len(_lines(calls))

    proc = _start(command, RECIPE_CALLS=str(calls))
    assert proc.wait(timeout=120) == 0
    again = _lines(calls)[first:]
    names = {u: f"{w_i}-{f_i}" for u, (w_i, f_i) in _positions().items()}
    assert sorted(again) == sorted(u for u in UNITS if names[u] not in done)
    pd.testing.assert_frame_equal(
        _read(bucket, dest), plain_loop(s3_cube, light_table, bucket.storage_options)
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _positions() -> dict[str, tuple[int, int]]:
    """Unit label -> its (well, field) position in the cube: the marker's name."""
    return {
        f"{w}-{f}": (i, j)
        for i, w in enumerate(("A01", "A02", "B05"))
        for j, f in enumerate((1, 2))
    }


def test_a_failing_unit_is_recorded_with_skip_then_retried_and_a_changed_recipe_is_refused(
    bucket, s3_cube, tmp_path, monkeypatch, capsys
):
    recipe = write_recipe(tmp_path, LIGHT)
    dest = f"{bucket.url}/failing"
    fail, calls = tmp_path / "fail.txt", tmp_path / "calls.txt"
    fail.write_text("A02-2\n")
    monkeypatch.setenv("RECIPE_FAIL", str(fail))
    monkeypatch.setenv("RECIPE_CALLS", str(calls))
    args = ["recipe", s3_cube, dest, "--recipe", str(recipe), "--no-progress"]

    assert main(args) == 2  # --on-error fail (default): the unit is named
    err = capsys.readouterr().err
    assert "on unit well=A02, field=2 raised RuntimeError: no nuclei found in A02-2" in err
    assert "--on-error skip" in err

    assert main([*args, "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "1 unit(s) failed" in out and "well=A02, field=2: RuntimeError: no nuclei" in out
    report = json.loads(bucket.fs().cat_file(f"{bucket.name}/failing/_recipe/report.json"))
    assert [f["coords"] for f in report["failed"]] == [{"well": "A02", "field": 2}]
    assert report["failed"][0]["error"] == "RuntimeError: no nuclei found in A02-2"
    table = _read(bucket, dest)
    assert {f"{w}-{f}" for w, f in zip(table.well, table.field, strict=True)} == UNITS - {"A02-2"}

    fail.write_text("")  # the cause is gone (a transient error): the same command retries it
    calls.write_text("")
    assert main(args) == 0
    assert _lines(calls) == ["A02-2"]
    pd.testing.assert_frame_equal(
        _read(bucket, dest), plain_loop(s3_cube, light_table, bucket.storage_options)
    )
    assert not bucket.fs().exists(f"{bucket.name}/failing/_recipe/failed/1-1.json")

    recipe.write_text(LIGHT.replace('"max": images.max', '"peak": images.max'))
    calls.write_text("")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the recipe" in err and "has changed" in err and "--overwrite" in err
    assert _lines(calls) == []
    assert main([*args, "--overwrite"]) == 0  # every unit again, with the new recipe
    assert sorted(_lines(calls)) == sorted(UNITS)
    assert "peak" in _read(bucket, dest).columns
