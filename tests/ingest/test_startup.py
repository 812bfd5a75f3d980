"""The command line starts without the heavy libraries a run may not need (issue 13).

``python -m ingest --help`` took ~3 s, 1.7 s of it importing xarray, pandas,
dask, zarr, distributed and s3fs. These tests read ``python -X importtime``'s
list of imports in a subprocess: a check of what is imported, not of a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import HEAVY_MODULES, imported_packages


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("cellpainting", "--help"),
        ("synth-plate", "--help"),
        ("netcdf", "--help"),
        ("--version",),
    ],
)
def test_help_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    imported = imported_packages("-m", "ingest", *args)
    assert "ingest" in imported and "argparse" in imported
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))


def test_local_threaded_run_imports_neither_distributed_nor_s3fs(
    local_plate: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "plate.zarr"
    imported = imported_packages(
        "-m", "ingest", "cellpainting", str(local_plate), str(dest), "--no-progress"
    )
    assert {"xarray", "dask", "zarr"} <= imported  # it did run: the writer needs these
    assert (dest / "zarr.json").exists()
    assert "distributed" not in imported and "s3fs" not in imported


def test_summary_counts_the_whole_run_from_process_start(local_plate: Path, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli("cellpainting", str(local_plate), str(tmp_path / "p.zarr"), "--no-progress")
    line = proc.stdout.strip().splitlines()[-1]
    assert "start-up" in line and "planning" in line and "writing" in line, line
    wall = float(line.split(" in ", 1)[1].split(" s ", 1)[0])
    parts = [
        float(p.split(" s", 1)[0].rsplit(" ", 1)[1]) for p in line.split(": ", 1)[1].split(", ")
    ]
    assert len(parts) == 3 and parts[0] > 0  # the interpreter's start-up is never free
    assert sum(parts) == pytest.approx(wall, abs=0.15)  # rounding of each to 0.1 s
