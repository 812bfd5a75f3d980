"""NetCDF-4/HDF5 read with h5py directly: the same headers and values as through xarray."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from ingest.sources.netcdf._header import FileHeader, VarHeader, read_header
from ingest.sources.netcdf.catalog import read_catalog, read_steps
from ingest.sources.netcdf.synth import write_synth_climate
from tests.helpers import real_data

VARS = ["T_surf", "q_H2O", "cldfrac", "T"]
_RAW = {"decode_cf": False, "decode_times": False, "mask_and_scale": False}


def _real_data() -> Path | None:
    return real_data("xarray-data", "eraint_uvz.nc")


def _xarray_header(path: str) -> FileHeader:
    """The header as the former xarray ``h5netcdf`` path built it."""
    with xr.open_dataset(path, engine="h5netcdf", cache=False, **_RAW) as ds:
        variables = {
            str(n): VarHeader(str(n), tuple(map(str, v.dims)), v.shape, str(v.dtype), dict(v.attrs))
            for n, v in ds.variables.items()
        }
        coords = {str(n): np.asarray(ds.variables[n].values) for n in ds.indexes}
        unlimited = tuple(sorted(map(str, ds.encoding.get("unlimited_dims", ()))))
        sizes = {str(k): int(v) for k, v in ds.sizes.items()}
        return FileHeader(path, "h5netcdf", 0, None, sizes, unlimited, variables, coords, ds.attrs)


def _assert_same_attrs(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert list(new) == list(old)
    for key, value in old.items():
        assert type(new[key]) is type(value), (key, new[key], value)
        if isinstance(value, np.ndarray | np.generic):
            assert new[key].dtype == value.dtype, key
        np.testing.assert_array_equal(new[key], value, err_msg=key)


def _assert_same_header(path: str) -> FileHeader:
    new, old = read_header(path), _xarray_header(path)
    assert new.engine == "h5netcdf"
    assert new.dims == old.dims and list(new.dims) == list(old.dims)
    assert new.unlimited == old.unlimited
    assert list(new.variables) == list(old.variables)
    for name, var in old.variables.items():
        got = new.variables[name]
        assert (got.name, got.dims, got.shape, got.dtype) == (
            var.name,
            var.dims,
            var.shape,
            var.dtype,
        )
        _assert_same_attrs(got.attrs, var.attrs)
    assert list(new.coords) == list(old.coords)
    for name, values in old.coords.items():
        assert new.coords[name].dtype == values.dtype
        np.testing.assert_array_equal(new.coords[name], values)
    _assert_same_attrs(new.attrs, old.attrs)
    return new


@pytest.fixture(scope="module")
def synth4(tmp_path_factory):
    root = tmp_path_factory.mktemp("nc4")
    return write_synth_climate(
        str(root), years=1, grid=(8, 16), fmt="netcdf4", drop_steps=["2000-03-04"]
    )


@pytest.fixture(scope="module")
def written_by_xarray(tmp_path_factory) -> str:
    """Strings, a dim without a coordinate variable, unsigned bytes, array attributes."""
    path = str(tmp_path_factory.mktemp("xr") / "h5netcdf.nc")
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 255, (3, 4, 5), dtype=np.uint8).astype(np.int8)
    ds = xr.Dataset(
        {
            "u8": (
                ("time", "y", "member"),
                packed,
                {"_Unsigned": "true", "scale_factor": np.float32(0.5), "_FillValue": np.int8(-1)},
            ),
            "f": (("y", "member", "time"), rng.random((4, 5, 3)), {"valid_range": [0.0, 1.0]}),
        },
        coords={"time": ("time", [0, 1, 2], {"units": "days since 2000-01-01"}), "y": [1, 2, 3, 4]},
        attrs={"title": "a string attribute", "history": ["one", "two"], "n": np.int32(3)},
    )
    ds.to_netcdf(path, engine="h5netcdf", unlimited_dims=["time"])
    return path


def test_synth_header_equals_xarrays(synth4):
    for url in synth4.urls[:3]:
        header = _assert_same_header(url)
        assert header.unlimited == ("time",)
        assert header.variables["cldfrac"].attrs["_FillValue"].dtype == np.int16


def test_xarray_written_header_equals_xarrays(written_by_xarray):
    header = _assert_same_header(written_by_xarray)
    assert "member" in header.dims and "member" not in header.variables  # a dim, not a var
    assert header.attrs["title"] == "a string attribute"
    assert header.variables["u8"].dims == ("time", "y", "member")


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")
def test_eraint_as_netcdf4_header_equals_xarrays(tmp_path):
    real = _real_data()
    if real is None:
        pytest.skip("real data absent")
    assert real.read_bytes()[:4] == b"CDF\x02"  # the file itself is classic: convert it
    path = str(tmp_path / "eraint_nc4.nc")
    with xr.open_dataset(real, **_RAW) as ds:
        ds.to_netcdf(path, engine="h5netcdf")
    header = _assert_same_header(path)
    assert header.variables["z"].dtype == "int16"
    assert isinstance(header.variables["z"].attrs["scale_factor"], np.float64)


def _assert_decoded_like_xarray(path: str, names: list[str], record_dim: str) -> None:
    arrays = read_steps(path, None, names, "h5netcdf", record_dim=record_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            for name in names:
                expected = ds[name].transpose(record_dim, ...).values.astype(np.float32)
                assert arrays[name].dtype == np.float32
                np.testing.assert_array_equal(arrays[name], expected, err_msg=name)


def test_read_steps_synth_decoded_like_xarray(synth4):
    cat = read_catalog(synth4.urls[:3])
    assert len({f.packing["T_surf"].scale_factor for f in cat.files}) == 3
    for entry in cat.files:
        _assert_decoded_like_xarray(entry.url, VARS, "time")
    holes = read_steps(synth4.urls[-1], None, ["cldfrac"])["cldfrac"]
    assert np.isnan(holes).sum() == 5
    raw = read_steps(synth4.urls[0], None, ["T_surf"], keep_packing=True)["T_surf"]
    assert raw.dtype == np.int16


def test_read_steps_moves_the_record_dim_first(written_by_xarray):
    _assert_decoded_like_xarray(written_by_xarray, ["u8", "f"], "time")
    arrays = read_steps(written_by_xarray, None, ["f"], record_dim="time")
    assert arrays["f"].shape == (3, 4, 5)
    with xr.open_dataset(written_by_xarray, engine="h5netcdf") as ds:
        assert ds["u8"].values.max() > 127 / 2  # _Unsigned honoured by both


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")
def test_read_steps_eraint_as_netcdf4(tmp_path):
    real = _real_data()
    if real is None:
        pytest.skip("real data absent")
    path = str(tmp_path / "eraint_nc4.nc")
    with xr.open_dataset(real, **_RAW) as ds:
        ds.to_netcdf(path, engine="h5netcdf")
    _assert_decoded_like_xarray(path, ["z", "u", "v"], "month")
    classic = read_steps(str(real), None, ["u"], record_dim="month")["u"]
    np.testing.assert_array_equal(read_steps(path, None, ["u"])["u"], classic)
