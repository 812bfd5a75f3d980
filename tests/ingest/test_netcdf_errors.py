"""Bad NetCDF input through the command line: exit 2, the file named, the fix, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import xarray as xr

from ingest.cli import main
from ingest.sources.netcdf.synth import write_synth_climate


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("good")
    return [Path(u) for u in write_synth_climate(str(root), grid=(4, 8)).urls[:3]]


def _not_a_netcdf(src: Path, months: list[Path]) -> str:
    (src / "notes.nc").write_text("hello")
    return "notes.nc is not a NetCDF/HDF5 file"


def _truncated_hdf5(src: Path, months: list[Path]) -> str:
    (src / "cut.nc").write_bytes(months[0].read_bytes()[:2000])
    return "cut.nc cannot be read as a HDF5"


def _grid_mismatch(src: Path, months: list[Path]) -> str:
    other = write_synth_climate(str(src.parent / "other"), grid=(4, 9), years=(2001,))
    shutil.copy(other.urls[0], src / "model_2001-01.nc")
    return "model_2001-01.nc"


def _overlapping_time(src: Path, months: list[Path]) -> str:
    shutil.copy(months[1], src / "copy_of_feb.nc")
    return "copy_of_feb.nc"


def _missing_variable(src: Path, months: list[Path]) -> str:
    with xr.open_dataset(months[2], decode_cf=False) as ds:
        lacking = ds.drop_vars("cldfrac").load()
    (src / months[2].name).unlink()
    lacking.to_netcdf(src / months[2].name, unlimited_dims=["time"])
    return "'cldfrac' is missing from 1 file"


@pytest.mark.parametrize(
    "spoil",
    [_not_a_netcdf, _truncated_hdf5, _grid_mismatch, _overlapping_time, _missing_variable],
    ids=lambda f: f.__name__.strip("_"),
)
def test_bad_input_is_named(spoil, months, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for f in months:
        shutil.copy(f, src / f.name)
    expected = spoil(src, months)
    dest = tmp_path / "cube.zarr"
    assert main(["netcdf", str(src), str(dest), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not dest.exists()


def test_unknown_variable_lists_the_known_ones(months, tmp_path, capsys):
    args = ["netcdf", str(months[0].parent), str(tmp_path / "c.zarr"), "--variables", "T_sfc"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "T_sfc" in err and "T_surf" in err
