"""Synthetic climate output looks like model output: CF attributes, packing, calendars, gaps."""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pytest
import xarray as xr

from cubes.errors import SchemaError
from ingest.sources.netcdf.synth import (
    PLEV_PA,
    add_synth_climate_parser,
    parse_grid,
    parse_years,
    write_synth_climate,
)


def _open(path: str, **kwargs) -> xr.Dataset:
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    return xr.open_dataset(path, decode_times=coder, **kwargs)


def test_one_year_is_fast_and_monthly(tmp_path):
    start = time.perf_counter()
    synth = write_synth_climate(str(tmp_path), years=1)
    assert time.perf_counter() - start < 2.0
    assert len(synth.urls) == 12 and synth.n_steps == 365  # noleap
    assert synth.urls[0].endswith("model_2000-01.nc") and synth.urls[-1].endswith("2000-12.nc")


def test_cf_content(tmp_path):
    synth = write_synth_climate(str(tmp_path), years=1, grid=(16, 32))
    with _open(synth.urls[1]) as ds:
        assert ds.sizes == {"time": 28, "plev": 4, "lat": 16, "lon": 32}
        assert ds.time.encoding["calendar"] == "noleap"
        assert ds.time.encoding["units"] == "days since 2000-01-01"
        assert ds.time.attrs["axis"] == "T"
        assert ds.encoding["unlimited_dims"] == {"time"}
        np.testing.assert_array_equal(ds.plev.values, PLEV_PA)
        assert ds.lat.values[0] < 0 < ds.lat.values[-1] and np.all(np.diff(ds.lat.values) > 0)
        assert ds.lon.values[0] == 0 and ds.lon.values[-1] < 360
        assert ds.T_surf.attrs["standard_name"] == "surface_temperature"
        assert ds.T_surf.attrs["units"] == "K" and ds.q_H2O.attrs["units"] == "kg kg-1"
        assert 200 < float(ds.T_surf.min()) < float(ds.T_surf.max()) < 330
        assert float(ds.cldfrac.min()) >= 0 and float(ds.cldfrac.max()) <= 1
        assert 0 < float(ds.q_H2O.max()) < 0.05
        assert int(ds.cldfrac.isnull().sum()) == 5  # masked through _FillValue
        tropics, pole = ds.T_surf.sel(lat=0, method="nearest"), ds.T_surf.isel(lat=0)
        assert float(tropics.mean()) > float(pole.mean()) + 20
        assert float(ds["T"].isel(plev=3).mean()) < float(ds["T"].isel(plev=0).mean())
        assert ds.T_surf.encoding["dtype"] == np.int16


def test_packing_differs_between_files(tmp_path):
    synth = write_synth_climate(str(tmp_path), years=1, grid=(8, 16))
    with (
        xr.open_dataset(synth.urls[0], decode_cf=False) as a,
        xr.open_dataset(synth.urls[6], decode_cf=False) as b,
    ):
        assert a.T_surf.dtype == np.int16 and a.T_surf.attrs["_FillValue"] == -32767
        assert a.T_surf.attrs["scale_factor"] != b.T_surf.attrs["scale_factor"]
        assert a.T_surf.attrs["add_offset"] != b.T_surf.attrs["add_offset"]


def test_units_vary_between_years_and_netcdf3(tmp_path):
    synth = write_synth_climate(str(tmp_path), years=2, grid=(4, 8), fmt="netcdf3")
    with open(synth.urls[0], "rb") as fh:
        assert fh.read(4) == b"CDF\x02"
    with _open(synth.urls[12]) as ds:
        assert ds.time.encoding["units"] == "hours since 2001-01-01 00:00:00"
        assert str(ds.time.values[0]) == "2001-01-01 12:00:00"
    same = write_synth_climate(str(tmp_path / "same"), years=2, grid=(4, 8), vary_units=False)
    with _open(same.urls[12]) as ds:
        assert ds.time.encoding["units"] == "days since 2001-01-01"


def test_drop_steps_and_360_day(tmp_path):
    synth = write_synth_climate(
        str(tmp_path), grid=(4, 8), calendar="360_day", drop_steps=["2000-02-30"]
    )
    assert synth.n_steps == 359 and synth.dropped == ("2000-02-30",)
    with _open(synth.urls[1]) as ds:
        assert ds.sizes["time"] == 29 and ds.time.encoding["calendar"] == "360_day"


def test_deterministic(tmp_path):
    a = write_synth_climate(str(tmp_path / "a"), grid=(4, 8), seed=3)
    b = write_synth_climate(str(tmp_path / "b"), grid=(4, 8), seed=3)
    with xr.open_dataset(a.urls[4]) as x, xr.open_dataset(b.urls[4]) as y:
        xr.testing.assert_identical(x.load(), y.load())


def test_parsers():
    assert parse_years("3") == (2000, 2001, 2002)
    assert parse_years("2005") == (2005,)
    assert parse_years("2000-2002") == (2000, 2001, 2002)
    assert parse_years(2) == (2000, 2001)
    assert parse_grid("32x64") == (32, 64)
    assert parse_grid("0.25") == (721, 1440)
    with pytest.raises(SchemaError, match="--grid 0.7"):
        parse_grid("0.7")
    with pytest.raises(SchemaError, match="ends before"):
        parse_years("2002-2000")


def test_cli_handler(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_synth_climate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["synth-climate", str(tmp_path), "--grid", "4x8", "--drop-step", "2000-01-02",
         "--format", "netcdf3"]
    )  # fmt: skip
    args.handler(args)
    out = capsys.readouterr().out
    assert "Wrote 12 netcdf3 files (364 daily steps" in out and "2000-01-02" in out
    assert len(list(tmp_path.glob("model_2000-*.nc"))) == 12


@pytest.mark.s3
def test_writes_to_s3(bucket):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        synth = write_synth_climate(
            f"{bucket.url}/clim", grid=(4, 8), storage_options=bucket.storage_options
        )
    assert synth.urls[0] == f"{bucket.url}/clim/model_2000-01.nc"
    assert len(bucket.fs().ls(f"{bucket.name}/clim")) == 12
