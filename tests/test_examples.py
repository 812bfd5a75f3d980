"""``examples/train_climate.py``: stopped, run again, resumed exactly; checkpoints local and on S3.

The run that resumes is a new process, as users run it; the other runs call
the script's ``main`` here (a process costs ~7 s, most of it imports).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import subprocess
import sys
from types import ModuleType
from unittest import mock

import pytest

from ingest.cli import main as ingest
from loaders import Checkpoints
from tests.conftest import ROOT, Bucket

SCRIPT = ROOT / "examples" / "train_climate.py"
# Windows starting on 1..6 January, 4 patches each: 6 batches of 4 per epoch. Validate on
# August; a checkpoint every 2 steps. Stopped at step 4 and resumed, a run crosses an epoch.
TRAIN = ["--every", "2", "--batch-size", "4", "--window", "8x16"]
TRAIN += ["--time-range", "2000-01-01", "2000-01-06"]
OPTIONS = [*TRAIN, "--val-range", "2000-08-01", "2000-08-31"]
DONE = re.compile(r"^done: step (\d+), loss (\S+), weights ([0-9a-f]{16})$", re.M)


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A year of daily 16x32 climate fields, ingested into a local cube."""
    root = tmp_path_factory.mktemp("climate")
    src, dest = str(root / "src"), str(root / "cube.zarr")
    assert ingest(["synth-climate", src, "--years", "1", "--grid", "16x32"]) == 0
    assert ingest(["netcdf", src, dest, "--no-progress"]) == 0
    return dest


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The example as a module, to call its functions here."""
    spec = importlib.util.spec_from_file_location("train_climate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def train(cube: str, *args: str) -> str:
    """``python examples/train_climate.py CUBE ARGS`` on this checkout's packages: its stdout."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), cube, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"train_climate.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc.stdout


def train_here(script: ModuleType, cube: str, *args: str) -> str:
    """The script's ``main`` with these arguments, in this process, no workers: its output."""
    out = io.StringIO()
    argv = [str(SCRIPT), cube, "--workers", "0", *args]
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out):
        script.main()
    return out.getvalue()


def done(output: str) -> tuple[int, float, str]:
    """The last line's step, loss and weight checksum."""
    match = DONE.search(output)
    assert match, output
    return int(match.group(1)), float(match.group(2)), match.group(3)


@pytest.fixture(scope="module")
def runs(cube: str, script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """To step 4; then, in another process and with 2 workers, to step 8; and 8 in one go."""
    root = tmp_path_factory.mktemp("runs")
    resumed, fresh = str(root / "resumed"), str(root / "fresh")
    return {
        "cube": cube,
        "resumed": resumed,
        "first": train_here(script, cube, *OPTIONS, "--checkpoints", resumed, "--steps", "4"),
        "second": train(cube, *OPTIONS, "--checkpoints", resumed, "--steps", "8", "--workers", "2"),
        "fresh": train_here(script, cube, *OPTIONS, "--checkpoints", fresh, "--steps", "8"),
    }


@pytest.mark.slow
def test_rerun_continues_from_the_latest_checkpoint(runs: dict) -> None:
    assert "starting afresh" in runs["first"]
    assert done(runs["first"])[0] == 4
    assert "resumed from step 4 " in runs["second"]
    assert "next batch: epoch 0, batch 4" in runs["second"]
    assert "trained steps 5..8" in runs["second"]
    assert done(runs["second"])[0] == 8
    assert Checkpoints(runs["resumed"]).steps() == [4, 6, 8]  # keep_last=3


@pytest.mark.slow
def test_log_has_every_step_once_and_validation_at_checkpoints(runs: dict) -> None:
    log = Checkpoints(runs["resumed"]).read_log()
    assert [line["step"] for line in log] == list(range(1, 9))
    assert [line["epoch"] for line in log] == [0] * 6 + [1] * 2
    assert all(math.isfinite(line["loss"]) for line in log)
    validated = [line for line in log if "val_loss" in line]
    assert [line["step"] for line in validated] == [2, 4, 6, 8]
    assert all(0 < line["val_rmse_K"] < 50 for line in validated)


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(runs: dict) -> None:
    assert done(runs["second"]) == done(runs["fresh"])
    assert done(runs["first"]) != done(runs["fresh"])


@pytest.mark.slow
def test_run_to_a_step_already_reached_trains_nothing(runs: dict, script: ModuleType) -> None:
    again = train_here(script, *_resumed_args(runs, "--steps", "8"))
    assert "the checkpoints are at step 8 (--steps 8)" in again
    assert done(again) == done(runs["second"])


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused(runs: dict, script: ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"made with lr=0.003; this run has lr=0.1\. Give another"):
        train_here(script, *_resumed_args(runs, "--steps", "9", "--lr", "0.1"))
    with pytest.raises(SystemExit, match=r"batch_size=4; this loader has .*batch_size=5"):
        train_here(script, *_resumed_args(runs, "--steps", "9", "--batch-size", "5"))
    assert Checkpoints(runs["resumed"]).steps() == [4, 6, 8]


def _resumed_args(runs: dict, *args: str) -> list[str]:
    return [runs["cube"], *OPTIONS, "--checkpoints", runs["resumed"], *args]


def test_checkpoints_go_beside_a_local_cube(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for cube in ("/data/era.zarr", "/data/era.zarr/", "file:///data/era.zarr", "/data/era"):
        monkeypatch.setattr(sys, "argv", ["train_climate.py", cube])
        assert script.parse_args().checkpoints == "/data/era-runs/train_climate"
    monkeypatch.setattr(sys, "argv", ["train_climate.py", "s3://bkt/era.zarr"])
    with pytest.raises(SystemExit):
        script.parse_args()
    assert "s3://bkt/era.zarr is not local: give --checkpoints" in capsys.readouterr().err


@pytest.mark.s3
@pytest.mark.slow
def test_checkpoints_on_s3(
    cube: str, script: ModuleType, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from --endpoint-url only
    url = f"{bucket.url}/runs/climate"
    args = (*TRAIN, "--checkpoints", url, "--endpoint-url", bucket.endpoint)
    train_here(script, cube, *args, "--steps", "2")
    again = train_here(script, cube, *args, "--steps", "3")
    assert "resumed from step 2 " in again
    assert Checkpoints(url, endpoint_url=bucket.endpoint).steps() == [2, 3]
    log = Checkpoints(url, endpoint_url=bucket.endpoint).read_log()
    assert [line["step"] for line in log] == [1, 2, 3]
