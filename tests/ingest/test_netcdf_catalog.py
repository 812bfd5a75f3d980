"""The NetCDF catalog: CF traps met on headers alone, and the task-side reader."""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

from cubes.errors import SchemaError
from ingest.sources.netcdf import _header as _netcdf_header
from ingest.sources.netcdf.catalog import read_catalog, read_steps
from ingest.sources.netcdf.synth import write_synth_climate
from tests.helpers import real_data

VARS = ["T_surf", "q_H2O", "cldfrac", "T"]


def _real_data() -> Path | None:
    return real_data("xarray-data", "eraint_uvz.nc")


@pytest.fixture(scope="module", params=["netcdf4", "netcdf3"])
def synth(request, tmp_path_factory):
    """Two years (days, then hours in the units), a gap on 2000-03-04."""
    root = tmp_path_factory.mktemp(request.param)
    return write_synth_climate(
        str(root), years=2, grid=(8, 16), fmt=request.param, drop_steps=["2000-03-04"]
    )


def _copy(src: str, dest: Path) -> str:
    shutil.copy(src, dest)
    return str(dest)


def test_axis_merges_units_keeps_noleap_and_lists_the_gap(synth):
    cat = read_catalog(synth.urls)
    axis = cat.axis
    assert len(axis) == 730 and axis.step == "1 days" and axis.calendar == "noleap"
    assert axis.units == "days since 2000-01-01 12:00:00"
    np.testing.assert_array_equal(axis.numbers, np.arange(730))
    assert isinstance(axis.values[0], cftime.DatetimeNoLeap)
    assert cat.gaps == (62,) and not axis.present[62] and axis.present.sum() == 729
    assert axis.values[62] == cftime.datetime(2000, 3, 4, 12, calendar="noleap")
    assert axis.values[365] == cftime.datetime(2001, 1, 1, 12, calendar="noleap")  # hours units
    assert cat.files[2].steps == tuple(range(59, 62)) + tuple(range(63, 90))
    assert cat.record_dim == "time" and list(cat.variables) == VARS


def test_shuffled_files_give_the_same_catalog(synth):
    urls = list(synth.urls)
    random.Random(4).shuffle(urls)
    cat, ref = read_catalog(urls), read_catalog(synth.urls)
    assert [f.url for f in cat.files] == list(synth.urls)
    assert [f.steps for f in cat.files] == [f.steps for f in ref.files]
    assert cat.fingerprint == ref.fingerprint


def test_per_file_packing_decoded_like_xarray(synth):
    cat = read_catalog(synth.urls[:3])
    packings = {f.packing["T_surf"].scale_factor for f in cat.files}
    assert len(packings) == 3  # each file its own
    for entry in cat.files:
        arrays = read_steps(entry.url, None, VARS, record_dim="time")
        with xr.open_dataset(entry.url) as ds:
            for name in VARS:
                assert arrays[name].dtype == np.float32
                np.testing.assert_array_equal(arrays[name], ds[name].values.astype(np.float32))
    assert np.isnan(arrays["cldfrac"]).sum() == 5
    raw = read_steps(cat.files[0].url, None, ["T_surf"], keep_packing=True)["T_surf"]
    assert raw.dtype == np.int16


def test_attributes_coords_and_shapes_kept(synth):
    cat = read_catalog(synth.urls[:2])
    t = cat.variables["T"]
    assert t.dims == ("time", "plev", "lat", "lon") and t.shape == (4, 8, 16)
    assert t.dtype == "float32"
    attrs = cat.variables["T_surf"].attrs
    assert attrs["units"] == "K" and attrs["standard_name"] == "surface_temperature"
    assert attrs["long_name"] == "Surface air temperature"
    assert "scale_factor" not in attrs and "_FillValue" not in attrs
    assert cat.coords["lat"].attrs["units"] == "degrees_north"
    np.testing.assert_array_equal(cat.coords["plev"].values, [85000, 70000, 50000, 25000])
    assert cat.coords["lon"].values[0] == 0 and cat.attrs["Conventions"] == "CF-1.8"


def test_variables_selection_and_unknown_name(synth):
    cat = read_catalog(synth.urls[:1], variables=["T"])
    assert list(cat.variables) == ["T"] and cat.files[0].variables == ("T",)
    with pytest.raises(SchemaError, match="precip.*T_surf, q_H2O, cldfrac, T"):
        read_catalog(synth.urls[:1], variables=["precip"])


def test_overlapping_files_refused_naming_both(synth, tmp_path):
    dup = _copy(synth.urls[1], tmp_path / "copy_of_feb.nc")
    with pytest.raises(SchemaError, match=f"{synth.urls[1]} and {dup}|{dup} and {synth.urls[1]}"):
        read_catalog([*synth.urls[:3], dup])


def test_grid_mismatch_refused_naming_the_files(synth, tmp_path):
    other = write_synth_climate(str(tmp_path), grid=(8, 18), fmt="netcdf3")
    with pytest.raises(SchemaError, match=f"{other.urls[1]}.*'lon'.*{synth.urls[0]}"):
        read_catalog([synth.urls[0], other.urls[1]])
    import netCDF4

    moved = _copy(synth.urls[1], tmp_path / "moved.nc")
    with netCDF4.Dataset(moved, "a") as nc:
        nc["lat"][3] = 0.5
    with pytest.raises(SchemaError, match=f"{moved} has different 'lat' values.*position 3"):
        read_catalog([synth.urls[0], moved])


def test_calendar_mismatch_names_both(synth, tmp_path):
    other = write_synth_climate(str(tmp_path), grid=(8, 16), calendar="360_day", years=(2003,))
    with pytest.raises(SchemaError, match=f"{other.urls[0]} uses the '360_day'.*{synth.urls[0]}"):
        read_catalog([synth.urls[0], other.urls[0]])


def test_360_day_calendar_kept(tmp_path):
    synth = write_synth_climate(str(tmp_path), grid=(4, 8), calendar="360_day")
    cat = read_catalog(synth.urls)
    assert len(cat.axis) == 360 and cat.axis.calendar == "360_day" and not cat.gaps
    assert cat.axis.values[59] == cftime.datetime(2000, 2, 30, 12, calendar="360_day")


def test_standard_calendar_gives_datetime64(tmp_path):
    synth = write_synth_climate(str(tmp_path), grid=(4, 8), calendar="standard")
    cat = read_catalog(synth.urls[:3])
    assert cat.axis.values.dtype == "datetime64[ns]" and len(cat.axis) == 31 + 29 + 31
    assert cat.axis.values[59] == np.datetime64("2000-02-29T12:00")


def test_missing_variable_fails_or_is_recorded_absent(synth, tmp_path):
    with xr.open_dataset(synth.urls[2], decode_cf=False) as ds:
        lacking = tmp_path / "model_2000-03_nocloud.nc"
        ds.drop_vars("cldfrac").load().to_netcdf(lacking, unlimited_dims=["time"])
    urls = [*synth.urls[:2], str(lacking)]
    with pytest.raises(SchemaError, match=f"'cldfrac' is missing from 1 file.*{lacking}"):
        read_catalog(urls)
    cat = read_catalog(urls, on_error="skip")
    assert cat.absent["cldfrac"] == cat.files[2].steps
    assert "cldfrac" not in cat.files[2].variables and "T" in cat.files[2].variables


def test_not_a_netcdf_and_truncated_files(synth, tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("hello")
    with pytest.raises(SchemaError, match=f"{text} is not a NetCDF/HDF5 file"):
        read_catalog([synth.urls[0], str(text)])
    cat = read_catalog([synth.urls[0], str(text)], on_error="skip")
    assert [u for u, _ in cat.skipped] == [str(text)] and len(cat.files) == 1
    data = Path(synth.urls[0]).read_bytes()
    cut = tmp_path / "cut.nc"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match=f"{cut}.*truncated"):
        read_catalog([str(cut)])


def test_truncated_hdf5_header(tmp_path):
    synth = write_synth_climate(str(tmp_path), grid=(4, 8), fmt="netcdf4")
    cut = tmp_path / "cut.nc"
    cut.write_bytes(Path(synth.urls[0]).read_bytes()[:2000])
    with pytest.raises(SchemaError, match=f"{cut} cannot be read as a HDF5.*truncated"):
        read_catalog([str(cut)])


class _CountingFile:
    """A file object that counts the bytes read through it."""

    def __init__(self, handle, counter: list[int]) -> None:
        self._handle, self._counter = handle, counter

    def read(self, n: int = -1) -> bytes:
        data = self._handle.read(n)
        self._counter[0] += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


@pytest.mark.parametrize("fmt", ["netcdf4", "netcdf3"])
def test_planning_reads_headers_only(fmt, tmp_path, monkeypatch):
    synth = write_synth_climate(str(tmp_path), grid=(91, 180), fmt=fmt, years=1)
    urls = list(synth.urls[:2])
    counter = [0]
    real = _netcdf_header.filesystem

    def counting(url, options=None):
        fs, path = real(url, options)

        class _FS:
            def open(self, *args, **kwargs):
                return _CountingFile(fs.open(*args, **kwargs), counter)

            def __getattr__(self, name):
                return getattr(fs, name)

        return _FS(), path

    monkeypatch.setattr(_netcdf_header, "filesystem", counting)
    cat = read_catalog(urls, threads=1)
    total = sum(Path(u).stat().st_size for u in urls)
    assert len(cat.axis) == 31 + 28
    assert 0 < counter[0] < 0.05 * total, (counter[0], total)


@pytest.mark.s3
def test_s3_catalog_and_read_steps(bucket, synth):
    fs = bucket.fs()
    urls = []
    for url in synth.urls[:2]:
        key = f"{bucket.name}/clim/{Path(url).name}"
        fs.put_file(url, key)
        urls.append(f"s3://{key}")
    cat = read_catalog(urls[::-1], bucket.storage_options)
    assert len(cat.axis) == 31 + 28 and cat.files[0].url == urls[0] and cat.files[0].etag
    arrays = read_steps(urls[1], bucket.storage_options, ["T_surf"], cat.files[1].engine)
    local = read_steps(synth.urls[1], None, ["T_surf"])
    np.testing.assert_array_equal(arrays["T_surf"], local["T_surf"])


@pytest.mark.skipif(_real_data() is None, reason="shared/real-data not present")
def test_eraint_real_file():
    path = str(_real_data())
    cat = read_catalog([path])
    assert cat.record_dim == "month" and cat.axis.units is None
    np.testing.assert_array_equal(cat.axis.values, [1, 7])
    assert list(cat.variables) == ["z", "u", "v"]
    assert cat.variables["u"].shape == (3, 241, 480)
    assert cat.variables["u"].attrs["standard_name"] == "eastward_wind"
    lat = cat.coords["latitude"].values
    assert lat[0] == 90 and lat[-1] == -90  # descending kept
    arrays = read_steps(path, None, ["z", "u", "v"], record_dim="month")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xarray: "non-conforming _FillValue nan"
        with xr.open_dataset(path) as ds:
            for name, values in arrays.items():
                np.testing.assert_array_equal(values, ds[name].values.astype(np.float32))
